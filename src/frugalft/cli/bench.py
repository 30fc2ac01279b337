"""``frugalft bench``: run the side-by-side benchmarks in ``benchmarks/`` (ours and the anchor in one run each).

Each benchmark runs as its own process and writes its JSON into the folder given by ``--out`` (default
``runs/bench``), never into the tracked ``benchmarks/results/`` unless that is the folder asked for. Nothing
waits forever: a benchmark whose anchor library is missing is skipped (or runs only its parts without the
anchor) with a line naming the install command; a benchmark stuck on a child process that failed is stopped;
and ``--timeout`` bounds each benchmark (30 minutes by default with ``--quick``).
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import typer

from frugalft.cli.options import fail


@dataclass(frozen=True)
class Anchor:
    """A library a benchmark compares against, and what to do without it."""

    module: str  # imported by the benchmark
    install: str  # the command that installs it
    without: tuple[str, ...] | None = None  # arguments that run the benchmark's other parts; None: skip it all


ANCHORS: dict[str, tuple[Anchor, ...]] = {
    # apricot-select is the fl20k part's anchor; fl1m and kcenter compare against code of their own.
    "selection": (Anchor("apricot", "pip install apricot-select  (or pip install 'frugalft[bench]')",
                         ("--only", "fl1m,kcenter")),),
}

# How long a failed child process may stay uncollected before the benchmark counts as stuck on it (a parent
# blocked reading a pipe from a child that died never returns).
STUCK_AFTER_S = 10.0
QUICK_TIMEOUT_S = 1800.0


def _benchmarks_dir() -> Path | None:
    """The repository's ``benchmarks/`` folder: beside the current directory, or above an editable install."""
    import frugalft

    for base in (Path.cwd(), Path(frugalft.__file__).resolve().parents[2]):
        if (base / "benchmarks" / "ceilings.py").is_file():
            return base / "benchmarks"
    return None


def _accepts(script: Path, flag: str) -> bool:
    """Whether a benchmark script declares ``flag`` (they all parse their arguments with argparse)."""
    text = script.read_text(encoding="utf-8", errors="replace")
    return f'"{flag}"' in text or f"'{flag}'" in text


