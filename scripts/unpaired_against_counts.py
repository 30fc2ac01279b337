"""A row of a table whose per-episode outcomes are gone (only its per-seed success counts are documented) minus a
method of a run directory, seed by seed, with an unpaired hierarchical bootstrap interval
(``frugalft.eval.intervals.unpaired_difference``). A paired comparison (``frugalft rl compare``) is tighter; use
this only where the two rows come from runs whose per-episode files are not both kept.

    python scripts/unpaired_against_counts.py runs/full-p20 sft_rl_noreflect --counts 96,95,96,94,95 --episodes 100

docs/history.md's 2026-12-06 full-mode table: Reflect-RL's counts (the packaged run, 4145f2a) against the rows
rerun at patience 20 on another machine.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from frugalft.eval.intervals import unpaired_difference
from frugalft.reflect.table import eval_path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("method", help="the run directory's method (the side subtracted)")
    ap.add_argument("--counts", required=True, help="the other row's successes per seed, comma-separated, seeds in order")
    ap.add_argument("--seeds", default=None, help="their seeds, comma-separated (default 0, 1, ...)")
    ap.add_argument("--episodes", type=int, required=True, help="episodes per seed of the other row")
    ap.add_argument("--split", default="test")
    args = ap.parse_args()

    counts = [int(c) for c in args.counts.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else list(range(len(counts)))
    if len(seeds) != len(counts):
        raise SystemExit(f"--seeds names {len(seeds)} seeds, --counts {len(counts)}")
    ours = []
    for s in seeds:
        path = eval_path(args.run_dir, s, args.method, args.split)
        if not path.exists():
            raise SystemExit(f"{path}: no evaluation of {args.method} on seed {s}")
        ours.append([float(v) for v in json.loads(path.read_text())["outcomes"]["success"]])
    theirs = [[1.0] * c + [0.0] * (args.episodes - c) for c in counts]
    mean, lo, hi = unpaired_difference(theirs, ours)
    by_seed = " / ".join(f"{100 * (c / args.episodes - np.mean(o)):+.0f}" for c, o in zip(counts, ours, strict=True))
    print(f"counts minus {args.method}, {len(seeds)} seeds: {100 * mean:+.1f} points "
          f"[{100 * lo:+.1f}, {100 * hi:+.1f}] (unpaired); by seed {by_seed}")


if __name__ == "__main__":
    main()
