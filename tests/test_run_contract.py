"""A run directory is a contract: one process at a time, and a resume only with the config it was made with
(unless the changed keys are safe, or ``--restart`` starts the stage over)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from frugalft.runs import RunDir, RunError, claim_run, read_metrics


def _python(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
                          timeout=timeout)


# ---- one process per run directory -----------------------------------------------------------------------
def test_a_second_process_is_refused_with_the_holders_pid(tmp_path):
    run = RunDir(tmp_path / "run")
    RunDir(tmp_path / "run", resume=True)  # this process again: fine
    res = _python("""
        import sys
        from frugalft.runs import RunDir, RunError
        try:
            RunDir(sys.argv[1], resume=True)
        except RunError as e:
            print(e)
            sys.exit(3)
        """, str(run.path))
    assert res.returncode == 3, res.stderr
    assert f"is in use by pid {os.getpid()} on host" in res.stdout and len(res.stdout.strip().splitlines()) == 1


def test_a_dead_holders_lock_is_taken_over_and_a_finished_one_released(tmp_path, capsys):
    path = tmp_path / "run"
    res = _python("""
        import os, signal, sys
        from frugalft.runs import RunDir
        RunDir(sys.argv[1]).log_metrics(1, loss=1.0)
        print(os.getpid(), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)  # no atexit, no cleanup: as a killed training run
        """, str(path))
    assert res.returncode == -signal.SIGKILL
    dead = int(res.stdout)
    RunDir(path, resume=True)
    assert f"taking over the lock of pid {dead}" in capsys.readouterr().err
    assert f"taking over the lock of pid {dead}" in (path / "run.log").read_text()

    # A process that ends normally releases the lock: the next one takes it without a word.
    other = tmp_path / "other"
    res = _python("import sys; from frugalft.runs import RunDir; RunDir(sys.argv[1])", str(other))
    assert res.returncode == 0, res.stderr
    assert "released it" in (other / "run.log").read_text()
    RunDir(other, resume=True)
    assert "taking over" not in capsys.readouterr().err


# ---- resuming with another config ------------------------------------------------------------------------
@dataclass
class _Lora:
    r: int = 8
    alpha: int = 16


@dataclass
class _Cfg:
    model: str = "tiny-test"
    lr: float = 0.001
    log_every: int = 10  # safe on resume (SAFE_ON_RESUME)
    lora: _Lora = field(default_factory=_Lora)
    data: str = "data.jsonl"


def _started(path: Path, cfg: _Cfg) -> RunDir:
    run = RunDir(path, config=cfg, resume=True)
    run.log_metrics(1, loss=2.0)
    (run.checkpoints / "step-00000001").mkdir(parents=True)
    return run


def test_a_changed_config_is_refused_listing_the_keys_and_leaves_config_yaml_alone(tmp_path):
    path = tmp_path / "run"
    _started(path, _Cfg())
    recorded = (path / "config.yaml").read_text()
    with pytest.raises(RunError) as info:
        RunDir(path, config=_Cfg(model="tiny", lr=0.5, lora=_Lora(r=4)), resume=True)
    message = str(info.value)
    assert "model: tiny-test -> tiny" in message and "lr: 0.001 -> 0.5" in message and "lora.r: 8 -> 4" in message
    assert "log_every" not in message and "--restart" in message and "\n" not in message
    assert (path / "config.yaml").read_text() == recorded  # not overwritten before the check
    assert [r["step"] for r in read_metrics(path / "metrics.jsonl")] == [1]


def test_safe_keys_resume_and_are_recorded(tmp_path):
    path = tmp_path / "run"
    _started(path, _Cfg())
    RunDir(path, config=_Cfg(log_every=1), resume=True)
    assert yaml.safe_load((path / "config.yaml").read_text())["log_every"] == 1
    # The caller (or the config class, as SAFE_ON_RESUME) may declare more; a section covers its keys.
    RunDir(path, config=_Cfg(log_every=1, lora=_Lora(alpha=1)), resume=True, safe_on_resume={"lora"})
    with pytest.raises(RunError, match="data: data.jsonl -> other.jsonl"):
        RunDir(path, config=_Cfg(data="other.jsonl"), resume=True, safe_on_resume={"lora"})

    @dataclass
    class Declares(_Cfg):
        SAFE_ON_RESUME = ("data",)

    RunDir(path, config=Declares(data="other.jsonl", lora=_Lora(alpha=1)), resume=True)


def test_what_is_not_a_change(tmp_path, monkeypatch):
    # A key added to the config class since the run was made is its default; a path spelled another way is
    # the same path; a directory with nothing to resume takes any config.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data.jsonl").write_text("")
    path = tmp_path / "run"
    _started(path, _Cfg())
    recorded = yaml.safe_load((path / "config.yaml").read_text())
    del recorded["lora"]
    (path / "config.yaml").write_text(yaml.safe_dump(recorded))
    RunDir(path, config=_Cfg(data=str(tmp_path / "data.jsonl")), resume=True)
    fresh = tmp_path / "fresh"
    RunDir(fresh, config=_Cfg(), resume=True)
    RunDir(fresh, config=_Cfg(lr=0.5), resume=True)


def test_restart_clears_the_stage_but_keeps_its_log(tmp_path):
    stage = tmp_path / "warmup" / "reflect"
    for part in ("reflection", "policy"):
        _started(stage / part, _Cfg())
    (stage / "policy_data.jsonl").write_text("{}\n")
    claim_run(stage)  # without --restart: only the lock
    assert (stage / "policy" / "checkpoints").is_dir()
    claim_run(stage, restart=True)
    assert sorted(str(p.relative_to(stage)) for p in stage.rglob("*")) == [
        "policy", "policy/run.log", "reflection", "reflection/run.log", "run.log"]
    run = RunDir(stage / "policy", config=_Cfg(lr=0.5), resume=True)  # a fresh start: any config
    assert run.metrics() == [] and yaml.safe_load((stage / "policy" / "config.yaml").read_text())["lr"] == 0.5


def test_restart_refuses_while_another_process_holds_a_stage_below(tmp_path):
    stage = tmp_path / "stage"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from frugalft.runs import RunDir; RunDir(sys.argv[1]); print('held', "
         "flush=True); sys.stdin.read()", str(stage / "policy")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        (stage / "policy" / "metrics.jsonl").write_text('{"step": 1}\n')
        with pytest.raises(RunError, match=f"in use by pid {holder.pid}"):
            claim_run(stage, restart=True)
        assert (stage / "policy" / "metrics.jsonl").exists()
    finally:
        holder.communicate("", timeout=30)


# ---- metrics on resume -----------------------------------------------------------------------------------
def test_a_run_resumed_without_a_checkpoint_logs_each_step_once(tmp_path):
    # Killed before its first checkpoint: the rerun starts at 0 and does not call truncate_metrics (sft).
    run = RunDir(tmp_path / "r", resume=True)
    for step in (10, 20, 30):
        run.log_metrics(step, loss=1.0)
    with open(run.metrics_path, "a") as f:
        f.write('{"step": 40, "lo')  # killed mid-append
    run = RunDir(tmp_path / "r", resume=True)
    for step in (10, 20):
        run.log_metrics(step, loss=2.0)
    assert [(r["step"], r["loss"]) for r in run.metrics()] == [(10, 2.0), (20, 2.0)]


# ---- the real callers --------------------------------------------------------------------------------------
def test_a_warmup_killed_after_a_checkpoint_refuses_a_new_lr_and_resumes_a_longer_cap(tmp_path):
    from frugalft.reflect.warmup import WarmupConfig, _fit

    torch.manual_seed(0)
    x, w = torch.randn(32, 3), torch.tensor([[1.0], [-2.0], [0.5]])
    cfg = WarmupConfig(lr=0.001, batch_size=8, checkpoint_every=5, log_every=5, autocast="off", seed=0)

    def fit(config: WarmupConfig, steps: int, crash_at: int | None = None) -> list[str]:
        model = torch.nn.Linear(3, 1, bias=False)
        calls, logs = {"n": 0}, []

        def loss_of(idx: list[int]) -> torch.Tensor:
            calls["n"] += 1
            if calls["n"] == crash_at:
                raise KeyboardInterrupt("killed")
            return ((model(x[idx]) - x[idx] @ w) ** 2).mean()

        _fit("toy", model, loss_of, list(range(32)), steps, config.patience, config,
             RunDir(tmp_path / "w", config, resume=True), logs.append)
        return logs

    with pytest.raises(KeyboardInterrupt):
        fit(cfg, 20, crash_at=8)  # after the step-5 checkpoint
    with pytest.raises(RunError, match=r"lr: 0.001 -> 0.5"):
        fit(replace(cfg, lr=0.5), 20)
    assert yaml.safe_load((tmp_path / "w" / "config.yaml").read_text())["lr"] == 0.001
    logs = fit(replace(cfg, policy_steps=600), 20)  # a step cap is safe to change
    assert any("resuming from" in m and "(step 5)" in m for m in logs)
    assert [r["step"] for r in read_metrics(tmp_path / "w" / "metrics.jsonl")] == [1, 5, 10, 15, 20]


def test_rl_train_refuses_a_changed_lr_on_resume(tmp_path):
    from frugalft.reflect.train import RLConfig, train

    cfg = RLConfig(policy_model="tiny-test", reflection_model=None, iterations=2, num_envs=2, checkpoint_interval=1,
                   task_ids=["pickup-002", "pickup-084"], lr=1e-3, device="cpu", seed=5, eval_interval=0)
    train(cfg, tmp_path / "rl", stop_after=1)
    with pytest.raises(RunError, match=r"lr: 0.001 -> 0.5"):
        train(replace(cfg, lr=0.5), tmp_path / "rl")
    assert yaml.safe_load((tmp_path / "rl" / "config.yaml").read_text())["lr"] == 0.001
    out = train(replace(cfg, workers=0, eval_max_tasks=3), tmp_path / "rl")  # safe keys: resumes
    assert out["checkpoint"].endswith("step-00000002")


# ---- the CLI: one line, and --restart ----------------------------------------------------------------------
def _sft(tmp_path: Path, *extra: str):
    from frugalft.cli.main import _add_subapps, app

    _add_subapps()
    data = tmp_path / "train.jsonl"
    if not data.exists():
        data.write_text("".join(json.dumps({"prompt": f"Echo {w}.", "response": w}) + "\n"
                                for w in ["red", "green", "blue", "cyan", "teal", "gold"]))
    args = ["sft", "--set", "model=tiny-test", "--set", f"train={data}", "--set", "max_steps=2", "--set",
            "batch_size=4", "--set", "eval_fraction=0.25", "--set", "finetune=full", "--set", "save_model=false",
            "--set", "resume=true", "--set", f"out={tmp_path / 'run'}", *extra]
    return CliRunner().invoke(app, args)


def _error_line(res) -> str:
    """The one ``error: ...`` line of a failed command (besides its progress bar), no traceback."""
    errors = [x for x in res.output.splitlines() if x.startswith("error: ")]
    assert res.exit_code == 2 and len(errors) == 1 and "Traceback" not in res.output, res.output
    return errors[0]


def test_sft_cli_refuses_a_changed_config_until_restart(tmp_path):
    assert _sft(tmp_path).exit_code == 0
    line = _error_line(_sft(tmp_path, "--set", "lr=0.5"))
    assert "lr: 0.0002 -> 0.5" in line and "--restart" in line
    res = _sft(tmp_path, "--set", "lr=0.5", "--restart")
    assert res.exit_code == 0, res.output
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["lr"] == 0.5
    assert "--restart: cleared" in (tmp_path / "run" / "run.log").read_text()


def test_sft_cli_reports_checkpoint_and_lock_errors_in_one_line(tmp_path, monkeypatch):
    import errno

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(torch, "save", full_disk)
        line = _error_line(_sft(tmp_path))
    assert "could not write checkpoint" in line and str(tmp_path / "run" / "checkpoints") in line
    assert "ENOSPC" in line

    out = tmp_path / "held"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from frugalft.runs import RunDir; RunDir(sys.argv[1]); print('held', "
         "flush=True); sys.stdin.read()", str(out)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        line = _error_line(_sft(tmp_path, "--set", f"out={out}"))
        assert f"in use by pid {holder.pid}" in line
    finally:
        holder.communicate("", timeout=30)


def test_the_resuming_commands_offer_restart():
    from frugalft.cli.main import _add_subapps, app

    _add_subapps()
    for command in (["rl", "warmup"], ["rl", "train"], ["sft"], ["curve"]):
        res = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
        assert res.exit_code == 0 and "--restart" in res.output, command
