"""Uncertainty of the base model's own greedy answer to each prompt, all scores from one batched pass.

The loop decodes greedily with a KV cache, left-padded batches of similar length, and a cap on new tokens.
At each step it keeps only what the scores need from the (batch, vocab) distribution p_t: its entropy and its
two largest log-probabilities (the greedy token is the top one). Nothing of vocabulary size is stored, unlike
``generate(output_scores=True)``. Per prompt, over the T generated tokens (the end-of-sequence token counts):

* ``mean_entropy``          (1/T) sum_t H(p_t)                       higher = more uncertain
* ``max_entropy``           max_t H(p_t)
* ``least_confidence``      1 - prod_t p_t(y_t)                      (sequence)
* ``least_confidence_norm`` 1 - exp((1/T) sum_t log p_t(y_t))        (length-normalised: geometric mean)
* ``mean_margin``           (1/T) sum_t (p_t^(1) - p_t^(2))          lower = more uncertain
* ``min_margin``            min_t (p_t^(1) - p_t^(2))
* ``length``                T
"""

from __future__ import annotations

import numpy as np

SCORES = ("mean_entropy", "max_entropy", "least_confidence", "least_confidence_norm", "mean_margin", "min_margin",
          "length")


def encode_prompts(tok, prompts: list[str], chat: bool, max_prompt_tokens: int) -> list[list[int]]:
    """Token ids per prompt (chat template with the generation prompt when ``chat``), keeping the last
    ``max_prompt_tokens`` so an overlong prompt still ends where the answer starts."""
    if chat:
        ids = [tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                       tokenize=True, return_dict=True)["input_ids"] for p in prompts]
    else:
        ids = tok(prompts, add_special_tokens=True)["input_ids"]
    out = []
    for seq in ids:
        seq = list(seq)[-max_prompt_tokens:]
        out.append(seq if seq else [tok.eos_token_id])  # an empty prompt still gets one position
    return out


def stop_ids(model, tok) -> set[int]:
    ids = {tok.eos_token_id} if tok.eos_token_id is not None else set()
    gen = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if gen is not None:
        ids |= set(gen) if isinstance(gen, (list, tuple)) else {gen}
    return ids


def score_batch(model, batch: list[list[int]], pad_id: int, stops: set[int], max_new_tokens: int,
                return_tokens: bool = False) -> dict[str, np.ndarray] | tuple[dict[str, np.ndarray], list[list[int]]]:
    """Greedy-decode one batch of token-id lists with a KV cache; return the scores (and the tokens)."""
    import torch

    dev = model.device
    b = len(batch)
    width = max(len(s) for s in batch)
    ids = torch.full((b, width), pad_id, dtype=torch.long)
    mask = torch.zeros((b, width), dtype=torch.long)
    for r, s in enumerate(batch):  # left padding: every row's next token lands in the last column
        ids[r, width - len(s):] = torch.tensor(s)
        mask[r, width - len(s):] = 1
    ids, mask = ids.to(dev), mask.to(dev)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    stop = torch.tensor(sorted(stops), device=dev, dtype=torch.long)
    acc = {k: torch.zeros(b, dtype=torch.float64, device=dev) for k in ("ent", "lp", "margin")}
    max_ent = torch.full((b,), -torch.inf, dtype=torch.float64, device=dev)
    min_margin = torch.full((b,), torch.inf, dtype=torch.float64, device=dev)
    length = torch.zeros(b, dtype=torch.long, device=dev)
    active = torch.ones(b, dtype=torch.bool, device=dev)
    tokens = []
    with torch.inference_mode():
        out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1)
        for _ in range(max_new_tokens):
            logp = torch.log_softmax(out.logits[:, -1].float(), dim=-1)
            p = logp.exp()
            ent = -torch.where(p > 0, p * logp, torch.zeros((), device=dev)).sum(-1)
            top2 = logp.topk(2, dim=-1)
            nxt = top2.indices[:, 0]
            lp1, lp2 = top2.values[:, 0].double(), top2.values[:, 1].double()
            margin = lp1.exp() - lp2.exp()
            a = active.double()
            acc["ent"] += a * ent.double()
            acc["lp"] += a * lp1
            acc["margin"] += a * margin
            max_ent = torch.where(active, torch.maximum(max_ent, ent.double()), max_ent)
            min_margin = torch.where(active, torch.minimum(min_margin, margin), min_margin)
            length += active.long()
            if return_tokens:
                tokens.append(torch.where(active, nxt, -1).cpu())
            active &= ~torch.isin(nxt, stop)
            if not active.any():
                break
            mask = torch.cat([mask, torch.ones((b, 1), dtype=mask.dtype, device=dev)], dim=1)
            pos = pos[:, -1:] + 1
            out = model(input_ids=nxt[:, None], attention_mask=mask, position_ids=pos,
                        cache=out.cache, use_cache=True)
    t = length.double()
    scores = {
        "mean_entropy": acc["ent"] / t,
        "max_entropy": max_ent,
        "least_confidence": 1 - acc["lp"].exp(),
        "least_confidence_norm": 1 - (acc["lp"] / t).exp(),
        "mean_margin": acc["margin"] / t,
        "min_margin": min_margin,
        "length": t,
    }
    scores = {k: v.cpu().numpy() for k, v in scores.items()}
    if not return_tokens:
        return scores
    steps = torch.stack(tokens, dim=1) if tokens else torch.zeros((b, 0), dtype=torch.long)
    return scores, [[int(v) for v in row if v >= 0] for row in steps]


