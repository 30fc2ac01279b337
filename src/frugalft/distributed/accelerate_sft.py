"""``frugalft sft`` under ``accelerate launch``, as a module (for launchers that want ``-m``):

    accelerate launch --num_processes 2 [--cpu] -m frugalft.distributed.accelerate_sft -c sft.yaml [--set k=v]

Same as ``accelerate launch ... $(which frugalft) sft -c sft.yaml``. The loop is ``frugalft.sft.train_sft``'s
(one SFT loop in frugalft): handed an ``Accelerator``, each process takes its rows of every global batch and
DDP averages the gradients; the module docstring of ``frugalft.sft.train`` says why the update equals the
one-process one. Large models: the same loop runs under FSDP with an accelerate config (``accelerate config``
-> FSDP, ``fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP``), see docs/scaling.md; checkpoints then need
``accelerator.get_state_dict`` (not done here: DDP/CPU-tested only).
"""

from __future__ import annotations

from pathlib import Path

from frugalft.sft.train import SFTConfig, run_sft


def main(argv: list[str] | None = None) -> None:
    """``python -m frugalft.distributed.accelerate_sft -c sft.yaml [--set k=v] [--no-dropout]`` (under
    ``accelerate launch`` for several processes)."""
    import argparse

    from frugalft.config import load_config

    ap = argparse.ArgumentParser(prog="frugalft.distributed.accelerate_sft", description=main.__doc__)
    ap.add_argument("-c", "--config", type=Path, default=None, help="SFT YAML config (frugalft sft's keys)")
    ap.add_argument("-s", "--set", dest="overrides", action="append", default=[], help="key=value override")
    ap.add_argument("--no-dropout", action="store_true", help="dropout off (runs comparable across layouts)")
    args = ap.parse_args(argv)
    cfg = load_config(SFTConfig, args.config, args.overrides)
    if not cfg.train:
        ap.error("the config needs train: a prompt/response file")
    out = run_sft(cfg, disable_dropout=args.no_dropout, distributed=True)
    import os

    if int(os.environ.get("RANK", "0")) == 0:
        print(f"sft done: {out.steps} steps on {out.processes} processes, train loss {out.train_loss:.4f}")


if __name__ == "__main__":
    main()
