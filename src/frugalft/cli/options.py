"""What every recipe command shares: ``--config FILE`` plus ``--set key=value`` overrides, and clean errors."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import typer

from frugalft.config import ConfigError, load_config

T = TypeVar("T")

ConfigOption = typer.Option(None, "--config", "-c", help="YAML config file (its keys are the recipe's fields).")
SetOption = typer.Option(None, "--set", "-s", help="Override a config key: --set lr=1e-4 --set model.name=tiny")
RestartOption = typer.Option(False, "--restart",
                             help="Start this stage over: clear its run directory (checkpoints, metrics, config.yaml, "
                                  "results; run.log is kept) instead of resuming it, e.g. after a config change.")
ReportToOption = typer.Option(None, "--report-to",
                              help="Also log metrics to tensorboard (<run>/tensorboard/) or wandb (offline without "
                                   "WANDB_API_KEY); none: metrics.jsonl only. Default: the config's report_to.")


def resolve_config(cls: type[T], config: Path | None, overrides: list[str] | None) -> T:
    """Load a recipe config, turning config mistakes into a one-line CLI error instead of a traceback."""
    try:
        return load_config(cls, config, overrides or [])
    except ConfigError as e:
        raise typer.BadParameter(str(e)) from None


def fail(message: str, code: int = 2) -> None:
    """Print ``error: message`` to stderr and exit: for user mistakes, where a traceback would only hide the cause."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def report_to(option: str | None, configured: str) -> str:
    """The tracker a command reports to: ``--report-to`` over the config's ``report_to``; checked up front, so
    a typo or a missing wandb is a one-line error before any work."""
    from frugalft.runs import check_report_to, import_wandb

    choice = option if option is not None else configured
    try:
        check_report_to(choice)
        if choice == "wandb":
            import_wandb()
    except (ValueError, ImportError) as e:
        fail(str(e))
    return choice
