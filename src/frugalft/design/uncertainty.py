"""Uncertainty of the base model's own greedy answer to each prompt, all scores from one batched pass.

The base model decodes greedily (``frugalft.models.decode``: a KV cache, left-padded batches of similar length,
a cap on new tokens); a prefix that a batch's prompts share is run once, and rows leave the batch as soon as
their answer ends.
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
    ``max_prompt_tokens`` so an overlong prompt still ends where the answer starts. Each prompt's end is cut to a
    generous number of characters first (``features.clip_text``): only what is kept gets tokenized."""
    from frugalft.design.features import clip_text

    prompts = [clip_text(p, max_prompt_tokens, keep_end=True) for p in prompts]
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


def _shared_prefix(batch: list[list[int]]) -> int:
    """Length of the prefix every row shares, leaving each row at least one token of its own (whose logits
    start the answer)."""
    first, cap = batch[0], min(len(s) for s in batch) - 1
    p = 0
    while p < cap and all(s[p] == first[p] for s in batch):
        p += 1
    return p


def step_stats(logits):
    """(entropy, log p of the top token, p1 - p2, top token) of each row of (b, vocab) logits, in float32.

    From zm = z - max(z) alone: H = log s - sum(e zm) / s with e = exp(zm), s = sum(e); log p1 = -log s;
    p1 - p2 = (1 - exp(z2 - z1)) / s. Float32 logits are overwritten (they become zm): no (b, vocab) copy. One
    max with its index and one amax instead of a top-k (on a 50k vocabulary on CPU: 1.1 ms against 1.8 ms).
    """
    import torch

    zm = logits.float()
    m, top = zm.max(-1)
    zm.sub_(m[:, None])
    rows = torch.arange(len(zm), device=zm.device)
    zm[rows, top] = -torch.inf
    z2 = zm.amax(-1)  # second largest logit minus the largest (amax: no index, 7x faster than max)
    zm[rows, top] = 0.0
    e = zm.exp()
    s = e.sum(-1)
    dot = torch.linalg.vecdot(e, zm)
    if not torch.isfinite(dot).all():  # a -inf logit: exp gave 0, and 0 * -inf is NaN instead of 0
        dot = torch.linalg.vecdot(e, zm.clamp(min=torch.finfo(zm.dtype).min))
    log_s = s.log()
    return log_s - dot / s, -log_s, -torch.expm1(z2) / s, top


def score_batch(model, batch: list[list[int]], pad_id: int, stops: set[int], max_new_tokens: int,
                return_tokens: bool = False) -> dict[str, np.ndarray] | tuple[dict[str, np.ndarray], list[list[int]]]:
    """Greedy-decode one batch of token-id lists with a KV cache; return the scores (and the tokens).

    The prefix all rows share (a chat template's system prompt, typically) is run once at batch 1 and its cache
    copied to every row; the rest is left-padded after it, so every row's next token lands in the last column.
    Rows that emit a stop token leave the batch (and its cache) at once: no step is spent on a finished answer.
    The loop is ``frugalft.models.decode``'s; each step here keeps the scores' running sums.
    """
    import torch

    from frugalft.models.decode import DecodeStep, decode

    dev = model.device
    b = len(batch)
    p = _shared_prefix(batch)
    width = max(len(s) for s in batch) - p
    ids = torch.full((b, width), pad_id, dtype=torch.long)
    mask = torch.zeros((b, p + width), dtype=torch.long)
    mask[:, :p] = 1
    for r, s in enumerate(batch):
        ids[r, width - (len(s) - p):] = torch.tensor(s[p:])
        mask[r, p + width - (len(s) - p):] = 1
    ent_sum, lp_sum, margin_sum = (torch.zeros(b, dtype=torch.float64, device=dev) for _ in range(3))
    max_ent = torch.full((b,), -torch.inf, dtype=torch.float64, device=dev)
    min_margin = torch.full((b,), torch.inf, dtype=torch.float64, device=dev)
    length = torch.zeros(b, dtype=torch.long, device=dev)

    def choose(step: DecodeStep) -> torch.Tensor:
        ent, lp, margin, nxt = step_stats(step.logits)
        ent, lp, margin, live = ent.double(), lp.double(), margin.double(), step.rows
        ent_sum.index_add_(0, live, ent)
        lp_sum.index_add_(0, live, lp)
        margin_sum.index_add_(0, live, margin)
        max_ent[live] = torch.maximum(max_ent[live], ent)
        min_margin[live] = torch.minimum(min_margin[live], margin)
        length[live] += 1
        return nxt

    with torch.inference_mode():
        new = decode(model, ids.to(dev), mask.to(dev), max_new_tokens, choose, sorted(stops), pad_id,
                     prefix_ids=batch[0][:p], drop_finished=True)
    t = length.double()
    scores = {
        "mean_entropy": ent_sum / t,
        "max_entropy": max_ent,
        "least_confidence": 1 - lp_sum.exp(),
        "least_confidence_norm": 1 - (lp_sum / t).exp(),
        "mean_margin": margin_sum / t,
        "min_margin": min_margin,
        "length": t,
    }
    scores = {k: v.cpu().numpy() for k, v in scores.items()}
    if not return_tokens:
        return scores
    return scores, [row[:n] for row, n in zip(new.tolist(), length.tolist(), strict=True)]


def score_prompts(model, tok, prompts: list[str], max_new_tokens: int = 32, batch_size: int = 32,
                  chat: bool | None = None, max_prompt_tokens: int = 512, progress: bool = False,
                  return_tokens: bool = False):
    """Scores (dict of (n,) arrays, ``SCORES``) for each prompt, in the prompts' order.

    Prompts are batched by token length (little padding), equal lengths by their tokens (longer shared
    prefixes, run once per batch); ``chat=None`` uses the tokenizer's chat template
    when it has one, as SFT does. Prompts keep their last ``max_prompt_tokens`` tokens, fewer where the model
    reads fewer than that plus ``max_new_tokens`` positions.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    chat = bool(getattr(tok, "chat_template", None)) if chat is None else chat
    from frugalft.models import max_positions

    limit = max_positions(model) if hasattr(model, "config") else None
    if limit is not None:  # prompt and answer must fit the positions (tiny-test reads 512 tokens in all)
        max_prompt_tokens = max(1, min(max_prompt_tokens, limit - max_new_tokens))
    seqs = encode_prompts(tok, prompts, chat, max_prompt_tokens)
    order = np.array(sorted(range(len(seqs)), key=lambda i: (len(seqs[i]), seqs[i])), dtype=np.int64)
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


def pool_uncertainty(pool, model_name: str, max_new_tokens: int = 32, batch_size: int = 32,
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
