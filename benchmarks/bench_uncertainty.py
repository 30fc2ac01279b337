"""Uncertainty scoring throughput against the anchors, in the same run on the same prompts (issue #6).

    python benchmarks/bench_uncertainty.py [--quick] [--model smollm2-135m] [--prompts 64] [--batch-size 32]
        [--threads N]

* ours: ``score_prompts``, one batched greedy pass with a KV cache (a prefix the batch shares, such as the chat
  template's system prompt, run once; finished answers leave the batch), keeping per step only the entropy and
  the top-2 log-probabilities;
* anchor: ``generate(output_scores=True)`` one prompt at a time, scores computed from the kept (1, vocab)
  logits of every step (what a user of the paper's recipe writes);
* ceiling: the same batched greedy generation with ``generate()``, no scores kept: what generating alone costs.

All three get the same token ids (chat template applied once) and the same cap on new tokens, and take turns
batch by batch; prompts/s and generated tokens/s are reported for each. Results go to
``benchmarks/results/uncertainty[_quick].json``; a markdown row is printed.

Threads: on a shared machine, two OpenMP threads on two busy cores wait on each other at every barrier, and a
135M model decoded at 2.5 tokens/s with 2 threads against 8.5 with 1 (load average 4-5). ``--threads 1`` is the
honest setting there; the JSON records the thread count and the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from frugalft.design.uncertainty import encode_prompts, score_prompts, stop_ids
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
    stops = stop_ids(model, tok)
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
        for row in out[:, width:].tolist():  # the answer up to its first stop token; later columns are padding
            tokens += next((i + 1 for i, t in enumerate(row) if t in stops), len(row))
    return time.perf_counter() - t, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the tiny model and a few prompts (CI)")
    parser.add_argument("--model", default=None, help="default: smollm2-135m (tiny with --quick)")
    parser.add_argument("--prompts", type=int, default=None, help="default 64 (96 with --quick)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    name = args.model or ("tiny" if args.quick else "smollm2-135m")
    n = args.prompts or (96 if args.quick else 64)
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    out = args.out or Path(__file__).parent / "results" / f"uncertainty{'_quick' if args.quick else ''}.json"
    model, tok = load_model(name, device="cpu")
    chat = bool(getattr(tok, "chat_template", None))
    prompts = make_prompts(n)
    seqs = encode_prompts(tok, prompts, chat, 512)
    # The three sides take turns on slices of the prompts, so a load that drifts during the run (a shared
    # machine) weighs on each of them alike instead of on whichever ran last.
    step = args.batch_size
    t_ours = t_anchor = t_ceiling = 0.0
    tok_ours = tok_anchor = tok_ceiling = 0
    with torch.inference_mode():
        score_prompts(model, tok, prompts[:2], args.max_new_tokens, 2, chat)  # warm-up
        anchor_one_by_one(model, tok, seqs[:1], 2)
        for a in range(0, n, step):
            t = time.perf_counter()
            scores = score_prompts(model, tok, prompts[a: a + step], args.max_new_tokens, args.batch_size, chat)
            t_ours += time.perf_counter() - t
            tok_ours += int(scores["length"].sum())
            t, k = anchor_one_by_one(model, tok, seqs[a: a + step], args.max_new_tokens)
            t_anchor, tok_anchor = t_anchor + t, tok_anchor + k
            t, k = ceiling_batched_generate(model, tok, seqs[a: a + step], args.max_new_tokens, args.batch_size)
            t_ceiling, tok_ceiling = t_ceiling + t, tok_ceiling + k
    result = {
        "benchmark": "uncertainty", "quick": args.quick, "model": name, "prompts": n, "chat": chat,
        "batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
                   f"{torch.get_num_threads()} threads",
        "threads": torch.get_num_threads(),
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "prompt_tokens_mean": round(float(np.mean([len(s) for s in seqs])), 1),
        "ours_seconds": round(t_ours, 2), "ours_prompts_per_s": round(n / t_ours, 2),
        "ours_tokens": tok_ours, "ours_tokens_per_s": round(tok_ours / t_ours, 1),
        "anchor_seconds": round(t_anchor, 2), "anchor_prompts_per_s": round(n / t_anchor, 2),
        "anchor_tokens": tok_anchor, "anchor_tokens_per_s": round(tok_anchor / t_anchor, 1),
        "ceiling_seconds": round(t_ceiling, 2), "ceiling_prompts_per_s": round(n / t_ceiling, 2),
        "ceiling_tokens": tok_ceiling, "ceiling_tokens_per_s": round(tok_ceiling / t_ceiling, 1),
        "speedup_vs_one_by_one": round(t_anchor / t_ours, 2),
        "fraction_of_batched_generate": round(t_ceiling / t_ours, 3),
    }
    result["targets"] = {">= 5x one-by-one": result["speedup_vs_one_by_one"] >= 5,
                         ">= 0.8 of batched generate": result["fraction_of_batched_generate"] >= 0.8}
    from frugalft.atomic import write_json

    write_json(out, result)
    print("| what | anchor | ours | ratio | ceiling |\n|---|---|---|---|---|")
    print(f"| uncertainty, {name}, {n} prompts, <= {args.max_new_tokens} new tokens, "
          f"{result['threads']} threads, load {result['load_average_before_after']} | one by one with scores "
          f"{result['anchor_prompts_per_s']} prompts/s ({result['anchor_tokens_per_s']} tokens/s) | "
          f"{result['ours_prompts_per_s']} prompts/s ({result['ours_tokens_per_s']} tokens/s) | "
          f"{result['speedup_vs_one_by_one']}x | batched generate() without scores "
          f"{result['ceiling_prompts_per_s']} prompts/s ({result['ceiling_tokens_per_s']} tokens/s): "
          f"ours = {result['fraction_of_batched_generate']} of it |")
    print(f"(written to {out})")


if __name__ == "__main__":
    main()
