"""How often a TextWorld table's reflection models name the teacher's direction on the oracle's test states.

    python scripts/textworld_reflection_direction.py --config src/frugalft/configs/rl/textworld_cpu.yaml \
        --run-dir runs/rl-table/textworld --seeds 0 1 2

The table's own diagnostics look for the next command's text in a reflection ("go west"); the TextWorld teacher
writes the direction as "... leads out of this room, westward", so they cannot see it. This script plays the
oracle on the evaluation split's games (``frugalft.reflect.table.oracle_states``, as the table's reflection
quality does), lets each seed's warmed-up reflection model write (greedy, as in RL and evaluation) and counts,
over the states where the oracle's next command is a move: how often the model's direction is the teacher's,
and how often it is the way back (the exit the player came in by).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from frugalft.config import load_config
from frugalft.reflect.players import load_lm
from frugalft.reflect.reflection import Reflector
from frugalft.reflect.table import ExperimentConfig, oracle_states, seed_dir

OPPOSITE = {"north": "south", "south": "north", "east": "west", "west": "east"}


def direction(text: str | None) -> str | None:
    m = re.search(r"\b(north|south|east|west)ward\b", text or "")
    return m.group(1) if m else None


def measure(config: ExperimentConfig, run_dir: Path, seed: int) -> dict[str, float]:
    _, _, rl = config.for_seed(seed)
    lm, tok = load_lm(config.model, str(seed_dir(run_dir, seed) / "warmup" / "reflect" / "reflection" / "model"),
                      rl, "reflection")
    reflector = Reflector(lm, tok, max_new_tokens=rl.reflection_tokens, temperature=0.0)
    played = oracle_states(config, seed)
    # The way back: the opposite of the move that entered this room (none at an episode's start or after a non-move).
    back = [None if o.step == 0 or not prev.action.startswith("go ") else OPPOSITE.get(prev.action.split()[-1])
            for prev, o in zip([played[0], *played[:-1]], played, strict=True)]
    written: list[str] = []
    for i in range(0, len(played), 32):
        written += [w or "" for w in reflector.reflect([o.parts for o in played[i: i + 32]])]
    moves = [(w, o.reflection, b) for w, o, b in zip(written, played, back, strict=True)
             if direction(o.reflection) is not None]
    with_back = [(w, b) for w, _, b in moves if b is not None]
    return {"seed": seed, "states": len(played), "move_states": len(moves),
            "direction_as_teacher": sum(direction(w) == direction(r) for w, r, _ in moves) / max(len(moves), 1),
            "names_the_way_back": sum(direction(w) == b for w, b in with_back) / max(len(with_back), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--run-dir", type=Path, required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = ap.parse_args()
    config = load_config(ExperimentConfig, args.config, [])
    for seed in args.seeds:
        print(json.dumps(measure(config, args.run_dir, seed)), flush=True)


if __name__ == "__main__":
    main()
