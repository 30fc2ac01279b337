"""examples/count_to, a custom environment and teacher named by import path in a config, through the CLI:
``rl data -> rl warmup -> rl train -> rl eval`` on tiny settings, and ``rl data`` as a user runs the
``frugalft`` script from the examples folder (no PYTHONPATH: the current directory is searched)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CONFIG = EXAMPLES / "count_to" / "config.yaml"
TINY = ["model=tiny-test", "data.levels=[0]", "data.tasks_per_level=3", "warmup.reflection_steps=2",
        "warmup.policy_steps=2", "warmup.batch_size=2", "rl.iterations=1", "rl.num_envs=2", "rl.levels=[0]",
        "rl.max_tasks_per_level=3", "rl.reflection_tokens=4", "eval.levels=[0]", "eval.max_tasks=2",
        "eval.num_envs=2"]
SETS = [a for s in TINY for a in ("--set", s)]


@pytest.mark.usefixtures("one_thread")
def test_count_to_example_data_warmup_train_eval(tmp_path, monkeypatch):
    # In-process (typer's runner): the stages share one import of torch, which is most of a stage's time here.
    from typer.testing import CliRunner

    from frugalft.cli.rl import app

    monkeypatch.syspath_prepend(str(EXAMPLES))  # what PYTHONPATH=examples does for the frugalft script
    monkeypatch.chdir(tmp_path)  # the default run directory: runs/rl/<the env's class name>

    def rl(*args: str) -> str:
        out = CliRunner().invoke(app, [*args, "--config", str(CONFIG), *SETS])
        assert out.exit_code == 0, f"rl {args[0]}: {out.output}\n{out.exception!r}"
        return out.output

    seed = tmp_path / "runs" / "rl" / "CountTo" / "seed-0"
    rl("data")
    counts = json.loads((seed / "data" / "counts.json").read_text())
    assert counts["env"] == "count_to.count_env:CountTo" and counts["teacher"] == "count_to"
    assert counts["tasks"] == 3 and counts["corrective_steps"] > 0
    rl("warmup")
    assert {p.name for p in (seed / "warmup" / "reflect").iterdir()} >= {"reflection", "policy"}
    rl("train")
    assert (seed / "rl" / "reflect_rl" / "checkpoints" / "LATEST").exists()
    out = rl("eval", "--method", "reflect_rl")
    success = float(re.search(r"reflect_rl: success ([0-9.]+)%", out).group(1))
    assert 0.0 <= success <= 100.0
    (cell,) = (seed / "eval").rglob("reflect_rl.json")
    assert 0.0 <= json.loads(cell.read_text())["success"] <= 1.0


def test_frugalft_script_finds_the_example_from_its_folder(tmp_path):
    script = Path(sys.executable).with_name("frugalft")
    if not script.exists():
        pytest.skip("no frugalft console script next to this interpreter")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([str(script), "rl", "data", "--config", str(CONFIG), "--run-dir", str(tmp_path), *SETS],
                         cwd=EXAMPLES, capture_output=True, text=True, timeout=300,
                         env={**env, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    assert json.loads((tmp_path / "seed-0" / "data" / "counts.json").read_text())["steps"] > 0
