"""Greedy reflections on the CPU: the loop decoder against the static one, on a trained reflection model (issue 24).

The packaged DangerousTaxi configs decode reflections greedily in RL and evaluation
(``rl.reflection_temperature: 0``), so the static decoder's different random stream does not apply there: both
decoders take the argmax of the same logits. This measures, in one run on the same states and model, what the
static decoder saves per reflection and whether it writes the same text. The model: ``--model DIR`` (a trained
reflection model, e.g. ``<run>/seed-0/warmup/reflect/reflection/model``), or one trained here for
``--train-steps`` steps on the config's seed-0 warm-up data (a model that has learned the template, so the
argmax is not a near-tie between random logits). The states: the first ``--states`` rows of that data.

    python benchmarks/bench_greedy_decoders.py [--config PATH] [--model DIR] [--states 800] [--batch 8]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from frugalft.atomic import write_json
from frugalft.config import load_config
from frugalft.models import load_model
from frugalft.reflect.reflection import Reflector
from frugalft.reflect.table import ExperimentConfig, run_data
from frugalft.reflect.warmup import read_jsonl, train_reflection

CONFIG = Path(__file__).parents[1] / "src" / "frugalft" / "configs" / "rl" / "taxi_full_cpu.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=CONFIG, help="a Reflect-RL (rl table) config")
    parser.add_argument("--model", type=Path, default=None, help="a trained reflection model directory")
    parser.add_argument("--train-steps", type=int, default=600, help="without --model: warm-up steps here")
    parser.add_argument("--states", type=int, default=800)
    parser.add_argument("--batch", type=int, default=8, help="states per decode (RL: rl.num_envs)")
    parser.add_argument("--repeats", type=int, default=2, help="timings per decoder, alternating; best kept")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (rl table --jobs N runs 1 each)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "greedy_decoders.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    exp = load_config(ExperimentConfig, args.config)
    _, warm, rl = exp.for_seed(0)
    result: dict = {"benchmark": "greedy_decoders", "config": args.config.name, "states": args.states,
                    "batch": args.batch, "reflection_tokens": rl.reflection_tokens,
                    "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
                               f"{args.threads} threads", "load_average": [round(x, 2) for x in os.getloadavg()]}
    with tempfile.TemporaryDirectory() as tmp:
        data = run_data(exp, tmp, 0, log=lambda *a: None)
        model = args.model
        if model is None:
            warm.reflection_steps, warm.val_fraction, warm.checkpoint_every = args.train_steps, 0.0, 10**9
            model = train_reflection(warm, data / "reflection.jsonl", Path(tmp) / "reflection", log=lambda *a: None)
        result["model"] = str(args.model) if args.model else f"trained here, {args.train_steps} steps"
        states = [r["parts"] for r in read_jsonl(data / "reflection.jsonl")[: args.states]]
        lm, tok = load_model(str(model), device="cpu", seed=0)
    texts: dict[str, list[str | None]] = {}
    seconds: dict[str, list[float]] = {"loop": [], "static": []}
    for _ in range(args.repeats):
        for decoder in seconds:
            reflector = Reflector(lm, tok, max_new_tokens=rl.reflection_tokens, temperature=0.0, decoder=decoder)
            t = time.process_time()
            out: list[str | None] = []
            for k in range(0, len(states), args.batch):
                out += reflector.reflect(states[k: k + args.batch])
            seconds[decoder].append(time.process_time() - t)
            texts[decoder] = out
    same = sum(a == b for a, b in zip(texts["loop"], texts["static"], strict=True))
    result.update({f"{d}_cpu_s": round(min(s), 2) for d, s in seconds.items()})
    result["static_over_loop"] = round(min(seconds["static"]) / min(seconds["loop"]), 3)
    result["identical_reflections"] = f"{same}/{len(states)}"
    result["nonempty_reflections"] = sum(bool(t) for t in texts["loop"])  # identical empty ones would prove nothing
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    write_json(args.out, result)
    print(f"greedy reflections: static {result['static_over_loop']}x the loop's CPU time, {same}/{len(states)} "
          f"identical ({result['nonempty_reflections']} not empty); wrote {args.out}")


if __name__ == "__main__":
    main()
