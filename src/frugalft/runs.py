"""A run directory holds everything one command produced, so that it can be read, compared and resumed.

    runs/<name>/
        config.yaml      the resolved config (file + overrides + defaults)
        metrics.jsonl    one JSON object per logged step: {"step": ..., "<metric>": ...}
        run.log          the human log
        checkpoints/     step-00000100/ ... and LATEST (see frugalft.checkpoint)

Metric names are stable across versions (they are what plots and tables key on); a recipe documents its own.

Experiment tracking: inside ``with tracking("tensorboard" | "wandb"):`` every RunDir made also sends its
metric rows to TensorBoard (event files in ``<run>/tensorboard/``) or Weights & Biases (one W&B run per run
directory), under the same names as metrics.jsonl, which stays the source of truth. Outside (the default,
``"none"``) nothing else is written or imported.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from frugalft.atomic import write_text
from frugalft.config import dump_yaml, to_dict

T = TypeVar("T")


class RunDir:
    def __init__(self, path: str | Path, config: Any | None = None, resume: bool = False):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.checkpoints = self.path / "checkpoints"
        self.metrics_path = self.path / "metrics.jsonl"
        if config is not None:
            write_text(self.path / "config.yaml", dump_yaml(config))
        if not resume and self.metrics_path.exists():
            self.metrics_path.unlink()
        self.log = _file_logger(self.path / "run.log")
        # Tracking (see tracking()): the context active when the run directory was made, else the config's own
        # ``report_to`` if it has one. The tracker opens on the first row, so a run that logs nothing (a
        # finished run reloaded) leaves no empty run behind.
        self._tracking = _ACTIVE[-1] if _ACTIVE else _config_tracking(config)
        self._tracker: _Tracker | None = None
        self._config = config
        self._resume = resume
        self._purge_step: int | None = None

    def log_metrics(self, step: int, **metrics: Any) -> None:
        row = {"step": int(step), "time": round(time.time(), 3), **{k: _plain(v) for k, v in metrics.items()}}
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        if self._tracking is not None and self._tracking.live:  # (not after its context closed)
            if self._tracker is None or self._tracker.closed:
                self._tracker = self._tracking.open(self.path, self._config, self._resume, self._purge_step)
            self._tracker.log(int(step), {k: v for k, v in row.items() if k not in ("step", "time")})

    def truncate_metrics(self, after_step: int) -> None:
        """On resume, drop rows logged after the checkpoint we resume from: they will be logged again."""
        if self._tracking is not None:
            # TensorBoard hides the events of the dropped steps too (purge_step); W&B starts a new run.
            self._purge_step = after_step + 1
            if self._tracker is not None:
                self._tracker.close()
        if not self.metrics_path.exists():
            return
        rows = [r for r in read_metrics(self.metrics_path) if r["step"] <= after_step]
        write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in rows))

    def metrics(self) -> list[dict[str, Any]]:
        return read_metrics(self.metrics_path) if self.metrics_path.exists() else []


# ---- experiment tracking ---------------------------------------------------------------------------------
REPORT_TO = ("none", "tensorboard", "wandb")
WANDB_INSTALL = "W&B reporting needs the wandb package: pip install wandb"


def check_report_to(report_to: str) -> str:
    if report_to not in REPORT_TO:
        raise ValueError(f"report_to must be one of {', '.join(REPORT_TO)}, got {report_to!r}")
    return report_to


def import_wandb() -> Any:
    """wandb, imported only when asked for (it is an optional dependency)."""
    try:
        import wandb
    except ImportError:
        raise ImportError(WANDB_INSTALL) from None
    return wandb


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """The numeric values of a row (None, strings and lists have no place on a curve)."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}


class _Tracker:
    closed = False

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.closed = True


