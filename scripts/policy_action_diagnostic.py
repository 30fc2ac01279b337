"""What a warmed-up policy gets right on its warm-up's held-out rows, by the verb of the expert's command, read
with the reflection model's own reflection (what ``policy_data.jsonl`` holds), with the teacher's put in its place,
and with none; and what it picks instead, by that verb (with the model's reflection).

    python scripts/policy_action_diagnostic.py --seed-dir runs/rl-table/alfworld/seed-0
    python scripts/policy_action_diagnostic.py --seed-dir runs/rl-table/alfworld/seed-0 --variant noreflect
    python scripts/policy_action_diagnostic.py --seed-dir runs/rl-table/alfworld/seed-0 \\
        --train-on-teacher runs/probe-teacher-policy      # first train the policy on the teacher's reflections
    python scripts/policy_action_diagnostic.py --seed-dir runs/rl-table/alfworld/seed-0 \\
        --retrain runs/probe-line-head --set policy_head=line  # the same warm-up with another setting

The rows are the held-out share of that policy's warm-up set (``warmup/reflect/policy_data.jsonl`` for the
reflecting policy, ``data/policy_noreflect.jsonl`` for a no-reflection one: the split the warm-up's early stopping
used, same seed), so nothing of the valid or test split is read. On ALFWorld
the verbs separate "which place or object" (``go``, ``take``: find a named item in the action list) from "what to
do here" (``open``, ``move``). ``--train-on-teacher OUT`` trains the same policy warm-up (same config, the same
trained reflection model to start from) on the teacher's reflections instead of the model's, writes it to
``OUT/policy``, and diagnoses that policy: an upper bound on what a perfect reflection model would give.
``--retrain OUT`` trains the same warm-up on the same rows (the model's reflections) into ``OUT/policy``; with
``--set KEY=VALUE`` (warm-up config keys, repeatable) either retraining probes a setting of the policy's warm-up.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import torch
import yaml

from frugalft.config import build
from frugalft.models import load_model
from frugalft.reflect.policy import Policy, head_token_ids, score_steps
from frugalft.reflect.warmup import (
    VARIANTS,
    WarmupConfig,
    alphabet_of,
    encode_policy_set,
    read_jsonl,
    sft_max_length,
    split_validation,
    train_policy,
)


def held_out(rows: list[dict], config: WarmupConfig, limit: int) -> list[int]:
    """The warm-up's held-out row indices (its own split), the first ``limit`` of them."""
    _, val_idx = split_validation(rows, config.val_fraction, config.seed)
    return val_idx[:limit]


def load_policy(model_dir: Path, config: WarmupConfig) -> tuple[Policy, object]:
    """The warmed-up policy (eval mode) and its tokenizer."""
    lm, tok = load_model(str(model_dir), device="cpu", seed=config.seed)
    lm.eval()
    return Policy(lm, alphabet_of(config).check(tok), tok.pad_token_id, head=config.policy_head,
                  **head_token_ids(tok, config.policy_head)), tok


