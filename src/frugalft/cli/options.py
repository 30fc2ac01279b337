"""What every command shares: one vocabulary of options, and clean errors.

The vocabulary (tests/test_cli_vocabulary.py checks it on every command):

- ``-o/--out PATH``: a file or folder the command writes (a selection, an export, a pool, results);
- ``--run-dir DIR`` (no short flag): a run directory, which the command resumes and keeps adding to;
- ``-c/--config FILE`` and ``-s/--set key=value`` (repeatable; the value is YAML 1.2, so ``1e-4`` is a float):
  the recipe's settings, on every configurable command (``select``'s strategy parameters too);
- ``--seed``: a random seed (in ``rl`` commands: the run's seed, which also names its folder ``seed-S``).

Missing optional extras (``require``) and ``--device cuda`` without CUDA (``check_device``) are one-line
errors naming the fix, raised before any work is done.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path
from typing import Any, TypeVar

import typer

from frugalft.config import ConfigError, load_config

T = TypeVar("T")

ConfigOption = typer.Option(None, "--config", "-c", help="YAML config file (its keys are the recipe's fields).")
SetOption = typer.Option(None, "--set", "-s", help="Override a config key: --set lr=1e-4 --set model.name=tiny")


def out_option(default: Any, help: str) -> Any:
    """``-o/--out``: a file or folder the command writes."""
    return typer.Option(default, "--out", "-o", help=help)


def run_dir_option(default: Any, help: str) -> Any:
    """``--run-dir``: a run directory (no short flag: ``-o`` is for outputs)."""
    return typer.Option(default, "--run-dir", help=help)
RestartOption = typer.Option(False, "--restart",
                             help="Start this stage over: clear its run directory (checkpoints, metrics, config.yaml, "
                                  "results; run.log is kept) instead of resuming it, e.g. after a config change.")
ReportToOption = typer.Option(None, "--report-to",
                              help="Also log metrics to tensorboard (<run>/tensorboard/) or wandb (offline without "
                                   "WANDB_API_KEY); none: metrics.jsonl only. Default: the config's report_to.")


def resolve_config(cls: type[T], config: Path | None, overrides: list[str] | None) -> T:
    """Load a recipe config, turning config mistakes into a one-line CLI error instead of a traceback; a
    ``device`` anywhere in it that names CUDA must have CUDA (``check_device``)."""
    try:
        cfg = load_config(cls, config, overrides or [])
    except ConfigError as e:
        raise typer.BadParameter(str(e)) from None
    for key, device in _devices(cfg):
        check_device(device, f"--set {key}={device}")
    return cfg


def _devices(cfg: Any, prefix: str = "") -> list[tuple[str, str]]:
    """(dotted key, value) of every ``device`` field of a config and its sections."""
    out = []
    for f in dataclasses.fields(cfg) if dataclasses.is_dataclass(cfg) else ():
        value = getattr(cfg, f.name)
        if f.name == "device" and isinstance(value, str):
            out.append((prefix + f.name, value))
        elif dataclasses.is_dataclass(value):
            out += _devices(value, f"{prefix}{f.name}.")
    return out


def check_device(device: str, option: str | None = None) -> None:
    """A CUDA device without CUDA is a one-line error naming the install, before any model loads."""
    if not device.startswith("cuda"):
        return
    import torch

    if torch.cuda.is_available():
        return
    why = "this PyTorch is a CPU-only build" if torch.version.cuda is None else "no CUDA GPU is visible"
    fail(f"{option or f'--device {device}'}: {why} (torch {torch.__version__}); install a CUDA build "
         "(pip install torch --index-url https://download.pytorch.org/whl/cu128, for your driver's CUDA) or use --device cpu/auto")


def _importable(module: str) -> bool:
    """Whether ``import module`` would find it, without importing it (``sys.modules[name] = None`` blocks it)."""
    if module in sys.modules:
        return sys.modules[module] is not None
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(module: str, extra: str, what: str | None = None) -> None:
    """A missing optional extra is a one-line error naming the install command, before any work is done."""
    if not _importable(module):
        fail(f"{what or module} needs the {module} package, which is not installed: pip install 'frugalft[{extra}]'")


# Environments whose package is an optional extra: name or gymnasium id -> (module, extra).
ENV_EXTRAS = {"TextWorld": ("textworld", "textworld"), "frugalft/TextWorld-v0": ("textworld", "textworld"),
              "ALFWorld": ("textworld", "alfworld"), "frugalft/ALFWorld-v0": ("textworld", "alfworld")}


def require_env(env: str) -> None:
    """``require`` the extra an environment needs (TextWorld, ALFWorld), if any."""
    if env in ENV_EXTRAS:
        require(*ENV_EXTRAS[env], what=f"the {env} environment")


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
