"""Rollout throughput: our batched Reflect-RL rollout versus the authors' shape, in the same run.

Both sides play the same DangerousTaxi episodes (same tasks, seeds and models, reflection on) through
``frugalft.reflect.rollout.collect_episodes``:
- ours: 16 environments stepped together; one batched reflection decode (KV cache) and one batched policy
  forward per step for all environments still playing;
- the authors' shape: one environment at a time, batch 1 (their loop reflected and acted per environment),
  measured twice: with our decoder (the effect of batching alone; ``speedup``) and with transformers'
  ``generate`` as their code used (``speedup_vs_hf_generate``).

Reported: environment steps per second of each and the ratios (target >= 5x), written as JSON. The untrained
policies crash within a step or two, so every environment that finishes takes the next waiting episode at
once (``collect_episodes`` refills), and the batched side stays full until the queue runs dry. The batched
side runs with each reflection decoder (``batched``: the loop decoder, ``batched_static``: the static one).

The decoder part (``decode``) times reflection decoding alone on real reflection prompts (DangerousTaxi
states), at each ``--decode-batch``, every row decoding the full ``--reflection-tokens``:
- ``loop``: ``decoding.generate`` with the per-episode generators (a host uniform per row per token);
- ``loop_counter``: the same loop fed counter-based uniforms (what the sampling change alone buys);
- ``static``: ``decoding.StaticDecoder`` (static KV cache; CUDA graphs on CUDA), same uniforms;
  ``static_matmul``: its attention as matrix products instead of one SDPA kernel; ``static_eager``: without
  graphs (CUDA); ``static_compiled`` (``--compile``): its forward through ``torch.compile``;
- with ``--decode-batch 1,B``: ``reflection_ratio_vs_batch_1``, how many times faster B reflections of
  ``--reflection-tokens`` are made as one batch than one at a time (prefill + tokens x step at each batch
  size): the most batching can buy the reflection part of a rollout;
- ``bound``: the bandwidth bound of one decode step, the model's bytes over the device's measured copy
  bandwidth (2 x bytes / time of a large on-device copy): tokens/s <= batch / (bytes / bandwidth). The KV
  cache's reads come on top: ``bound_with_kv`` adds them (prompt + half the new tokens per row, every layer's
  keys and values), the tighter bound at long prompts and large batches.

    python benchmarks/bench_rollout.py [--quick] [--model tiny] [--device auto] [--parts rollout,decode]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch

from frugalft.atomic import write_json
from frugalft.envs import VecTextEnv, make
from frugalft.reflect.decoding import StaticDecoder, counter_uniforms, generate, supports
from frugalft.reflect.evaluate import evaluation_specs
from frugalft.reflect.policy import collate_left
from frugalft.reflect.prompts import encode_reflection_prompt
from frugalft.reflect.rollout import RolloutStats, collect_episodes, episode_generator
from frugalft.reflect.train import RLConfig, build_players


def measure(players, env_kwargs: dict, specs, n_envs: int, repeats: int) -> dict:
    """Best-of-``repeats`` environment steps per second playing ``specs`` with ``n_envs`` environments."""
    vec = VecTextEnv([lambda: make("DangerousTaxi", split="test", **env_kwargs) for _ in range(n_envs)])
    best = None
    for r in range(repeats):
        torch.manual_seed(r)
        stats = RolloutStats()
        t, c = time.perf_counter(), time.process_time()
        collect_episodes(vec, specs, players.policy, players.tokenizer, players.alphabet, players.reflector,
                         temperature=1.0, stats=stats, seed=r)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t
        row = {"env_steps": stats.env_steps, "seconds": round(seconds, 3),
               "steps_per_s": round(stats.env_steps / seconds, 2),
               "reflect_share": round(stats.reflect_seconds / seconds, 3),
               "cpu_seconds": round(time.process_time() - c, 3)}  # process CPU time (a shared CPU's fairer one)
        if best is None or row["steps_per_s"] > best["steps_per_s"]:
            best = row
    vec.close()
    return best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def copy_bandwidth(device: torch.device, mib: int = 1024, repeats: int = 10) -> float:
    """Bytes per second a large on-device copy moves (read + write), best of ``repeats``."""
    src = torch.empty(mib << 20, dtype=torch.uint8, device=device)
    src.fill_(1)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        dst.copy_(src)
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * src.numel() / best


def model_bytes(model: torch.nn.Module) -> int:
    """Bytes of the weights one decode step reads (a tied embedding counted once)."""
    seen, total = set(), 0
    for p in model.parameters():
        if p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            total += p.numel() * p.element_size()
    return total


def reflection_prompts(tokenizer, env_kwargs: dict, specs, n: int) -> list[list[int]]:
    """``n`` reflection prompts from the first states of the specs' episodes (cycled when there are fewer)."""
    env = make("DangerousTaxi", split="test", **env_kwargs)
    prompts = []
    for spec in specs[:n]:
        _, info = env.reset(seed=spec.seed, options={"task_id": spec.task_id})
        prompts.append(encode_reflection_prompt(tokenizer, info["parts"]))
    env.close()
    return [prompts[i % len(prompts)] for i in range(n)]


