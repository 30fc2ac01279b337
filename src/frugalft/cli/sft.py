"""``frugalft sft`` (fine-tune on prompt/response pairs) and ``frugalft curve`` (budget curves of strategies)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from frugalft.cli.options import (
    ConfigOption,
    ReportToOption,
    RestartOption,
    SetOption,
    fail,
    report_to,
    resolve_config,
    run_dir_option,
)

SFTRunDirOption = run_dir_option(None, "Run directory (default: the config's out).")


NoDropoutOption = typer.Option(False, "--no-dropout",
                               help="Dropout off: runs on different process layouts are then comparable.")


def sft_cmd(config: Path = ConfigOption, overrides: list[str] = SetOption, run_dir: Path = SFTRunDirOption,
            report: str = ReportToOption, restart: bool = RestartOption, no_dropout: bool = NoDropoutOption) -> None:
    """Fine-tune a model (LoRA or full) on prompt/response pairs; loss on the response tokens only.

    e.g. frugalft sft -c src/frugalft/configs/sft/tiny.yaml --set train=runs/pool/pool.jsonl --run-dir runs/sft-tiny

    Under `accelerate launch ... $(which frugalft) sft -c CONFIG` every process takes its rows of each batch (DDP).
    """
    import os

    from frugalft.checkpoint import CheckpointError
    from frugalft.parallel import launched_processes
    from frugalft.runs import RunError, claim_run
    from frugalft.sft import SFTConfig, SFTError
    from frugalft.sft.train import run_sft

    cfg = resolve_config(SFTConfig, config, overrides)
    if run_dir is not None:
        cfg.out = str(run_dir)
    cfg.report_to = report_to(report, cfg.report_to)  # the run directory reports as its config says
    if not cfg.train:
        fail("no training data: --set train=FILE (JSONL, CSV, Parquet or a datasets directory)")
    main = int(os.environ.get("RANK", "0")) == 0
    try:
        if main:  # one process owns the run directory (the others write nothing)
            claim_run(cfg.out, restart)
        result = run_sft(cfg, disable_dropout=no_dropout)
    except (SFTError, CheckpointError, RunError) as e:
        fail(str(e))
    if main:
        where = f" on {result.processes} processes" if launched_processes() > 1 else ""
        typer.echo(f"{result.steps} steps{where}, train loss {result.train_loss:.4f}, eval loss "
                   f"{result.eval_loss if result.eval_loss is None else round(result.eval_loss, 4)}, "
                   f"{result.tokens_per_s:.0f} tokens/s; run in {cfg.out}")


def curve_cmd(config: Path = ConfigOption, overrides: list[str] = SetOption, run_dir: Path = SFTRunDirOption,
              report: str = ReportToOption, restart: bool = RestartOption) -> None:
    """Strategies x budgets x seeds: select -> annotate (pool references) -> SFT -> evaluate; savings vs random.

    Resumable: finished cells are skipped. e.g. frugalft curve -c src/frugalft/configs/curve/cpu.yaml
    """
    from frugalft.checkpoint import CheckpointError
    from frugalft.design import DesignError
    from frugalft.eval.curve import CurveConfig, CurveError, run_curve
    from frugalft.runs import RunError, claim_run, tracking
    from frugalft.sft import SFTError

    cfg = resolve_config(CurveConfig, config, overrides)
    if run_dir is not None:
        cfg.out = str(run_dir)
    # One tracked run per cell (its SFT run directory), tagged with the cell's strategy, budget and seed.
    choice = report_to(report, cfg.report_to if cfg.report_to != "none" else cfg.sft.report_to)
    try:
        claim_run(cfg.out, restart)  # one curve per folder; --restart: every cell over
        with tracking(choice, root=Path(cfg.out) / "sft", group=cfg.out, describe=_curve_cell_tags):
            result = run_curve(cfg, log=typer.echo)
    except (CurveError, DesignError, SFTError, CheckpointError, RunError) as e:
        fail(str(e))
    typer.echo(f"{result['metric']} (mean over seeds [95% CI]):")
    if "zero_shot" in result:  # the base model without fine-tuning (budget 0)
        typer.echo(f"{'zero-shot':>20}  b=0: {result['zero_shot']['mean']:.4f}")
    for s, d in result["summary"].items():
        cells = "  ".join(f"b={b}: {v['mean']:.4f} [{v['lo']:.4f}, {v['hi']:.4f}]" for b, v in d.items())
        typer.echo(f"{s:>20}  {cells}")
    for s, v in result.get("savings", {}).items():
        sav = "not reached" if v["savings"] is None else f"{v['savings']:+.1%} ({v['status']})"
        typer.echo(f"savings vs random @ b={v['reference_budget']}: {s}: {sav}")
    files = ["curve.csv", "summary.csv", *(["savings.csv"] if "savings" in result else []), "summary.md", "curve.png"]
    typer.echo(f"wrote {cfg.out}/{', '.join(files)}")


def _curve_cell_tags(path: Path) -> dict[str, Any]:
    """strategy, budget and seed of a curve cell's SFT run directory ``<strategy>__b<budget>__s<seed>``."""
    strategy, _, rest = path.name.partition("__b")
    budget, _, seed = rest.partition("__s")
    if not (budget.isdigit() and seed.lstrip("-").isdigit()):
        return {}
    return {"strategy": strategy, "budget": int(budget), "seed": int(seed)}


def register(app: typer.Typer) -> None:
    app.command("sft")(sft_cmd)
    app.command("curve")(curve_cmd)
