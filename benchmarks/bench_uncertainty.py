"""Uncertainty scoring throughput against the anchors, in the same run on the same prompts (issue #6).

    python benchmarks/bench_uncertainty.py [--quick] [--model smollm2-135m] [--prompts 96] [--batch-size 16]

* ours: ``score_prompts``, one batched greedy pass with a KV cache, keeping per step only the entropy and the
  top-2 log-probabilities;
* anchor: ``generate(output_scores=True)`` one prompt at a time, scores computed from the kept (1, vocab)
  logits of every step (what a user of the paper's recipe writes);
* ceiling: the same batched greedy generation with ``generate()``, no scores kept: what generating alone costs.

All three get the same token ids (chat template applied once) and the same cap on new tokens. Results go to
``benchmarks/results/uncertainty[_quick].json``; a markdown row is printed.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from frugalft.design.uncertainty import encode_prompts, score_prompts
from frugalft.models import load_model

TEMPLATES = [
    "Write a Python function that {verb} a list of {noun}.",
    "Explain in one sentence what {noun} are used for.",
    "What is {a} plus {b}?",
    "Reverse the string '{noun}'.",
    "Give the plural of the word '{noun}'.",
    "Convert {a} degrees Celsius to Fahrenheit.",
    "Name a synonym of '{verb}'.",
    "Sort these numbers: {a}, {b}, {c}.",
]
NOUNS = ["integers", "strings", "files", "tuples", "dates", "vectors", "queues", "trees", "tokens", "colours"]
VERBS = ["sorts", "reverses", "deduplicates", "counts", "filters", "flattens", "merges", "shuffles"]


def make_prompts(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        a, b, c = rng.integers(1, 999, size=3)
        out.append(TEMPLATES[i % len(TEMPLATES)].format(verb=VERBS[rng.integers(len(VERBS))],
                                                        noun=NOUNS[rng.integers(len(NOUNS))], a=a, b=b, c=c))
    return out


def anchor_one_by_one(model, tok, seqs: list[list[int]], max_new_tokens: int) -> tuple[float, int]:
    """generate(output_scores=True) per prompt, then the same six scores from the stored logits."""
    tokens = 0
    t = time.perf_counter()
    for s in seqs:
        ids = torch.tensor([s])
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False, output_scores=True, return_dict_in_generate=True,
                             pad_token_id=tok.pad_token_id, top_p=None, top_k=None, temperature=None)
        logp = torch.log_softmax(torch.cat(out.scores).float(), dim=-1)
        p = logp.exp()
        ent = -(p * logp).nan_to_num().sum(-1)
        top2 = p.topk(2, dim=-1).values
        margin = top2[:, 0] - top2[:, 1]
        _ = (ent.mean(), ent.max(), logp.max(-1).values.sum(), margin.mean(), margin.min())
        tokens += len(out.scores)
    return time.perf_counter() - t, tokens


def ceiling_batched_generate(model, tok, seqs: list[list[int]], max_new_tokens: int, batch_size: int):
    order = np.argsort([len(s) for s in seqs], kind="stable")
    tokens = 0
    t = time.perf_counter()
    for a in range(0, len(seqs), batch_size):
        batch = [seqs[i] for i in order[a: a + batch_size]]
        width = max(len(s) for s in batch)
        ids = torch.full((len(batch), width), tok.pad_token_id)
        mask = torch.zeros_like(ids)
        for r, s in enumerate(batch):
            ids[r, width - len(s):] = torch.tensor(s)
            mask[r, width - len(s):] = 1
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tok.pad_token_id, top_p=None, top_k=None, temperature=None)
        tokens += (out.shape[1] - width) * len(batch)
    return time.perf_counter() - t, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the tiny model and a few prompts (CI)")
    parser.add_argument("--model", default=None, help="default: smollm2-135m (tiny with --quick)")
    parser.add_argument("--prompts", type=int, default=None, help="default 96 (24 with --quick)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    name = args.model or ("tiny" if args.quick else "smollm2-135m")
    n = args.prompts or (16 if args.quick else 96)
    out = args.out or Path(__file__).parent / "results" / f"uncertainty{'_quick' if args.quick else ''}.json"
    model, tok = load_model(name, device="cpu")
    chat = bool(getattr(tok, "chat_template", None))
    prompts = make_prompts(n)
    seqs = encode_prompts(tok, prompts, chat, 512)
    with torch.inference_mode():
        score_prompts(model, tok, prompts[:2], args.max_new_tokens, 2, chat)  # warm-up
        t = time.perf_counter()
        scores = score_prompts(model, tok, prompts, args.max_new_tokens, args.batch_size, chat)
        t_ours = time.perf_counter() - t
        tok_ours = int(scores["length"].sum())
        t_anchor, tok_anchor = anchor_one_by_one(model, tok, seqs, args.max_new_tokens)
        t_ceiling, tok_ceiling = ceiling_batched_generate(model, tok, seqs, args.max_new_tokens, args.batch_size)
    result = {
        "benchmark": "uncertainty", "quick": args.quick, "model": name, "prompts": n, "chat": chat,
        "batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
                   f"{torch.get_num_threads()} threads",
        "note": "shared machine: other jobs ran at the same time, so all times are inflated",
        "ours_seconds": round(t_ours, 2), "ours_prompts_per_s": round(n / t_ours, 2),
        "ours_tokens": tok_ours,
        "anchor_seconds": round(t_anchor, 2), "anchor_prompts_per_s": round(n / t_anchor, 2),
        "anchor_tokens": tok_anchor,
        "ceiling_seconds": round(t_ceiling, 2), "ceiling_prompts_per_s": round(n / t_ceiling, 2),
        "ceiling_tokens": tok_ceiling,
        "speedup_vs_one_by_one": round(t_anchor / t_ours, 2),
        "fraction_of_batched_generate": round(t_ceiling / t_ours, 3),
    }
    result["targets"] = {">= 5x one-by-one": result["speedup_vs_one_by_one"] >= 5,
                         ">= 0.8 of batched generate": result["fraction_of_batched_generate"] >= 0.8}
    from frugalft.atomic import write_json

    write_json(out, result)
    print("| what | anchor | ours | ratio | ceiling |\n|---|---|---|---|---|")
    print(f"| uncertainty, {name}, {n} prompts, <= {args.max_new_tokens} new tokens | one by one with scores "
          f"{result['anchor_prompts_per_s']} prompts/s | {result['ours_prompts_per_s']} prompts/s | "
          f"{result['speedup_vs_one_by_one']}x | batched generate() without scores "
          f"{result['ceiling_prompts_per_s']} prompts/s: ours = {result['fraction_of_batched_generate']} of it |")
    print(f"(written to {out})")


if __name__ == "__main__":
    main()
