"""``frugalft bench`` never hangs and writes where it is told: fake benchmark scripts in a scratch checkout."""

from __future__ import annotations

import json
import textwrap
import time

import pytest
import typer
from typer.testing import CliRunner

from frugalft.cli import bench as bench_cli

app = typer.Typer()
bench_cli.register(app)
app.command("noop", hidden=True)(lambda: None)  # two commands: typer keeps `bench` as a subcommand name
runner = CliRunner()

HEADER = """\
import argparse, json, sys
from pathlib import Path

ap = argparse.ArgumentParser()
ap.add_argument("--quick", action="store_true")
ap.add_argument("--only", default="a,b")
ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "x.json")
args = ap.parse_args()
"""
WRITE = """
args.out.parent.mkdir(parents=True, exist_ok=True)
args.out.write_text(json.dumps({"argv": sys.argv[1:]}))
"""
# What bench_selection.in_child did with apricot missing: the forked child dies on the import, and the parent
# waits forever on a pipe whose sending end it holds itself.
STUCK = """
import multiprocessing as mp

def target(send):
    import frugalft_no_such_anchor  # noqa: F401
    send.send({})

ctx = mp.get_context("fork")
recv, send = ctx.Pipe(duplex=False)
ctx.Process(target=target, args=(send,)).start()
recv.recv()
"""


@pytest.fixture()
def checkout(tmp_path, monkeypatch):
    """A folder that looks like a clone (benchmarks/ceilings.py) and is the current directory."""
    root = tmp_path / "benchmarks"
    root.mkdir()
    scripts = {
        "ceilings.py": HEADER + WRITE,
        "bench_ok.py": HEADER + WRITE,
        "bench_stuck.py": HEADER + STUCK,
        "bench_anchored.py": "import frugalft_no_such_anchor\n" + HEADER + WRITE,
        "bench_partial.py": HEADER + WRITE,
        "bench_full_only.py": HEADER.replace('ap.add_argument("--quick", action="store_true")\n', "") + WRITE,
    }
    for name, text in scripts.items():
        (root / name).write_text(textwrap.dedent(text))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(bench_cli, "STUCK_AFTER_S", 1.0)
    monkeypatch.setattr(bench_cli, "ANCHORS", {
        "anchored": (bench_cli.Anchor("frugalft_no_such_anchor", "pip install no-such-anchor"),),
        "partial": (bench_cli.Anchor("frugalft_no_such_anchor", "pip install no-such-anchor", ("--only", "b")),),
    })
    return tmp_path


def _bench(*args):
    return runner.invoke(app, ["bench", *map(str, args)])


def test_results_go_to_the_out_folder_not_the_tracked_one(checkout):
    r = _bench("ok", "ceilings", "--quick")
    assert r.exit_code == 0, r.output
    assert json.loads((checkout / "runs/bench/ok_quick.json").read_text())["argv"][0] == "--quick"
    assert (checkout / "runs/bench/ceilings_quick.json").exists()
    assert not (checkout / "benchmarks/results").exists()
    r = _bench("ok", "--out", checkout / "elsewhere")
    assert r.exit_code == 0, r.output
    assert (checkout / "elsewhere/ok.json").exists() and not (checkout / "benchmarks/results").exists()


def test_a_failed_child_ends_the_wait(checkout):
    t = time.monotonic()
    r = _bench("stuck", "ok", "--quick", "--timeout", 60)  # the timeout only keeps a regression from hanging CI
    elapsed = time.monotonic() - t
    assert r.exit_code == 1, r.output
    assert "stuck failed: its child process" in r.output and "benchmark(s) failed: stuck" in r.output
    assert elapsed < 30, elapsed
    assert (checkout / "runs/bench/ok_quick.json").exists()  # the next benchmark still ran


def test_the_timeout_stops_a_benchmark(checkout):
    (checkout / "benchmarks/bench_slow.py").write_text(HEADER + "import time\ntime.sleep(600)\n")
    t = time.monotonic()
    r = _bench("slow", "--timeout", 1)
    assert r.exit_code == 1 and "still running after --timeout 1 s" in r.output, r.output
    assert time.monotonic() - t < 30


def test_a_missing_anchor_is_a_one_line_skip(checkout):
    r = _bench("anchored", "partial", "--quick")
    assert r.exit_code == 0, r.output
    skip = [line for line in r.output.splitlines() if line.startswith("skip anchored")]
    assert skip == ["skip anchored: its anchor frugalft_no_such_anchor is not installed (pip install no-such-anchor)"]
    assert not (checkout / "runs/bench/anchored_quick.json").exists()
    # a benchmark with parts that need no anchor runs those
    assert "running --only b only" in r.output
    argv = json.loads((checkout / "runs/bench/partial_quick.json").read_text())["argv"]
    assert argv[argv.index("--only") + 1] == "b"


def test_quick_skips_benchmarks_without_a_quick_size(checkout):
    r = _bench("full_only", "--quick")
    assert r.exit_code == 0 and "skip full_only: no --quick size" in r.output, r.output
    assert _bench("full_only").exit_code == 0
    assert (checkout / "runs/bench/full_only.json").exists()


def test_the_real_benchmarks_declare_what_bench_passes(monkeypatch):
    """Every real script takes --out (where bench puts its results), and the anchor's partial run is valid."""
    root = bench_cli._benchmarks_dir()
    if root is None:
        pytest.skip("not run from a clone")
    scripts = [root / "ceilings.py", *root.glob("bench_*.py")]
    assert scripts and all(bench_cli._accepts(s, "--out") for s in scripts)
    (anchor,) = bench_cli.ANCHORS["selection"]
    text = (root / "bench_selection.py").read_text()
    assert anchor.without[0] in text and all(f'"{part}" in parts' in text for part in anchor.without[1].split(","))
