"""Rebuild the environment tokenizer shipped in src/frugalft/assets/env_tokenizer/ (see frugalft.models.env_tokenizer).

    python scripts/build_env_tokenizer.py [--vocab-size 4096] [--out src/frugalft/assets/env_tokenizer]

The corpus is what the Reflect-RL players read and write on the *train* split of DangerousTaxi (all three
modes) and AutoExplore (all levels): oracle trajectories with random detours and negative examples, the
policy prompt with the labelled action list (in order and with shuffled labels), the reflection prompt, and
the oracle teacher's reflections (brief and full). Every label of the alphabet is added after ``# Action:``
so that each becomes one token. No test-split text is read. Deterministic: the same environments give the
same file.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from pathlib import Path

from frugalft.atomic import atomic_path
from frugalft.models.env_tokenizer import ASSET, train_env_tokenizer, wrap
from frugalft.models.heads import label_token_ids
from frugalft.reflect.prompts import DEFAULT_LABELS, build_policy_prompt, build_reflection_prompt
from frugalft.reflect.teachers import TeacherConfig
from frugalft.reflect.warmup_data import DataConfig, generate
from frugalft.runs import read_jsonl_lines

SOURCES = [  # (environment, constructor options): the CPU configs' AutoExplore views and the defaults
    ("DangerousTaxi", {}),
    ("DangerousTaxi", {"legend": False}),
    ("AutoExplore", {"horizon": 10, "view_lines": 15, "view_chars": 600, "max_entries": 30}),
    ("AutoExplore", {}),
]


def corpus(seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    texts: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, (env, kwargs) in enumerate(SOURCES):
            for brief in (True, False):
                out = Path(tmp) / f"{k}-{brief}"
                cfg = DataConfig(env=env, env_kwargs=kwargs, explore_prob=0.2, negatives_per_episode=2,
                                 teacher=TeacherConfig(brief=brief), seed=seed)
                generate(cfg, out, log=lambda *a: None)
                for _, row in read_jsonl_lines(out / "reflection.jsonl"):
                    n = len(row["actions"])
                    labels = [str(i) for i in range(n)] if rng.random() < 0.5 else rng.sample(DEFAULT_LABELS, n)
                    prompt = build_policy_prompt(row["parts"], row["reflection"], row["actions"], labels)
                    texts.append(f"{prompt} {labels[row['target_index']]}")
                    texts.append(build_reflection_prompt(row["parts"]) + row["reflection"])
    texts += [" ".join(f"# Action: {label}" for label in DEFAULT_LABELS)] * 500  # frequent enough to merge
    return texts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vocab-size", type=int, default=4096)
    ap.add_argument("--out", type=Path, default=ASSET.parent)
    args = ap.parse_args()
    texts = corpus()
    tok = train_env_tokenizer(texts, args.vocab_size)
    label_token_ids(wrap(tok), DEFAULT_LABELS)  # raises if a label is not one token
    with atomic_path(args.out) as tmp:
        tmp.mkdir()
        tok.save(str(tmp / "tokenizer.json"))
        n_chars = sum(map(len, texts))
        n_tokens = sum(len(tok.encode(t).ids) for t in texts)
        (tmp / "build.json").write_text(json.dumps({
            "vocab_size": tok.get_vocab_size(), "corpus_texts": len(texts), "corpus_chars": n_chars,
            "corpus_tokens": n_tokens, "sources": [[e, o] for e, o in SOURCES],
        }, indent=2) + "\n")
    print(f"{args.out}: {tok.get_vocab_size()} tokens, corpus {len(texts)} texts, {n_chars / n_tokens:.2f} chars/token")


if __name__ == "__main__":
    main()
