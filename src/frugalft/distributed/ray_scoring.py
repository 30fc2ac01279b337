"""Pool features at scale: embeddings and uncertainty scores computed by Ray tasks over shards of the pool.

The pool is cut into contiguous shards; each Ray task loads the model once and runs the *single-process*
code on its shard (``design.features.lm_embeddings`` / ``sentence_embeddings``, ``design.uncertainty.
score_prompts``); the driver concatenates the shards in pool order and writes the result to the very cache
file the single-process path uses (same key, same format), so ``select_prompts(..., cache=True)`` and
``frugalft select`` pick it up without knowing it was computed elsewhere.

Shards only move prompts out and arrays back (a few KB per prompt). On a cluster, ``num_gpus=1`` per task puts
one model copy on each GPU. Results equal the unsharded ones up to float rounding (batches are composed
differently); tests check it.
"""

from __future__ import annotations

import numpy as np

from frugalft.design.pools import DesignError, Pool


def shard_bounds(n: int, shards: int) -> list[tuple[int, int]]:
    """Contiguous [start, end) ranges covering 0..n, sizes differing by at most one; none empty."""
    shards = max(1, min(shards, n))
    q, r = divmod(n, shards)
    out, start = [], 0
    for s in range(shards):
        end = start + q + (1 if s < r else 0)
        out.append((start, end))
        start = end
    return out


def _embed_shard(prompts: list[str], kind: str, name: str, batch_size: int, device: str) -> np.ndarray:
    from frugalft.design.features import lm_embeddings, sentence_embeddings

    if kind == "sentence":
        return sentence_embeddings(prompts, name, batch_size, device)
    return lm_embeddings(prompts, name, batch_size, device)


def _uncertainty_shard(prompts: list[str], model_name: str, max_new_tokens: int, batch_size: int,
                       chat: bool | None, max_prompt_tokens: int, device: str) -> dict[str, np.ndarray]:
    from frugalft.design.uncertainty import score_prompts
    from frugalft.models import load_model

    model, tok = load_model(model_name, device=device)
    return score_prompts(model, tok, prompts, max_new_tokens, batch_size, chat, max_prompt_tokens)


def _run_shards(fn, pool: Pool, workers: int, address: str | None, num_gpus: float, *args) -> list:
    """``fn(shard_prompts, *args)`` on each shard as a Ray task; results in shard order."""
    import ray

    from frugalft.distributed import ensure_ray

    ensure_ray(address, num_cpus=None if address else max(2, workers))
    task = ray.remote(num_cpus=1, num_gpus=num_gpus, max_retries=2)(fn)  # a lost node's shard is re-run
    refs = [task.remote(pool.prompts(np.arange(a, b)), *args) for a, b in shard_bounds(len(pool), workers)]
    return ray.get(refs)


def distributed_embeddings(pool: Pool, kind: str = "sentence", model: str | None = None, embedder: str | None = None,
                           workers: int = 2, address: str | None = None, cache: bool = True, batch_size: int = 64,
                           device: str = "auto", num_gpus: float = 0) -> np.ndarray:
    """``design.features.embeddings`` for ``sentence``/``lm`` features, computed over shards on Ray."""
    from frugalft.cache import cache_dir
    from frugalft.design.features import check_embeddings, default_embedder, model_key, save_npy_atomic

    if kind not in ("sentence", "lm"):
        raise DesignError(f"features {kind!r}: distributed scoring computes sentence or lm embeddings")
    if kind == "lm" and model is None:
        raise DesignError("features=lm needs the base model: pass model= (e.g. --model tiny)")
    name = (embedder or default_embedder()) if kind == "sentence" else model
    assert name is not None
    path = cache_dir("features") / f"{kind}-{model_key(name)}-{pool.content_hash()}.npy"
    if cache and path.exists():
        return np.load(path)
    parts = _run_shards(_embed_shard, pool, workers, address, num_gpus, kind, name, batch_size, device)
    x = check_embeddings(np.concatenate(parts, axis=0), pool.ids, f"{kind} embeddings of {pool.source}")
    if cache:
        save_npy_atomic(path, x)
    return x


def distributed_uncertainty(pool: Pool, model_name: str, workers: int = 2, address: str | None = None,
                            max_new_tokens: int = 32, batch_size: int = 32, chat: bool | None = None,
                            max_prompt_tokens: int = 512, cache: bool = True, device: str = "auto",
                            num_gpus: float = 0) -> dict[str, np.ndarray]:
    """``design.uncertainty.pool_uncertainty`` over shards on Ray; same cache key and file format."""
    from frugalft.cache import cache_dir
    from frugalft.design.features import model_key, save_npz_atomic
    from frugalft.design.uncertainty import SCORES

    key = f"unc-{model_key(model_name)}-{pool.content_hash()}-t{max_new_tokens}-c{chat}-p{max_prompt_tokens}"
    path = cache_dir("features") / f"{key}.npz"
    if cache and path.exists():
        with np.load(path) as z:
            return {k: z[k] for k in SCORES}
    parts = _run_shards(_uncertainty_shard, pool, workers, address, num_gpus, model_name, max_new_tokens,
                        batch_size, chat, max_prompt_tokens, device)
    scores = {k: np.concatenate([p[k] for p in parts]) for k in SCORES}
    if cache:
        save_npz_atomic(path, scores)
    return scores

