"""Where a static-decoder step's time goes on a GPU: the CUDA kernels of 32 decoded tokens, with and without
CUDA graphs, from torch.profiler (device time per kernel, summed over the call).

If the kernels' device time sums to much less than the step's wall time, launches and gaps bound the step
(graphs and fusion help); if it sums to about the wall time, the kernels themselves are slow (their memory
traffic: weights, then the KV cache).

    python benchmarks/profile_decode_step.py [--model gpt2-xl-shape] [--batch 16] [--tokens 32]
"""

from __future__ import annotations

import argparse
import time

import torch
from bench_rollout import reflection_prompts  # benchmarks/ is on sys.path when run as a script
from torch.profiler import ProfilerActivity, profile

from frugalft.envs import make
from frugalft.reflect.decoding import StaticDecoder, counter_uniforms
from frugalft.reflect.evaluate import evaluation_specs
from frugalft.reflect.policy import collate_left
from frugalft.reflect.train import RLConfig, build_players


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gpt2-xl-shape")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--rows", type=int, default=12, help="kernels listed per table")
    parser.add_argument("--device", default="cuda", help="cpu: the eager step's CPU ops (a dry run of the script)")
    args = parser.parse_args()
    cfg = RLConfig(policy_model="tiny-test", reflection_model=args.model, reflection_tokens=args.tokens,
                   device=args.device, track_kl=False, seed=0)
    players = build_players(cfg)
    lm, tok = players.reflector.model, players.reflector.tokenizer
    specs = evaluation_specs(make("DangerousTaxi", split="test"), "test", [2], 64, 1, seed=0)
    prompts = reflection_prompts(tok, cfg.env_kwargs, specs, args.batch)
    ids, mask, _ = collate_left(prompts, tok.pad_token_id, lm.device)
    u = counter_uniforms(torch.arange(args.batch, device=lm.device) * 7_919 + 1, args.tokens)
    cuda = lm.device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    kind = "CUDA" if cuda else "CPU"
    for graphs in (False, True) if cuda else (False,):
        dec = StaticDecoder(lm, graphs=graphs)

        def run(n: int, dec: StaticDecoder = dec) -> None:
            dec.generate(ids, mask, n, 1.0, -1, tok.pad_token_id, u)

        run(args.tokens), run(1)  # warm-up, capture
        walls = {}
        for n in (1, args.tokens):
            sync()
            t = time.perf_counter()
            run(n)
            sync()
            walls[n] = time.perf_counter() - t
        with profile(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as prof:
            run(args.tokens)
            sync()
        events = [e for e in prof.key_averages() if e.device_type.name == kind]
        device_us = sum(e.self_device_time_total if cuda else e.self_cpu_time_total for e in events)
        kernels = sum(e.count for e in events)
        step_ms = 1000 * (walls[args.tokens] - walls[1]) / (args.tokens - 1)
        print(f"== {kind}, graphs={graphs}, batch {args.batch}, prompt {ids.shape[1]}, {args.tokens} tokens: wall "
              f"{1000 * walls[args.tokens]:.1f} ms (prefill ~{1000 * walls[1]:.1f}, step {step_ms:.3f} ms); "
              f"kernels' device time {device_us / 1000:.1f} ms in {kernels} kernel calls "
              f"({kernels / args.tokens:.0f} per token)")
        print(prof.key_averages().table(sort_by=f"self_{kind.lower()}_time_total", row_limit=args.rows,
                                        max_name_column_width=70))


if __name__ == "__main__":
    main()