def measure_decode(reflector, prompts: list[list[int]], tokens: int, repeats: int, compiled: bool = False,
                   only: set[str] | None = None) -> dict:
    """Each decoder on ``prompts`` (one batch), every row decoding ``tokens`` tokens: the prefill (a 1-token
    call) and the decode step ((T-token call - 1-token call) / (T - 1)), best of ``repeats`` interleaved runs."""
    lm, tok = reflector.model, reflector.tokenizer
    device = next(lm.parameters()).device
    ids, mask, _ = collate_left(prompts, tok.pad_token_id, device)
    batch = len(prompts)
    never = -1  # no row stops early: every decoder does exactly ``n`` steps
    keys = torch.arange(batch, dtype=torch.int64, device=device) * 7_919 + 1
    fns = {
        "loop": lambda n: generate(lm, ids, mask, n, 1.0, never, tok.pad_token_id,
                                   [episode_generator(0, j) for j in range(batch)]),
        "loop_counter": lambda n: generate(lm, ids, mask, n, 1.0, never, tok.pad_token_id,
                                           uniforms=counter_uniforms(keys, n)),
    }
    if supports(lm):
        decoders = {"static": StaticDecoder(lm),  # CUDA graphs on CUDA
                    "static_matmul": StaticDecoder(lm, attention="matmul")}
        if device.type == "cuda":
            decoders["static_eager"] = StaticDecoder(lm, graphs=False)  # what the graphs add
        if compiled:
            decoders["static_compiled"] = StaticDecoder(lm, compile=True)  # + torch.compile'd forward
        for name, dec in decoders.items():
            fns[name] = (lambda d: lambda n: d.generate(ids, mask, n, 1.0, never, tok.pad_token_id,
                                                        counter_uniforms(keys, n)))(dec)
    if only:
        fns = {k: f for k, f in fns.items() if k in only or k == "loop_counter"}  # the reference stays
    rows: dict = {"batch": batch, "prompt_tokens": int(ids.shape[1]), "new_tokens": tokens}
    for name, fn in list(fns.items()):
        try:
            fn(tokens), fn(1)  # warm-up (and, for the static decoder on CUDA, the graph capture)
        except Exception as e:  # noqa: BLE001 -- one decoder failing must not lose the others' numbers
            rows[name] = {"error": f"{type(e).__name__}: {e}"[:500]}
            del fns[name]
    best = {(name, n): (float("inf"), float("inf")) for name in fns for n in (1, tokens)}
    for _ in range(repeats):  # interleaved, so load from other jobs falls on every decoder alike
        for name, fn in fns.items():
            for n in (1, tokens):
                _sync(device)
                t, c = time.perf_counter(), time.process_time()
                out = fn(n)
                _sync(device)
                wall, cpu = time.perf_counter() - t, time.process_time() - c
                best[name, n] = (min(best[name, n][0], wall), min(best[name, n][1], cpu))
                assert out.shape == (batch, n), out.shape
    for name in fns:
        (w1, c1), (wt, ct) = best[name, 1], best[name, tokens]
        step = max(wt - w1, 1e-9) / (tokens - 1)
        rows[name] = {"seconds": round(wt, 4), "prefill_ms": round(1000 * w1, 2),
                      "ms_per_step": round(1000 * step, 3), "tokens_per_s": round(batch / step, 1),
                      # process CPU time (all threads): on a CPU other jobs share, the fairer comparison
                      "cpu_seconds": round(ct, 4), "cpu_ms_per_step": round(1000 * (ct - c1) / (tokens - 1), 3)}
    # Same uniforms; near-uniform distributions let float rounding flip a draw.
    reference = fns["loop_counter"](tokens)
    for name in [n for n in fns if n.startswith("static")]:
        suffix = "" if name == "static" else f"_{name}"
        rows[f"rows_identical_to_loop_counter{suffix}"] = int((reference == fns[name](tokens)).all(1).sum())
    return rows


