"""``frugalft rl ...`` as a user runs it (a subprocess of the CLI), on a tiny config: stages, table, errors."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
import torch

TINY = """\
command: frugalft rl table --config tiny.yaml
env: DangerousTaxi
model: tiny-test
device: cpu
seeds: [0]
methods: [oracle, sft, reflect_rl]
data:
  levels: [0]
  tasks_per_level: 3
  teacher: {brief: true}
warmup:
  reflection_steps: 2
  policy_steps: 2
  batch_size: 2
  log_every: 1
rl:
  iterations: 1
  num_envs: 2
  levels: [0]
  max_tasks_per_level: 3
  reflection_tokens: 4
  track_kl: false
eval:
  levels: [0]
  max_tasks: 2
  num_envs: 2
"""


def frugalft(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "frugalft.cli.main", *args], capture_output=True, text=True,
                          timeout=timeout, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    path.write_text(TINY)
    return path


def test_rl_stages_then_table_reuse_each_other(tiny_config, tmp_path):
    run = tmp_path / "run"
    out = frugalft("rl", "data", "--config", str(tiny_config), "--run-dir", str(run))
    assert out.returncode == 0, out.stderr
    counts = json.loads((run / "seed-0" / "data" / "counts.json").read_text())
    assert counts["tasks"] == 3 and f"datasets: {run / 'seed-0' / 'data'}" in out.stdout

    out = frugalft("rl", "table", "--config", str(tiny_config), "--run-dir", str(run))
    assert out.returncode == 0, out.stderr
    assert "data already generated" in out.stdout  # the table reused the data stage
    with open(run / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == ["oracle", "sft", "reflect_rl"]
    assert float(rows[0]["success"]) == 1.0  # the oracle solves every pickup task
    assert all(int(r["episodes"]) == 2 for r in rows)
    table = (run / "table.md").read_text()
    # one seed: the bootstrap resamples its episodes only; the oracle solves all
    assert "| oracle | 1 | 100.0 [100.0, 100.0] | 100 |" in table and "| Reflect-RL |" in table
    assert "| Reflect-RL | SFT only | 1 |" in table.split("Paired comparisons")[1]  # Reflect-RL minus SFT only, paired
    cell = json.loads((run / "seed-0" / "eval" / "test" / "oracle.json").read_text())
    assert cell["split"] == "test" and cell["outcomes"]["success"] == [1, 1] and len(cell["fingerprint"]) == 16
    quality = json.loads((run / "seed-0" / "eval" / "test" / "reflection_quality_reflect.json").read_text())
    assert 0.0 <= quality["word_f1"] <= 1.0 and quality["states"] > 0 and quality["split"] == "test"
    assert "| Reflect-RL warm-up |" in table and "the oracle's test states" in table  # reflection quality
    assert (run / "seed-0" / "rl" / "reflect_rl" / "checkpoints" / "LATEST").exists()
    assert (run / "curves.png").read_bytes()[:4] == b"\x89PNG"


    # Data made by another config is not reused: the README's two taxi tables once shared one folder, and the
    # second silently trained on the first's levels.
    out = frugalft("rl", "data", "--config", str(tiny_config), "--run-dir", str(run), "--set", "data.levels=[0,1]")
    assert out.returncode != 0 and "holds warm-up data made with another config (levels: [0] -> [0, 1])" in (
        out.stderr + out.stdout)

    # A finished cell is not redone: eval prints the stored result.
    out = frugalft("rl", "eval", "--config", str(tiny_config), "--run-dir", str(run), "--method", "oracle",
                   "--split", "test")
    assert out.returncode == 0 and "oracle: success 100.0%" in out.stdout and "test split" in out.stdout
    # rl eval reads the valid split by default, into its own file: the table's test result is untouched.
    out = frugalft("rl", "eval", "--config", str(tiny_config), "--run-dir", str(run), "--method", "oracle")
    assert out.returncode == 0 and "valid split" in out.stdout, out.stderr
    valid = json.loads((run / "seed-0" / "eval" / "valid" / "oracle.json").read_text())
    assert valid["split"] == "valid" and not set(valid["outcomes"]["task_id"]) & set(cell["outcomes"]["task_id"])
    # The same table on valid: its own cells and its own reflection quality, never the test table's.
    out = frugalft("rl", "table", "--config", str(tiny_config), "--run-dir", str(run), "--set", "eval.split=valid")
    assert out.returncode == 0, out.stderr
    assert "the oracle's valid states" in (run / "table.md").read_text()
    valid_quality = json.loads((run / "seed-0" / "eval" / "valid" / "reflection_quality_reflect.json").read_text())
    assert valid_quality["split"] == "valid" and valid_quality["made_by"]["split"] == "valid"
    assert json.loads((run / "seed-0" / "eval" / "test" / "reflection_quality_reflect.json").read_text()) == quality
    # rl compare: a run against itself differs by exactly 0 on every seed
    out = frugalft("rl", "compare", str(run), str(run), "--method", "reflect_rl", "--method", "oracle")
    assert out.returncode == 0, out.stderr
    assert "| Reflect-RL | 1 |" in out.stdout and "| +0.0 [+0.0, +0.0] | +0.0 |" in out.stdout
    assert "| oracle | 1 | 100.0 | 100.0 | +0.0 [+0.0, +0.0] | +0.0 |" in out.stdout
    # --against: a row minus another row (of a second table split for time); here the oracle minus SFT only
    out = frugalft("rl", "compare", str(run), str(run), "--method", "oracle", "--against", "sft", "--split", "test")
    assert out.returncode == 0, out.stderr
    sft_rate = json.loads((run / "seed-0" / "eval" / "test" / "sft.json").read_text())["success"]
    assert f"| oracle (A) minus SFT only (B) | 1 | 100.0 | {100 * sft_rate:.1f} | {100 * (1 - sft_rate):+.1f}" in out.stdout
    # A copied run directory resumes its RL runs (their warm-up paths moved with it) and gives the same cell.
    import shutil

    moved = tmp_path / "moved"
    shutil.copytree(run, moved)
    (moved / "seed-0" / "eval" / "test" / "reflect_rl.json").unlink()
    out = frugalft("rl", "eval", "--config", str(tiny_config), "--run-dir", str(moved), "--method", "reflect_rl",
                   "--split", "test")
    assert out.returncode == 0, out.stderr
    again = json.loads((moved / "seed-0" / "eval" / "test" / "reflect_rl.json").read_text())
    first = json.loads((run / "seed-0" / "eval" / "test" / "reflect_rl.json").read_text())
    assert again["outcomes"] == first["outcomes"] and again["fingerprint"] == first["fingerprint"]
    # A cell made by another config is never handed back as this config's result.
    out = frugalft("rl", "eval", "--config", str(tiny_config), "--run-dir", str(run), "--method", "oracle",
                   "--split", "test", "--set", "eval.max_tasks=3")
    assert out.returncode != 0 and "was made with another config" in out.stdout + out.stderr


def test_rl_cli_errors_are_one_line(tiny_config, tmp_path):
    # In-process (typer's runner): these fail before any model loads, so a subprocess would only add start-up.
    from typer.testing import CliRunner

    from frugalft.cli.rl import app

    def run(*args: str):
        return CliRunner().invoke(app, list(args))

    out = run("train", "--config", str(tiny_config), "--run-dir", str(tmp_path), "--method", "sft")
    assert out.exit_code == 2 and "unknown method 'sft'; valid: rl, sft_rl_noreflect" in out.output
    out = run("data", "--config", str(tiny_config), "--set", "data.bogus=1")
    assert out.exit_code == 2 and "unknown config key data.bogus" in out.output
    out = run("table", "--config", str(tiny_config), "--set", "methods=[sft, magic]")
    assert out.exit_code == 2 and "unknown methods ['magic']" in out.output
    out = run("table", "--config", str(tiny_config), "--run-dir", str(tmp_path / "t"), "--bound-memory")
    assert out.exit_code == 2 and "--bound-memory bounds the seed processes of --jobs N" in out.output
    assert out.exception is None or isinstance(out.exception, SystemExit)


def test_table_with_one_process_per_seed(tiny_config, tmp_path):
    """--jobs 2: each seed in its own process (logging to seed-S/table.log), then one table of every cell."""
    run = tmp_path / "run"
    out = frugalft("rl", "table", "--config", str(tiny_config), "--run-dir", str(run), "--jobs", "2",
                   "--set", "seeds=[0, 1]", "--set", "methods=[oracle, sft]")
    assert out.returncode == 0, out.stderr
    assert "seed 0: done" in out.stdout and "seed 1: done" in out.stdout
    for seed in (0, 1):
        assert "sft (test): success" in (run / f"seed-{seed}" / "table.log").read_text()
        assert (run / f"seed-{seed}" / "eval" / "test" / "sft.json").exists()
    with open(run / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["method"], r["seed"]) for r in rows] == [("oracle", "0"), ("sft", "0"), ("oracle", "1"), ("sft", "1")]
    assert "seeds 0, 1" in (run / "table.md").read_text()
    # each cell records where its process spent its time; `rl times` reads them back
    sft = json.loads((run / "seed-0" / "eval" / "test" / "sft.json").read_text())
    assert set(sft["stage_seconds"]) == {"warmup", "rl", "eval"} and sft["stage_seconds"]["warmup"] > 0
    assert sum(sft["stage_seconds"].values()) == pytest.approx(sft["seconds"], abs=0.2)
    assert sft["started"] + sft["seconds"] == pytest.approx(sft["finished"], abs=0.2)
    # and the machine that computed it: a seed process of --jobs runs at one thread
    assert sft["machine"]["threads"] == 1 and sft["machine"]["torch"] == torch.__version__
    assert "machine" not in rows[0]  # a record in the json, not a results.csv column
    # one seed with --jobs: still a seed process at one thread, so that a cell rerun alone is the table's cell
    one = tmp_path / "one"
    out = frugalft("rl", "table", "--config", str(tiny_config), "--run-dir", str(one), "--jobs", "2",
                   "--set", "seeds=[1]", "--set", "methods=[oracle]")
    assert out.returncode == 0, out.stderr
    assert "seed 1: done" in out.stdout
    assert json.loads((one / "seed-1" / "eval" / "test" / "oracle.json").read_text())["machine"]["threads"] == 1
    out = frugalft("rl", "times", str(run))
    assert out.returncode == 0, out.stderr
    assert "2 seed(s)" in out.stdout and out.stdout.count("\n| 0 | ") == 1 and "| 1 | " in out.stdout


def test_a_variants_own_warm_up_settings_reach_its_stage(tiny_config, tmp_path):
    """``variant_warmup``: the no-reflection policy trains 3 steps where the reflect variant's players train 2."""
    from frugalft.config import load_config
    from frugalft.reflect.table import ExperimentConfig, run_warmup

    cfg = load_config(ExperimentConfig, str(tiny_config), ["variant_warmup={noreflect: {policy_steps: 3}}"])
    run_warmup(cfg, tmp_path, 0, "noreflect", log=lambda *_: None)
    run_warmup(cfg, tmp_path, 0, "reflect", log=lambda *_: None)
    warm = tmp_path / "seed-0" / "warmup"
    assert json.loads((warm / "noreflect" / "policy" / "summary.json").read_text())["steps_run"] == 3
    assert json.loads((warm / "reflect" / "policy" / "summary.json").read_text())["steps_run"] == 2
    assert json.loads((warm / "reflect" / "reflection" / "summary.json").read_text())["steps_run"] == 2
    # matched steps (a policy from the reflection model): its cap plus the *reflect* variant's reflection cap
    cfg = load_config(ExperimentConfig, str(tiny_config), [
        "warmup.policy_init=reflection", "variant_warmup={reflect: {reflection_steps: 3}}"])
    run_warmup(cfg, tmp_path / "matched", 0, "noreflect_rinit", log=lambda *_: None)
    warm = tmp_path / "matched" / "seed-0" / "warmup"
    assert json.loads((warm / "reflect" / "reflection" / "summary.json").read_text())["steps_run"] == 3
    assert json.loads((warm / "noreflect_rinit" / "policy" / "summary.json").read_text())["steps_run"] == 2 + 3


