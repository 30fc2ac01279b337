"""TextWorld's PDDL engine (ALFWorld's games) with and without ``frugalft.envs.pddl_speedup``, in one run.

The anchor is the library's own code: the same generated games, the same seeded random play, played once with
TextWorld's and fast-downward's functions as shipped and once with the speedup installed; the two transcripts
must be identical (else the script fails). Reported: median seconds per step and per reset (a game reset for
the first time, and again), env steps per second over the whole play, and the ratios. Written as JSON with the
machine's load.

    python benchmarks/bench_pddl_engine.py [--games 12] [--steps 15] [--rounds 2] [--out results/pddl_engine.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path

from frugalft.atomic import write_json
from frugalft.envs import pddl_speedup
from frugalft.envs.alfworld_games import generate_alfworld_games
from frugalft.envs.textworld_env import ALFWorld


def play(data: Path, games: int, steps: int, rounds: int) -> tuple[list, dict[str, list[float]]]:
    """Seeded random play of the first ``games`` train games, ``rounds`` times each (later rounds reset a game
    the engine has seen); the transcript and the timings."""
    env = ALFWorld(split="train", data_path=str(data), horizon=steps + 1)
    tasks = env.task_ids("train")[:games]
    times: dict[str, list[float]] = {"first_reset": [], "again_reset": [], "step": []}
    transcript = []
    for r in range(rounds):
        for i, task in enumerate(tasks):
            rng = random.Random(1000 * r + i)
            t = time.perf_counter()
            obs, info = env.reset(options={"task_id": task})
            times["first_reset" if r == 0 else "again_reset"].append(time.perf_counter() - t)
            transcript.append((obs, info["actions"]))
            for _ in range(steps):
                action = rng.choice(info["actions"])
                t = time.perf_counter()
                obs, reward, term, trunc, info = env.step(action)
                times["step"].append(time.perf_counter() - t)
                transcript.append((obs, reward, info["actions"]))
                if term or trunc:
                    break
    env.close()
    return transcript, times


def summary(times: dict[str, list[float]]) -> dict[str, float]:
    total = sum(sum(v) for v in times.values())
    out = {f"{k}_median_s": round(statistics.median(v), 4) for k, v in times.items() if v}
    out["env_steps_per_s"] = round(len(times["step"]) / total, 2)  # resets included in the time
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--games", type=int, default=12)
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "pddl_engine.json"))
    args = ap.parse_args()
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        generate_alfworld_games(data, n_train=args.games, n_valid=1, n_test=1, seed=0)
        real_install = pddl_speedup.install
        pddl_speedup.uninstall()
        pddl_speedup.install = lambda: None  # ALFWorld installs it at reset: keep the library's code
        try:
            anchor_transcript, anchor = play(data, args.games, args.steps, args.rounds)
        finally:
            pddl_speedup.install = real_install
        ours_transcript, ours = play(data, args.games, args.steps, args.rounds)
    if ours_transcript != anchor_transcript:
        raise SystemExit("the speedup changed the game's text or commands: not a valid comparison")
    a, o = summary(anchor), summary(ours)
    result = {
        "what": "TextWorld PDDL engine on generated ALFWorld games, seeded random play",
        "games": args.games, "steps_per_episode": args.steps, "rounds": args.rounds,
        "env_steps": len(ours["step"]), "identical_transcripts": True,
        "anchor_library_as_shipped": a, "ours_pddl_speedup": o,
        # Speedups: anchor time / our time, our throughput / the anchor's.
        "speedups": {k: round(o[k] / a[k], 2) if k == "env_steps_per_s" else round(a[k] / o[k], 2) for k in a},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_at_start": load,
                    "load_at_end": os.getloadavg()},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, result)
    print(result)


if __name__ == "__main__":
    main()
