"""``frugalft bench``: run the side-by-side benchmarks in ``benchmarks/`` (ours and the anchor in one run each)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import typer

from frugalft.cli.options import fail


def _benchmarks_dir() -> Path | None:
    """The repository's ``benchmarks/`` folder: beside the current directory, or above an editable install."""
    import frugalft

    for base in (Path.cwd(), Path(frugalft.__file__).resolve().parents[2]):
        if (base / "benchmarks" / "ceilings.py").is_file():
            return base / "benchmarks"
    return None


def register(app: typer.Typer) -> None:
    @app.command("bench")
    def bench(
        names: list[str] = typer.Argument(None, help="Which benchmarks (e.g. selection rollout); default all."),
        quick: bool = typer.Option(False, help="Small sizes: every benchmark in a few minutes (CI)."),
        list_: bool = typer.Option(False, "--list", help="List the benchmarks and exit."),
    ) -> None:
        """Run benchmarks against their anchors; each writes benchmarks/results/<name>.json and prints its rows."""
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
        failed = []
        for name in chosen:
            cmd = [sys.executable, str(scripts[name])] + (["--quick"] if quick else [])
            typer.secho(f"$ {' '.join(cmd)}", bold=True)
            if subprocess.run(cmd).returncode != 0:
                failed.append(name)
        if failed:
            fail(f"benchmark(s) failed: {', '.join(failed)}", code=1)
