"""Where a table's time went (``frugalft rl times RUN_DIR``): each seed's warm-ups, RL and evaluations.

A table runs each seed's cells one after another in one process (``rl table --jobs N``: N seed processes at a
time). Every evaluation file it writes (``seed-S/eval/<split>[-<task set>]/<method>.json``) records when that
process started and finished the cell (``started``, ``finished``, seconds since the epoch) and what it spent
on it (``stage_seconds``): the warm-ups the cell was first to need (the data included), its RL, and the
evaluation; the reflection-quality files record theirs the same way. From those this module gives, per seed,
the minutes by stage and how many seed processes ran beside it on average (on 2 cores, 3 processes each get
2/3 of one), and for the run the span from the first start to the last finish, and the minutes in which some
cell was in progress (the union of the cells' times).

Files written before these fields existed, or by a run whose cells were reused from an earlier run (a copied
or resumed run directory), count with the times they recorded: the span then covers both runs and the gap
between them; the minutes in progress leave the gap out (a table made in two sittings costs their sum).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

STAGES = ("warmup", "rl", "eval", "quality")


@dataclass
class Timed:
    """One timed piece of a seed's process: a cell (warm-up + RL + evaluation) or an extra evaluation."""

    seed: int
    name: str  # method, "<method> (<task set>)" or "reflection quality (<variant>)"
    started: float
    finished: float
    stages: dict[str, float] = field(default_factory=dict)


@dataclass
class SeedTime:
    seed: int
    started: float
    finished: float
    minutes: dict[str, float]  # by stage
    processes: float  # seed processes running on average over this seed's span, itself included

    @property
    def span_minutes(self) -> float:
        return (self.finished - self.started) / 60


def _splits(run_dir: str | Path) -> list[str]:
    """The splits ``run_dir``'s evaluation folders are of (``<split>`` or ``<split>-<task set>``)."""
    return sorted({p.name.split("-")[0] for p in Path(run_dir).glob("seed-*/eval/*") if p.is_dir()})


def read_times(run_dir: str | Path, split: str | None = None) -> tuple[list[Timed], int]:
    """The timed pieces of ``run_dir`` (of one ``split``, or all), and how many of its files carry no times."""
    pieces, untimed = [], 0
    for path in sorted(Path(run_dir).glob("seed-*/eval/*/*.json")):
        folder, seed_name = path.parent.name, path.parents[2].name.removeprefix("seed-")
        if (split is not None and folder.split("-")[0] != split) or not seed_name.isdigit():
            continue  # (a split name has no hyphen: envs.base.SPLITS)
        row = json.loads(path.read_text(encoding="utf-8"))
        if "started" not in row or "finished" not in row:
            untimed += 1
            continue
        seed = int(seed_name)
        if path.stem.startswith("reflection_quality_"):
            name, stages = f"reflection quality ({row.get('variant', path.stem)})", {"quality": row["seconds"]}
        else:
            task_set = row.get("task_set") or ""
            name = row["method"] + (f" ({task_set})" if task_set else "")
            stages = dict(row.get("stage_seconds") or {"eval": row["finished"] - row["started"]})
        pieces.append(Timed(seed, name, float(row["started"]), float(row["finished"]), stages))
    return pieces, untimed


def seed_times(pieces: list[Timed]) -> list[SeedTime]:
    """Per seed: its span (first start to last finish), minutes by stage, and the mean number of seed processes
    running during that span (the exact overlap of the seeds' spans, itself included)."""
    spans: dict[int, list[float]] = {}
    minutes: dict[int, dict[str, float]] = {}
    for p in pieces:
        lo, hi = spans.setdefault(p.seed, [p.started, p.finished])
        spans[p.seed] = [min(lo, p.started), max(hi, p.finished)]
        bucket = minutes.setdefault(p.seed, dict.fromkeys(STAGES, 0.0))
        for stage, seconds in p.stages.items():
            bucket[stage] = bucket.get(stage, 0.0) + seconds / 60
    out = []
    for seed, (a, b) in sorted(spans.items()):
        overlap = sum(max(0.0, min(b, d) - max(a, c)) for s, (c, d) in spans.items())  # itself: b - a
        out.append(SeedTime(seed, a, b, minutes[seed], overlap / (b - a) if b > a else 1.0))
    return out


def busy_minutes(pieces: list[Timed]) -> float:
    """Minutes in which at least one piece was in progress: the union of their [started, finished] intervals."""
    total, end = 0.0, float("-inf")
    for p in sorted(pieces, key=lambda p: p.started):
        if p.finished > end:
            total += p.finished - max(p.started, end)
            end = p.finished
    return total / 60


def times_report(run_dir: str | Path, split: str | None = None) -> str:
    """Markdown: the run's span, then one row per seed (minutes by stage, span, processes beside it)."""
    pieces, untimed = read_times(run_dir, split)
    if not pieces:
        raise ValueError(f"{run_dir}: no evaluation file with times (written by `rl table` since 2026-12-06)"
                         + (f"; {untimed} without" if untimed else ""))
    seeds = seed_times(pieces)
    first, last = min(s.started for s in seeds), max(s.finished for s in seeds)
    splits = _splits(run_dir) if split is None else [split]
    mixed = (f"; splits {', '.join(splits)} together (one run's: --split)" if len(splits) > 1 else "")
    lines = [f"{run_dir}: {len(seeds)} seed(s), {(last - first) / 60:.1f} min from the first start to the last "
             "finish" + (f" ({untimed} file(s) without times not counted)" if untimed else "") + mixed
             + f"; {busy_minutes(pieces):.1f} min with a cell in progress (gaps between sittings left out)", "",
             "| seed | warm-ups (data included) | RL | evaluations | reflection quality | other | seed's span | "
             "seed processes running (mean) |", "|---|---|---|---|---|---|---|---|"]
    total = dict.fromkeys(STAGES, 0.0)
    for s in seeds:
        other = s.span_minutes - sum(s.minutes.values())
        other = 0.0 if abs(other) < 0.05 else other  # stage seconds are rounded to 0.1 s: no "-0.0"
        lines.append(f"| {s.seed} | " + " | ".join(f"{s.minutes.get(k, 0.0):.1f}" for k in STAGES)
                     + f" | {other:.1f} | {s.span_minutes:.1f} | {s.processes:.2f} |")
        for k in STAGES:
            total[k] += s.minutes.get(k, 0.0)
    span_sum = sum(s.span_minutes for s in seeds)
    lines.append("| all (process-minutes) | " + " | ".join(f"{total[k]:.1f}" for k in STAGES)
                 + f" | {span_sum - sum(total.values()):.1f} | {span_sum:.1f} | |")
    lines += ["", "Minutes of wall time in each seed's process, while the mean number of seed processes shown "
              "shared the machine's cores; \"other\" is the rest of the seed's span (loading, writing, waiting)."]
    return "\n".join(lines)