NAMES = ("loop", "loop_counter", "static", "static_matmul", "static_eager", "static_compiled")


def kv_bytes(lm: torch.nn.Module, batch: int, length: float) -> float:
    """Bytes of keys and values a decode step must read at ``length`` cached positions per row."""
    cfg, p = lm.config, next(lm.parameters())
    return 2 * cfg.n_layer * cfg.n_embd * batch * length * p.element_size()


def decode_part(players, cfg: RLConfig, specs, batches: list[int], tokens: int, repeats: int,
                compiled: bool = False, only: set[str] | None = None) -> dict:
    lm = players.reflector.model
    device = next(lm.parameters()).device
    nbytes = model_bytes(lm)
    bandwidth = copy_bandwidth(device, mib=1024 if device.type == "cuda" else 256)
    step_bound = nbytes / bandwidth
    out: dict = {"model_bytes": nbytes, "dtype": str(next(lm.parameters()).dtype).replace("torch.", ""),
                 "copy_bandwidth_gb_s": round(bandwidth / 1e9, 1), "bound_ms_per_step": round(1000 * step_bound, 4),
                 "graphs": device.type == "cuda", "batches": []}
    for b in batches:
        prompts = reflection_prompts(players.reflector.tokenizer, cfg.env_kwargs, specs, b)
        row = measure_decode(players.reflector, prompts, tokens, repeats, compiled, only)
        row["bound_tokens_per_s"] = round(b / step_bound, 1)
        # With the cache the step must also read: the prompt plus, on average, half the new tokens.
        kv_bound = (nbytes + kv_bytes(lm, b, row["prompt_tokens"] + (tokens - 1) / 2)) / bandwidth
        row["bound_with_kv_ms_per_step"] = round(1000 * kv_bound, 4)
        row["bound_with_kv_tokens_per_s"] = round(b / kv_bound, 1)
        timed = [k for k in NAMES if k in row and "error" not in row[k]]
        for name in timed:
            row[name]["of_bound"] = round(row[name]["tokens_per_s"] / row["bound_tokens_per_s"], 4)
            row[name]["of_bound_with_kv"] = round(row[name]["tokens_per_s"] / row["bound_with_kv_tokens_per_s"], 4)
        out["batches"].append(row)
        if b > 1 and out["batches"][0]["batch"] == 1:  # what batching can buy a reflection at all (Amdahl)
            one = out["batches"][0]
            for name in timed:
                if name in one and "error" not in one[name]:
                    single = one[name]["prefill_ms"] + tokens * one[name]["ms_per_step"]
                    batched = row[name]["prefill_ms"] + tokens * row[name]["ms_per_step"]
                    row[name]["reflection_ratio_vs_batch_1"] = round(b * single / batched, 2)
        print(f"decode batch {b} ({row['prompt_tokens']} prompt tokens, {tokens} new), per decode step: "
              + ", ".join(f"{k} {row[k]['ms_per_step']:.2f} ms = {row[k]['tokens_per_s']:.0f} tok/s "
                          f"({100 * row[k]['of_bound']:.1f}% of bound)" for k in timed)
              + f"; bound {1000 * step_bound:.3f} ms = {row['bound_tokens_per_s']:.0f} tok/s (with the KV cache "
              + f"{row['bound_with_kv_ms_per_step']:.3f} ms: " + ", ".join(
                  f"{k} {100 * row[k]['of_bound_with_kv']:.1f}%" for k in timed) + "); prefill ms "
              + ", ".join(f"{k} {row[k]['prefill_ms']:.1f}" for k in timed)
              + "; CPU ms per step " + ", ".join(f"{k} {row[k]['cpu_ms_per_step']:.2f}" for k in timed)
              + "".join(f"; {k} FAILED: {row[k]['error']}" for k in NAMES if k in row and "error" in row[k]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny-test models, fewer episodes (CI)")
    parser.add_argument("--model", default=None, help="policy and reflection model (default tiny; quick: tiny-test)")
    parser.add_argument("--envs", type=int, default=16, help="parallel environments of the batched side")
    parser.add_argument("--episodes", type=int, default=None, help="episodes per side (default 96; quick 32)")
    parser.add_argument("--reflection-tokens", type=int, default=None, help="cap per reflection (32; quick 16)")
    parser.add_argument("--repeats", type=int, default=None, help="best of N timings per side (2; quick 1)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--parts", default="rollout,decode",
                        help="comma-separated: rollout (env steps/s, batched vs one at a time), "
                             "rollout-batched (the batched side only, both decoders), decode (decoders alone)")
    parser.add_argument("--decode-batch", default=None,
                        help="comma-separated batch sizes of the decode part (default 16; on CUDA 16,64)")
    parser.add_argument("--compile", action="store_true",
                        help="decode part: also time the static decoder with a torch.compile'd forward")
    parser.add_argument("--decoders", default=None, help="decode part: only these (comma-separated; "
                        "loop_counter, the reference, always runs)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "rollout.json")
    args = parser.parse_args()
    model = args.model or ("tiny-test" if args.quick else "tiny")
    episodes = args.episodes or (32 if args.quick else 96)
    tokens = args.reflection_tokens or (16 if args.quick else 32)
    repeats = args.repeats or (1 if args.quick else 2)

    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    unknown = parts - {"rollout", "rollout-batched", "decode"}
    if unknown:
        parser.error(f"unknown --parts {sorted(unknown)}")

    # The decoders alone need no policy: a small one saves building a second big model.
    policy = "tiny-test" if parts == {"decode"} else model
    cfg = RLConfig(policy_model=policy, reflection_model=model, reflection_tokens=tokens, device=args.device,
                   track_kl=False, seed=0, reflection_decoder="loop")
    players = build_players(cfg)
    env = make("DangerousTaxi", split="test")
    # Full-mode tasks (level 2): the longest episodes, so batches stay full for longer.
    specs = evaluation_specs(env, "test", [2], max(episodes, 64), 1, seed=0)
    device = next(players.policy.parameters()).device
    result: dict = {
        "benchmark": "rollout",
        "quick": args.quick,
        "model": model,
        "policy_model": policy,
        "reflection_tokens": tokens,
        "episodes": episodes,
        "device": str(device) + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else ""),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
                   f"{torch.get_num_threads()} threads",
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    if parts & {"rollout", "rollout-batched"}:
        batched = measure(players, cfg.env_kwargs, specs[:episodes], args.envs, repeats)
        result["batched"] = {"envs": args.envs, "decoder": "loop", **batched}
        if supports(players.reflector.model):
            players.reflector.decoder = "static"  # static KV cache (+ CUDA graphs on CUDA), counter uniforms
            static = measure(players, cfg.env_kwargs, specs[:episodes], args.envs, repeats)
            players.reflector.decoder = "loop"
            result["batched_static"] = {"envs": args.envs, "decoder": "static", **static}
            print(f"batched ({args.envs} envs): loop decoder {batched['steps_per_s']:.1f} env steps/s, "
                  f"static decoder {static['steps_per_s']:.1f}")
    if "rollout" in parts:
        single = measure(players, cfg.env_kwargs, specs[:episodes], 1, repeats)
        players.reflector.use_hf_generate = True
        single_hf = measure(players, cfg.env_kwargs, specs[:episodes], 1, repeats)
        players.reflector.use_hf_generate = False
        ratio = batched["steps_per_s"] / single["steps_per_s"]
        ratio_hf = batched["steps_per_s"] / single_hf["steps_per_s"]
        result.update({
            "authors_shape": {"envs": 1, **single},
            "authors_shape_hf_generate": {"envs": 1, **single_hf},
            "speedup": round(ratio, 2),
            "speedup_vs_hf_generate": round(ratio_hf, 2),
            "target_speedup": 5.0,
        })
        if "batched_static" in result:
            result["speedup_static"] = round(result["batched_static"]["steps_per_s"] / single["steps_per_s"], 2)
        print(f"batched ({args.envs} envs): {batched['steps_per_s']:.1f} env steps/s; "
              f"one env at a time: {single['steps_per_s']:.1f} env steps/s (with transformers' generate: "
              f"{single_hf['steps_per_s']:.1f}); speedup {ratio:.1f}x, {ratio_hf:.1f}x vs generate (target >= 5x)")
    if "decode" in parts:
        default = "16,64" if device.type == "cuda" else "16"
        batches = [int(b) for b in (args.decode_batch or default).split(",")]
        only = set(args.decoders.split(",")) if args.decoders else None
        result["decode"] = decode_part(players, cfg, specs, batches, tokens, repeats, args.compile, only)
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
