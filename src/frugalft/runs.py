"""A run directory holds everything one command produced, so that it can be read, compared and resumed.

    runs/<name>/
        config.yaml      the resolved config (file + overrides + defaults)
        metrics.jsonl    one JSON object per logged step: {"step": ..., "<metric>": ...}
        run.log          the human log
        checkpoints/     step-00000100/ ... and LATEST (see frugalft.checkpoint)

Metric names are stable across versions (they are what plots and tables key on); a recipe documents its own.

A run directory is a contract between the processes that work in it:

- One process at a time: a RunDir holds an flock on its run.log (released when the process ends, however it
  ends) and records "lock: pid N on host H holds this run directory" there. A second process gets a RunError
  naming that pid; a lock whose holder died (its flock is gone) is taken over, with a message.
- Resuming means the same config: a resumed RunDir compares the recorded config.yaml with the new config and
  refuses (RunError listing ``key: old -> new``) unless every changed key is safe to change on resume
  (``SAFE_ON_RESUME``, a config class's own ``SAFE_ON_RESUME``, or the caller's ``safe_on_resume``).
  ``claim_run(path, restart=True)`` (the CLI's ``--restart``) clears a stage to start it over instead.
  config.yaml is written only after the check passed.
- Starting fresh (``resume=False``) clears the metrics and checkpoints of an earlier run; resuming drops the
  metric rows past the step it resumes from (``truncate_metrics``; a resumed run that logs without calling it
  drops the rows at or after its first step: rows of an attempt that died before its first checkpoint).
- Temporaries of a process that died mid-write (``.step-*.tmp`` ...) are removed on open.

Experiment tracking: inside ``with tracking("tensorboard" | "wandb"):`` every RunDir made also sends its
metric rows to TensorBoard (event files in ``<run>/tensorboard/``) or Weights & Biases (one W&B run per run
directory), under the same names as metrics.jsonl, which stays the source of truth. Outside (the default,
``"none"``) nothing else is written or imported.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import logging
import os
import re
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
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

from frugalft.atomic import remove_stale_temps, write_text
from frugalft.config import dump_yaml, to_dict

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows: run directories are not locked there
    fcntl = None  # type: ignore[assignment]

T = TypeVar("T")


class RunError(ValueError):
    """A run directory refuses a command (another process holds it, or it was made with another config); the
    message is one line, for the CLI."""


# Config keys (dotted) a resumed run may change: they decide where and how often things are reported or saved,
# not what is trained. Deliberately short: e.g. RL ``iterations`` sets the curriculum's level budgets and SFT
# ``max_steps``/``epochs`` the learning-rate schedule, so changing those mid-run is not a resume.
SAFE_ON_RESUME: frozenset[str] = frozenset({
    "out",  # where the run lives (a moved or differently spelled run directory)
    "resume",  # SFTConfig's switch: the rerun that resumes sets it
    "report_to",
    "log_every",
    "save_model",  # write the final model or not
    "checkpoint_every", "checkpoint_interval", "save_every",  # how often state is saved
    "eval_interval", "eval_split", "eval_max_tasks", "eval_greedy",  # RL's periodic evaluation (own RNG)
    "workers", "ray_address", "cpus_per_worker", "gpus_per_worker",  # where RL rollouts play: same episodes
    "reflection_steps", "policy_steps",  # warm-up step caps: constant lr, so a larger cap continues the run
})


class RunDir:
    def __init__(self, path: str | Path, config: Any | None = None, resume: bool = False,
                 safe_on_resume: Iterable[str] = ()):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.checkpoints = self.path / "checkpoints"
        self.metrics_path = self.path / "metrics.jsonl"
        self.log = _file_logger(self.path / "run.log")
        lock_run(self.path)
        # Ours alone now: what a process that died mid-write left is garbage (checkpoints/, best/, ...).
        for folder in (self.path, self.checkpoints, *(p.parent for p in self.path.glob("*/LATEST"))):
            for stale in remove_stale_temps(folder):
                self.log.info("removed %s, left by a process that died while writing it", stale)
        if resume and config is not None:
            check_config(self.path, config, safe_on_resume)
        if config is not None:
            write_text(self.path / "config.yaml", dump_yaml(config))
        if not resume:
            # A fresh run: nothing of an earlier one to log after or to fall back to.
            if self.metrics_path.exists():
                self.metrics_path.unlink()
            shutil.rmtree(self.checkpoints, ignore_errors=True)
        # Tracking (see tracking()): the context active when the run directory was made, else the config's own
        # ``report_to`` if it has one. The tracker opens on the first row, so a run that logs nothing (a
        # finished run reloaded) leaves no empty run behind.
        self._tracking = _ACTIVE[-1] if _ACTIVE else _config_tracking(config)
        self._tracker: _Tracker | None = None
        self._config = config
        self._resume = resume
        self._purge_step: int | None = None
        self._truncated = not resume  # a resumed run's rows past its start are dropped once (truncate_metrics)

    def log_metrics(self, step: int, **metrics: Any) -> None:
        if not self._truncated:
            # Resumed without truncate_metrics (no checkpoint to resume from: it starts over): the rows at or
            # after this step are an earlier attempt's, logged again now.
            self._truncated = True
            if self.metrics_path.exists() and self.metrics_path.stat().st_size:
                self.truncate_metrics(int(step) - 1)
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
        self._truncated = True
        if not self.metrics_path.exists():
            return
        rows = [r for r in self.metrics() if r["step"] <= after_step]
        write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in rows))

    def metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.exists():
            return []
        try:
            return read_metrics(self.metrics_path)
        except ValueError as e:
            # A process killed mid-append leaves a partial last line: skip it (truncate_metrics drops it).
            lines = [line for line in self.metrics_path.read_text(encoding="utf-8").splitlines() if line.strip()]
            try:
                rows = [json.loads(line) for line in lines[:-1]]
            except json.JSONDecodeError:
                raise e from None
            self.log.warning("%s: skipped a partial last line (%r)", self.metrics_path, lines[-1][:80])
            return rows


# ---- one process per run directory -----------------------------------------------------------------------
@dataclass
class _Lock:
    fd: int
    inode: int
    pid: int


_HELD: dict[Path, _Lock] = {}
_LOCK_LINE = re.compile(r"^(?P<when>\S+ \S+) \S+ lock: pid (?P<pid>\d+) on host (?P<host>\S+) "
                        r"(?P<what>holds this run directory|released it)")


def lock_run(path: str | Path) -> None:
    """Hold ``path`` (a run directory, made if missing) for this process until it exits: an flock on its
    run.log, which the OS drops however the process ends. Held already by this process: nothing to do. Held by
    another: a RunError naming its pid and host. A holder that died without releasing it is taken over."""
    path = Path(path).resolve()
    path.mkdir(parents=True, exist_ok=True)
    log_path = path / "run.log"
    held = _HELD.get(path)
    if held is not None:
        with suppress(OSError):
            if held.pid == os.getpid() and os.stat(log_path).st_ino == held.inode:
                return
        _HELD.pop(path)  # run.log was replaced (or this is a forked child): take the lock again
        if held.pid == os.getpid():
            with suppress(OSError):
                os.close(held.fd)
    if fcntl is None:
        return
    fd = os.open(log_path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise RunError(f"run directory {path} is in use by {_holder(log_path)}: one process per run directory "
                       "(wait for it to finish, or stop it)") from None
    log = _file_logger(log_path)
    last = _last_lock_line(log_path)
    if last is not None and last["what"].startswith("holds") and int(last["pid"]) != os.getpid():
        message = (f"run directory {path}: taking over the lock of pid {last['pid']} on host {last['host']} (since "
                   f"{last['when']}), which ended without releasing it")
        log.warning(message)
        print(message, file=sys.stderr)
    log.info("lock: pid %d on host %s holds this run directory", os.getpid(), socket.gethostname())
    if not _HELD:
        atexit.register(_release_all)
    _HELD[path] = _Lock(fd, os.fstat(fd).st_ino, os.getpid())


def release_run(path: str | Path) -> None:
    """Let other processes have ``path`` before this one exits (every RunDir of it in this process loses the
    lock: use it when done with the directory)."""
    path = Path(path).resolve()
    held = _HELD.pop(path, None)
    if held is None or held.pid != os.getpid():
        return
    _file_logger(path / "run.log").info("lock: pid %d on host %s released it", os.getpid(), socket.gethostname())
    with suppress(OSError):
        os.close(held.fd)  # closing the file drops its flock


def _release_all() -> None:
    for path in list(_HELD):
        release_run(path)


def _last_lock_line(log_path: Path) -> dict[str, str] | None:
    """The last lock record of a run.log (``when``, ``pid``, ``host``, ``what``), from its last megabyte."""
    try:
        with open(log_path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - (1 << 20)))
            lines = f.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        if " lock: pid " in line and (m := _LOCK_LINE.match(line)):
            return m.groupdict()
    return None


def _holder(log_path: Path) -> str:
    for _ in range(10):  # the holder writes its record right after taking the lock: give it a moment
        last = _last_lock_line(log_path)
        if last is not None and last["what"].startswith("holds"):
            return f"pid {last['pid']} on host {last['host']} (since {last['when']})"
        time.sleep(0.1)
    return "another process (its pid is not in run.log)"


def claim_run(path: str | Path, restart: bool = False) -> None:
    """What a command does before working in a stage's run directory ``path``: lock it for this process and,
    with ``restart`` (``--restart``), clear it to start the stage over: checkpoints, metrics, config.yaml,
    results, also those of run directories below it (each locked first); every run.log is kept (history)."""
    path = Path(path)
    lock_run(path)
    if not restart:
        return
    for log_path in sorted(path.rglob("run.log")):
        lock_run(log_path.parent)  # a stage still running below is never cleared under it
    cleared = _clear(path)
    _file_logger(path.resolve() / "run.log").info("--restart: cleared %s", ", ".join(cleared) or "nothing")


def _clear(folder: Path) -> list[str]:
    cleared = []
    for p in sorted(folder.iterdir()):
        if p.name == "run.log":
            continue
        if p.is_dir() and not p.is_symlink() and any(p.rglob("run.log")):
            cleared += [f"{p.name}/{c}" for c in _clear(p)]
        elif p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
            cleared.append(p.name + "/")
        else:
            p.unlink()
            cleared.append(p.name)
    return cleared


# ---- the config a run directory was made with ------------------------------------------------------------
_UNSET = object()


def check_config(path: str | Path, config: Any, safe_on_resume: Iterable[str] = ()) -> None:
    """Refuse to resume the run in ``path`` with ``config`` when it differs from the recorded config.yaml in a
    key that is not safe to change on resume (``SAFE_ON_RESUME``, the config class's ``SAFE_ON_RESUME`` and
    ``safe_on_resume``; a key also covers the keys below it). A RunError lists the changes, ``key: old -> new``.
    A run directory with nothing to resume (no checkpoint, no metric row) accepts any config."""
    path = Path(path)
    if not _has_state(path):
        return
    safe = {*SAFE_ON_RESUME, *getattr(config, "SAFE_ON_RESUME", ()), *safe_on_resume}
    changes = recorded_changes(path, config, safe)
    if changes:
        raise RunError(f"{path} was made with another config ({'; '.join(changes)}): resuming it would mix the "
                       "two; rerun with --restart to start this stage over, or without the changes")


def recorded_changes(path: str | Path, config: Any, safe: Iterable[str] = ()) -> list[str]:
    """``config_changes`` between the config.yaml recorded in ``path`` (read in today's keys: the config class's
    ``upgrade_record``) and ``config``; [] when nothing is recorded there."""
    recorded = Path(path) / "config.yaml"
    if not recorded.exists():
        return []
    try:
        old = yaml.safe_load(recorded.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise RunError(f"{recorded} is not valid YAML ({str(e).splitlines()[0]}); rerun with --restart to start "
                       "this stage over") from None
    old = getattr(config, "upgrade_record", lambda d: d)(old)  # keys renamed since it was recorded
    new = yaml.safe_load(dump_yaml(config)) or {}
    return config_changes(old, new, _defaults(config), safe)


def config_changes(old: dict[str, Any], new: dict[str, Any], defaults: dict[str, Any],
                   safe: Iterable[str] = ()) -> list[str]:
    """``key: before -> after`` for each (dotted) key of ``new`` whose value differs from ``old``'s. A key that
    ``old`` lacks (added to the config class since ``old`` was recorded) counts as its value in ``defaults``;
    keys in ``safe`` (and the keys below them) are not compared."""
    flat_old, flat_new, flat_defaults = _flatten(old), _flatten(new), _flatten(defaults)
    changes = []
    for key, after in flat_new.items():
        if any(key == s or key.startswith(s + ".") for s in safe):
            continue
        before = flat_old.get(key, flat_defaults.get(key, _UNSET))
        if not _same(before, after):
            changes.append(f"{key}: {_short(before)} -> {_short(after)}")
    return changes


def _has_state(path: Path) -> bool:
    metrics = path / "metrics.jsonl"
    return any(p.is_dir() for p in (path / "checkpoints").glob("step-*")) or (
        metrics.exists() and metrics.stat().st_size > 0)


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, dict) or (prefix and not data):
        return {prefix.rstrip("."): data}
    out: dict[str, Any] = {}
    for k, v in data.items():
        out.update(_flatten(v, f"{prefix}{k}."))
    return out


def _defaults(config: Any) -> dict[str, Any]:
    """The config class's defaults as plain data ({} when it has required fields or is a mapping)."""
    if not (dataclasses.is_dataclass(config) and not isinstance(config, type)):
        return {}
    try:
        return yaml.safe_load(dump_yaml(type(config)())) or {}
    except Exception:  # noqa: BLE001 - any failure just means "no defaults known"
        return {}


def _same(a: Any, b: Any) -> bool:
    if a == b:
        return True
    if isinstance(a, str) and isinstance(b, str) and a and b:
        with suppress(OSError):  # one path spelled two ways (relative/absolute)
            return os.path.samefile(a, b)
    return False


def _short(v: Any) -> str:
    if v is _UNSET:
        return "(unset)"
    text = v if isinstance(v, str) and v and v.strip() == v and " " not in v else json.dumps(v, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


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