def test_packaged_rl_configs_load():
    from importlib import resources

    from frugalft.config import load_config
    from frugalft.reflect.table import ExperimentConfig

    folder = resources.files("frugalft") / "configs" / "rl"
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".yaml"))
    assert {"quickstart.yaml", "taxi_cpu.yaml", "autoexplore_cpu.yaml", "taxi_gpu.yaml"} <= set(names)
    for name in names:
        cfg = load_config(ExperimentConfig, str(folder / name))
        assert cfg.methods and cfg.seeds, name


def test_control_row_extra_task_set_and_extra_seeds(tmp_path):
    """The control (a policy from the trained reflection model that reads no reflection), an extra task set (the
    paper's 300 Taxi starts) and a method on more seeds than the others, in one small table."""
    from frugalft.config import load_config
    from frugalft.reflect.table import ExperimentConfig, eval_path, run_table

    cfg_path = tmp_path / "ctl.yaml"
    cfg_path.write_text(TINY.replace("seeds: [0]", "seeds: [0]\nextra_seeds: {sft_noreflect_rinit: [1]}")
                        .replace("methods: [oracle, sft, reflect_rl]", "methods: [oracle, sft_noreflect_rinit]")
                        .replace("eval:\n  levels: [0]", "eval:\n  extra: {paper: {task_set: paper}}\n  levels: [2]"))
    cfg = load_config(ExperimentConfig, str(cfg_path))
    assert cfg.eval.extra == {"paper": {"task_set": "paper"}} and cfg.all_seeds() == [0, 1]
    run = tmp_path / "run"
    run_table(cfg, run, log=lambda *_: None)
    # the control's policy starts from the Reflect-RL variant's trained reflection model, which exists
    for seed in (0, 1):
        assert (run / f"seed-{seed}" / "warmup" / "reflect" / "reflection" / "model" / "config.json").exists()
        assert (run / f"seed-{seed}" / "warmup" / "noreflect_rinit" / "policy" / "model" / "config.json").exists()
    assert not (run / "seed-1" / "eval" / "test" / "oracle.json").exists()  # oracle: seed 0 only
    paper = json.loads(eval_path(run, 0, "oracle", "test", "paper").read_text())
    assert paper["episodes"] == 300 and sum(paper["outcomes"]["success"]) == 242  # the 80.7% ceiling
    table = (run / "table.md").read_text()
    assert "| oracle | 1 | 100.0 [100.0, 100.0] | 100 |" in table and "80.7 [" in table
    assert "| SFT only, no reflection, policy from the reflection model | 2 |" in table