class _TensorBoard(_Tracker):
    def __init__(self, path: Path, name: str, tags: dict[str, Any], config: Any, resume: bool,
                 purge_step: int | None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        log_dir = path / "tensorboard"
        if not resume and purge_step is None:
            shutil.rmtree(log_dir, ignore_errors=True)  # a fresh run, as metrics.jsonl was emptied
        self.writer = SummaryWriter(str(log_dir), purge_step=purge_step)
        if purge_step is None or purge_step <= 1:  # the run's description, once (a resume keeps the first)
            self.writer.add_text("run/tags", "  \n".join(f"{k}: {v}" for k, v in tags.items()) or name, 0)
            if config is not None:
                self.writer.add_text("run/config", "```\n" + dump_yaml(config) + "```", 0)

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        for k, v in _scalars(metrics).items():
            self.writer.add_scalar(k, v, step)
        self.writer.flush()  # live dashboards: a row is on disk once logged

    def close(self) -> None:
        if not self.closed:
            self.writer.close()
        super().close()


class _WandB(_Tracker):
    def __init__(self, path: Path, name: str, tags: dict[str, Any], config: Any, project: str,
                 group: str | None) -> None:
        wandb = import_wandb()
        # No key: offline runs under <run>/wandb/ (`wandb sync` uploads them later); WANDB_MODE wins if set.
        mode = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
        self.run = wandb.init(project=project, name=name, group=group, dir=str(path), mode=mode, reinit=True,
                              tags=[f"{k}:{v}"[:64] for k, v in tags.items()],
                              config={**({"config": to_dict(config)} if config is not None else {}), **tags})

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        self.run.log(_scalars(metrics), step=step)

    def close(self) -> None:
        if not self.closed:
            self.run.finish()
        super().close()


@dataclass(eq=False)  # identity: two contexts with the same settings are still two
class _Tracking:
    report_to: str
    root: Path | None
    project: str
    group: str | None
    tags: dict[str, Any]
    describe: Callable[[Path], dict[str, Any]] | None
    trackers: list[_Tracker] = field(default_factory=list)
    live: bool = True

    def close(self) -> None:
        self.live = False
        for t in self.trackers:
            t.close()

    def open(self, path: Path, config: Any, resume: bool, purge_step: int | None) -> _Tracker:
        name = path.name
        if self.root is not None:
            with suppress(ValueError):  # a run directory outside root keeps its own name
                rel = path.resolve().relative_to(self.root.resolve()).as_posix()
                name = path.name if rel == "." else rel
        tags = {**self.tags, **(self.describe(path) if self.describe else {})}
        if self.report_to == "wandb":
            for t in self.trackers:  # one live W&B run per process: the earlier run directories are done
                t.close()
            tracker: _Tracker = _WandB(path, name, tags, config, self.project, self.group)
        else:
            tracker = _TensorBoard(path, name, tags, config, resume, purge_step)
        self.trackers.append(tracker)
        return tracker


_ACTIVE: list[_Tracking] = []


@contextmanager
def tracking(report_to: str = "none", root: str | Path | None = None, project: str = "frugalft",
             group: str | None = None, tags: dict[str, Any] | None = None,
             describe: Callable[[Path], dict[str, Any]] | None = None) -> Iterator[None]:
    """Mirror the metric rows of every RunDir made inside to TensorBoard or W&B (``report_to``); "none" does
    nothing. A run is named by its path under ``root``; its tags are ``tags`` plus ``describe(run path)``
    (e.g. method and seed of a table cell). W&B: project ``project``, runs grouped by ``group``, offline
    unless WANDB_API_KEY (or WANDB_MODE) is set; a missing wandb package is an ImportError naming the install.
    """
    check_report_to(report_to)
    if report_to == "none":
        yield
        return
    if report_to == "wandb":
        import_wandb()  # fail before any work, not at the first logged row
    state = _Tracking(report_to, Path(root) if root is not None else None, project, group, dict(tags or {}),
                      describe)
    _ACTIVE.append(state)
    try:
        yield
    finally:
        _ACTIVE.remove(state)
        state.close()


def _config_tracking(config: Any) -> _Tracking | None:
    """Tracking asked for by a recipe config's ``report_to`` key (SFTConfig's), outside any tracking()
    context: the run's own, closed when the process exits."""
    report_to = getattr(config, "report_to", "none")
    if not isinstance(report_to, str) or check_report_to(report_to) == "none":
        return None
    if report_to == "wandb":
        import_wandb()
    state = _Tracking(report_to, None, "frugalft", None, {}, None)
    atexit.register(state.close)
    return state


def read_jsonl_lines(path: str | Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) of every non-blank line of a JSON-lines file; a malformed line raises a
    ValueError that names the file and the line."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from e


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    return [row for _, row in read_jsonl_lines(path)]


def _plain(v: Any) -> Any:
    """Tensors and numpy scalars become Python numbers so that metrics.jsonl stays plain JSON."""
    if hasattr(v, "item") and callable(v.item):
        try:
            return v.item()
        except (ValueError, RuntimeError):
            pass
    return v


def _file_logger(path: Path) -> logging.Logger:
    logger = logging.getLogger(f"frugalft.run.{path.parent.resolve()}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    if not any(isinstance(h, logging.FileHandler) and Path(h.baseFilename) == path.resolve() for h in logger.handlers):
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
    return logger


class _RateColumn(ProgressColumn):
    def render(self, task) -> Text:  # type: ignore[no-untyped-def]
        return Text(f"{task.speed:.2f}/s" if task.speed else "-/s")


def progress(items: Iterable[T], description: str, total: int | None = None, disable: bool = False) -> Iterator[T]:
    """Iterate with a rich progress bar showing count, rate and ETA (on stderr, so stdout stays clean for
    results; silent when ``disable``)."""
    if disable:
        yield from items
        return
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=False, console=Console(stderr=True)) as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)
