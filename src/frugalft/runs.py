"""A run directory holds everything one command produced, so that it can be read, compared and resumed.

    runs/<name>/
        config.yaml      the resolved config (file + overrides + defaults)
        metrics.jsonl    one JSON object per logged step: {"step": ..., "<metric>": ...}
        run.log          the human log
        checkpoints/     step-00000100/ ... and LATEST (see frugalft.checkpoint)

Metric names are stable across versions (they are what plots and tables key on); a recipe documents its own.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator
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
from frugalft.config import dump_yaml

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

    def log_metrics(self, step: int, **metrics: Any) -> None:
        row = {"step": int(step), "time": round(time.time(), 3), **{k: _plain(v) for k, v in metrics.items()}}
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")

    def truncate_metrics(self, after_step: int) -> None:
        """On resume, drop rows logged after the checkpoint we resume from: they will be logged again."""
        if not self.metrics_path.exists():
            return
        rows = [r for r in read_metrics(self.metrics_path) if r["step"] <= after_step]
        write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in rows))

    def metrics(self) -> list[dict[str, Any]]:
        return read_metrics(self.metrics_path) if self.metrics_path.exists() else []


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