def test_a_finished_warmup_is_not_reused_for_another_config(tiny_config, tmp_path):
    """A finished warm-up stage is handed back only to the config that made it: a changed learning rate is a
    one-line error naming the key, not the old model under the new config.yaml."""
    from frugalft.config import load_config
    from frugalft.reflect.table import ExperimentConfig, run_warmup
    from frugalft.runs import RunError

    cfg = load_config(ExperimentConfig, str(tiny_config))
    run = tmp_path / "run"
    first = run_warmup(cfg, run, 0, "reflect", log=lambda *_: None)
    assert run_warmup(cfg, run, 0, "reflect", log=lambda *_: None) == first  # same config: reused
    changed = load_config(ExperimentConfig, str(tiny_config), ["warmup.lr=0.5"])
    with pytest.raises(RunError, match=r"lr: 0.001 -> 0.5"):
        run_warmup(changed, run, 0, "reflect", log=lambda *_: None)


def test_a_seed_process_killed_by_a_signal_resumes_once_alone(tmp_path, monkeypatch, capsys):
    """The out-of-memory killer took a seed's process once (two ALFWorld seeds near 24 GB): the driver reruns
    that seed after the others, with nothing beside it; a second kill, a SIGTERM or an ordinary failure fails the
    command."""
    import os
    import time

    import typer

    from frugalft.cli.rl import _seeds_in_processes

    live: list[object] = []
    started: list[tuple[int, int]] = []  # (seed, processes alive beside it when it started)
    environments: list[dict] = []
    outcomes = {0: [0], 1: [-9, 0], 2: [0]}

    class FakeProcess:
        def __init__(self, cmd, **kwargs):
            self.seed = int(cmd[cmd.index("--set", cmd.index("--run-dir")) + 1][len("seeds=["):-1])
            started.append((self.seed, len(live)))
            environments.append(kwargs["env"])
            live.append(self)
            self.returncode, self.polls = None, 0

        def poll(self):
            self.polls += 1
            if self.polls < 2:
                return None
            live.remove(self) if self in live else None
            self.returncode = outcomes[self.seed].pop(0)
            return self.returncode

    monkeypatch.setattr(subprocess, "Popen", FakeProcess)
    monkeypatch.setattr(time, "sleep", lambda seconds: None)
    methods = {s: ["sft"] for s in outcomes}
    _seeds_in_processes(None, [], tmp_path, None, [0, 1, 2], 2, methods)
    assert started == [(0, 0), (1, 1), (2, 0), (1, 0)]  # seed 1's second try: alone, after seeds 0 and 2
    out = capsys.readouterr().out
    assert "seed 1: killed by signal 9" in out and "seed 1: resumed alone" in out and out.count("done") == 3
    # one thread each; native memory as the user's environment has it (--bound-memory: bounded, next)
    assert {e["OMP_NUM_THREADS"] for e in environments} == {"1"}
    assert [e.get("MALLOC_MMAP_THRESHOLD_") for e in environments] == [os.environ.get("MALLOC_MMAP_THRESHOLD_")] * 4
    outcomes.update({0: [0], 1: [0], 2: [0]})
    environments.clear()
    _seeds_in_processes(None, [], tmp_path, None, [0, 1, 2], 2, methods, bound_memory=True)
    assert [e.get("MALLOC_MMAP_THRESHOLD_") for e in environments] == [os.environ.get("MALLOC_MMAP_THRESHOLD_",
                                                                                       "131072")] * 3
    capsys.readouterr()

    outcomes.update({0: [3], 1: [-9, -9], 2: [-15]})
    started.clear()
    with pytest.raises(typer.Exit):
        _seeds_in_processes(None, [], tmp_path, None, [0, 1, 2], 2, methods)
    # seed 0's exit 3 (a bug, not memory) and seed 2's SIGTERM (someone stopped it) are not retried
    assert started == [(0, 0), (1, 1), (2, 0), (1, 0)]
    err = capsys.readouterr().err
    assert "seed 0 (see" in err and "seed 1 (see" in err and "seed 2 (see" in err