def score_prompts(model, tok, prompts: list[str], max_new_tokens: int = 32, batch_size: int = 16,
                  chat: bool | None = None, max_prompt_tokens: int = 512, progress: bool = False,
                  return_tokens: bool = False):
    """Scores (dict of (n,) arrays, ``SCORES``) for each prompt, in the prompts' order.

    Prompts are batched by token length (little padding); ``chat=None`` uses the tokenizer's chat template
    when it has one, as SFT does.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    chat = bool(getattr(tok, "chat_template", None)) if chat is None else chat
    seqs = encode_prompts(tok, prompts, chat, max_prompt_tokens)
    order = np.argsort([len(s) for s in seqs], kind="stable")
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    stops = stop_ids(model, tok)
    n = len(prompts)
    out = {k: np.empty(n) for k in SCORES}
    toks: list[list[int]] = [[] for _ in range(n)]
    starts = range(0, n, batch_size)
    if progress:
        from frugalft.runs import progress as bar

        starts = bar(starts, "uncertainty", total=len(starts))
    for a in starts:
        rows = order[a: a + batch_size]
        res = score_batch(model, [seqs[i] for i in rows], pad, stops, max_new_tokens, return_tokens)
        if return_tokens:
            res, gen = res
            for r, i in enumerate(rows):
                toks[i] = gen[r]
        for k in SCORES:
            out[k][rows] = res[k]
    return (out, toks) if return_tokens else out


def pool_uncertainty(pool, model_name: str, max_new_tokens: int = 32, batch_size: int = 16,
                     chat: bool | None = None, max_prompt_tokens: int = 512, cache: bool = True,
                     device: str = "auto") -> dict[str, np.ndarray]:
    """``score_prompts`` over a pool with the named base model, cached on disk by pool content and settings."""
    from frugalft.cache import cache_dir
    from frugalft.design.features import model_key, save_npz_atomic

    key = f"unc-{model_key(model_name)}-{pool.content_hash()}-t{max_new_tokens}-c{chat}-p{max_prompt_tokens}"
    path = cache_dir("features") / f"{key}.npz"
    if cache and path.exists():
        with np.load(path) as z:
            return {k: z[k] for k in SCORES}
    from frugalft.models import load_model

    model, tok = load_model(model_name, device=device)
    scores = score_prompts(model, tok, pool.prompts(), max_new_tokens, batch_size, chat, max_prompt_tokens,
                           progress=True)
    if cache:
        save_npz_atomic(path, scores)
    return scores