def accuracy_by_verb(policy: Policy, tok, config: WarmupConfig, rows: list[dict],
                     picks: dict[str, Counter] | None = None) -> dict[str, tuple[float, int]]:
    """{verb, row kind or "all": (share of rows where the most likely listed action is the target, rows)}.

    ``picks``, when given, is filled with what the policy chose, by the expert's verb: "right", or the verb of
    the action it picked instead ("another <verb>" where it is the expert's verb with another object)."""
    examples = encode_policy_set(tok, rows, alphabet_of(config), sft_max_length(config, policy.lm), config.seed)
    hits, total = Counter(), Counter()
    with torch.no_grad():
        for k in range(0, len(examples), 16):
            batch = examples[k: k + 16]
            scores = score_steps(policy, [e.prompt for e in batch], [e.labels for e in batch],
                                 [e.target for e in batch])
            for e, best, row in zip(batch, scores.listed.argmax(-1).tolist(), rows[k: k + 16], strict=True):
                verb = row["target"].split(" ")[0]
                for key in (verb, row["kind"], "all"):
                    total[key] += 1
                    hits[key] += int(best == e.target)
                if picks is not None:
                    picked = row["actions"][best].split(" ")[0]
                    choice = "right" if best == e.target else ("another " if picked == verb else "") + picked
                    picks.setdefault(verb, Counter())[choice] += 1
    return {key: (hits[key] / total[key], total[key]) for key in sorted(total)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed-dir", type=Path, required=True, help="a table's seed-S directory (warm-ups done)")
    ap.add_argument("--variant", default="reflect", choices=sorted(VARIANTS),
                    help="which warm-up's policy (reflect: the one Reflect-RL starts from)")
    ap.add_argument("--limit", type=int, default=400, help="held-out rows to score")
    ap.add_argument("--train-on-teacher", type=Path, default=None, metavar="OUT")
    ap.add_argument("--retrain", type=Path, default=None, metavar="OUT")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a warm-up setting for --retrain / --train-on-teacher (YAML value)")
    args = ap.parse_args()
    if args.set and args.retrain is None and args.train_on_teacher is None:
        ap.error("--set changes a retrained policy's warm-up: give --retrain or --train-on-teacher")
    warm = args.seed_dir / "warmup" / args.variant
    settings = yaml.safe_load((warm / "policy" / "config.yaml").read_text(encoding="utf-8"))
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            ap.error(f"--set {item!r}: expected KEY=VALUE")
        settings[key] = yaml.safe_load(value)
    config = build(WarmupConfig, settings)
    # What that variant's policy trained on (warmup.warmup): the model-reflection set where there is one.
    data = warm / "policy_data.jsonl"
    if not data.exists():
        data = args.seed_dir / "data" / VARIANTS[args.variant][1]
    rows = read_jsonl(data)
    model_dir = warm / "policy" / "model"
    if args.train_on_teacher is not None:
        if args.variant != "reflect":
            ap.error("--train-on-teacher needs --variant reflect (a policy that reads reflections)")
        out = args.train_on_teacher
        out.mkdir(parents=True, exist_ok=True)
        data = out / "policy_teacher.jsonl"
        data.write_text("".join(json.dumps({**r, "reflection": r["teacher_reflection"]}) + "\n" for r in rows),
                        encoding="utf-8")
        model_dir = train_policy(config, data, out / "policy", start=warm / "reflection" / "model")
    elif args.retrain is not None:
        start = warm / "reflection" / "model" if config.policy_init == "reflection" else None
        model_dir = train_policy(config, data, args.retrain / "policy", start=start)
    idx = held_out(rows, config, args.limit)
    variants = {"none": [{**rows[i], "reflection": None} for i in idx]}
    if "teacher_reflection" in rows[0]:  # a reflecting policy: also with the model's and the teacher's reflection
        variants = {"model's": [rows[i] for i in idx],
                    "teacher's": [{**rows[i], "reflection": rows[i]["teacher_reflection"]} for i in idx], **variants}
    print(f"policy {model_dir}, {len(idx)} held-out rows; accuracy % (rows) by the expert's verb and row kind")
    policy, tok = load_policy(model_dir, config)
    picks: dict[str, Counter] = {}
    first = next(iter(variants))  # the model's reflection where there is one, else none
    for name, variant in variants.items():
        acc = accuracy_by_verb(policy, tok, config, variant, picks if name == first else None)
        print(f"reflection {name:10s} " + "  ".join(f"{k} {100 * a:.0f} ({n})" for k, (a, n) in acc.items()))
    print(f"what it picks (rows), with the {first} reflection, by the expert's verb:")
    for verb, counter in sorted(picks.items()):
        print(f"  {verb:10s} " + ", ".join(f"{choice} {n}" for choice, n in counter.most_common()))


if __name__ == "__main__":
    main()