def _missing(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except (ImportError, ValueError):
        return True


def _process_table() -> dict[int, tuple[int, str, int]] | None:
    """pid -> (parent pid, state, exit status) from /proc; None where there is no /proc (then only the
    timeout guards against a stuck benchmark)."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        return None
    table = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # the process ended while we looked
            continue
        fields = stat[stat.rfind(")") + 2:].split()  # the command name may hold spaces and parentheses
        # fields[0] is the state (field 3 of proc(5)); field 52, exit_code, is fields[49] (Linux >= 3.5)
        table[int(entry.name)] = (int(fields[1]), fields[0], int(fields[49]) if len(fields) > 49 else 0)
    return table


def _failed_children(root: int) -> list[tuple[int, int]]:
    """(pid, wait status) of the processes under ``root`` that exited with an error and were never collected."""
    table = _process_table()
    if not table:
        return []
    under, frontier = set(), {root}
    while frontier:
        under |= frontier
        frontier = {pid for pid, (ppid, _, _) in table.items() if ppid in frontier and pid not in under}
    return [(pid, status) for pid, (_, state, status) in table.items()
            if pid != root and pid in under and state == "Z" and status != 0]


def _stop(proc: subprocess.Popen) -> None:
    """End the benchmark and everything it started (its own process group)."""
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_benchmark(cmd: list[str], timeout: float | None) -> str | None:
    """Run one benchmark with its output streaming through; None when it succeeded, else why it did not."""
    # A process group of its own, so a stuck benchmark is stopped together with the children it is waiting on.
    proc = subprocess.Popen(cmd, start_new_session=True)
    start, stuck_since = time.monotonic(), None
    try:
        while True:
            try:
                code = proc.wait(timeout=1.0)  # and a look at its children each second
                return None if code == 0 else f"exit status {code}"
            except subprocess.TimeoutExpired:
                pass
            if timeout and time.monotonic() - start > timeout:
                _stop(proc)
                return f"still running after --timeout {timeout:g} s; stopped"
            failed = _failed_children(proc.pid)
            if not failed:
                stuck_since = None
            elif stuck_since is None:
                stuck_since = time.monotonic()
            elif time.monotonic() - stuck_since > STUCK_AFTER_S:
                pid, status = failed[0]
                _stop(proc)
                return (f"its child process {pid} failed (wait status {status}) and the benchmark kept waiting "
                        "on it; stopped (its error is printed above)")
    except KeyboardInterrupt:  # the group is not in the terminal's foreground: pass Ctrl-C on
        _stop(proc)
        raise


def register(app: typer.Typer) -> None:
    @app.command("bench")
    def bench(
        names: list[str] = typer.Argument(None, help="Which benchmarks (e.g. selection rollout); default all."),
        quick: bool = typer.Option(False, help="Small sizes: every benchmark that has them, in a few minutes "
                                               "(CI); the others are skipped."),
        out: Path = typer.Option(Path("runs/bench"), "--out", "-o",
                                 help="Folder for the results, <name>[_quick].json each. The tracked "
                                      "benchmarks/results/ is written only when named here."),
        timeout: float | None = typer.Option(None, help="Seconds one benchmark may run before it is stopped "
                                                 f"(default: {QUICK_TIMEOUT_S:g} with --quick, none without)."),
        list_: bool = typer.Option(False, "--list", help="List the benchmarks and exit."),
    ) -> None:
        """Run benchmarks against their anchors; each prints its rows and writes OUT/<name>[_quick].json."""
        root = _benchmarks_dir()
        if root is None:
            fail("benchmarks/ not found: run from a clone of the frugalft repository")
        scripts = {"ceilings": root / "ceilings.py"}
        scripts.update({p.stem.removeprefix("bench_"): p for p in sorted(root.glob("bench_*.py"))})
        if list_:
            for name, path in scripts.items():
                typer.echo(f"{name:12s} {path}")
            return
        chosen = names or list(scripts)
        unknown = [n for n in chosen if n not in scripts]
        if unknown:
            fail(f"unknown benchmark(s) {unknown}; available: {', '.join(scripts)}")
        if timeout is None and quick:
            timeout = QUICK_TIMEOUT_S
        failed, ran = [], 0
        for name in chosen:
            script = scripts[name]
            if quick and not _accepts(script, "--quick"):
                typer.echo(f"skip {name}: no --quick size (run `frugalft bench {name}` for the full one)")
                continue
            if not _accepts(script, "--out"):
                typer.echo(f"skip {name}: it cannot write its results elsewhere than its own default (no --out)")
                continue
            extra: list[str] = []
            skipped = False
            for anchor in ANCHORS.get(name, ()):
                if not _missing(anchor.module):
                    continue
                if anchor.without is None:
                    typer.echo(f"skip {name}: its anchor {anchor.module} is not installed ({anchor.install})")
                    skipped = True
                    break
                typer.echo(f"{name}: its anchor {anchor.module} is not installed ({anchor.install}); running "
                           f"{' '.join(anchor.without)} only")
                extra += anchor.without
            if skipped:
                continue
            result = out / f"{name}{'_quick' if quick else ''}.json"
            cmd = [sys.executable, str(script), *(["--quick"] if quick else []), *extra, "--out", str(result)]
            typer.secho(f"$ {' '.join(cmd)}", bold=True)
            why = run_benchmark(cmd, timeout)
            ran += 1
            if why is not None:
                typer.secho(f"{name} failed: {why}", fg=typer.colors.RED, err=True)
                failed.append(name)
        if failed:
            fail(f"benchmark(s) failed: {', '.join(failed)}", code=1)
        if ran:
            typer.echo(f"results in {out}/")
