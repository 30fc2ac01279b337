"""Experiment tracking (``--report-to`` / ``report_to``): TensorBoard event files with metrics.jsonl's names,
W&B runs (offline without a key), tags per table cell, and nothing at all when it is off."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from typer.testing import CliRunner

from frugalft.cli.main import _add_subapps, app
from frugalft.cli.rl import _cell_tags
from frugalft.cli.sft import _curve_cell_tags
from frugalft.reflect.train import RLConfig, train
from frugalft.runs import RunDir, read_metrics, tracking
from frugalft.sft import SFTConfig

_add_subapps()


def _scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    ea = EventAccumulator(str(log_dir))
    ea.Reload()
    return {tag: [(e.step, e.value) for e in ea.Scalars(tag)] for tag in ea.Tags()["scalars"]}


def _names(rows: list[dict]) -> set[str]:
    return {k for r in rows for k in r if k not in ("step", "time")}


@pytest.mark.usefixtures("one_thread")
def test_two_iteration_rl_run_writes_tensorboard_scalars_named_as_metrics_jsonl(tmp_path):
    cfg = RLConfig(policy_model="tiny-test", reflection_model="tiny-test", reflection_tokens=4, iterations=2,
                   num_envs=2, task_ids=["pickup-002", "pickup-084"], checkpoint_interval=2, device="cpu",
                   eval_interval=2, eval_max_tasks=1, seed=5)
    run = tmp_path / "seed-5" / "rl" / "reflect_rl"
    with tracking("tensorboard", root=tmp_path, tags={"env": cfg.env}, describe=_cell_tags(tmp_path)):
        train(cfg, run)
    rows = read_metrics(run / "metrics.jsonl")
    events = list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert len(rows) == 2 and len(events) == 1
    scalars = _scalars(run / "tensorboard")
    assert set(scalars) == _names(rows) and {"return", "success", "loss", "eval_success"} <= set(scalars)
    for name, points in scalars.items():
        expected = [(r["step"], float(r[name])) for r in rows if name in r]
        assert [s for s, _ in points] == [s for s, _ in expected]
        assert [v for _, v in points] == pytest.approx([v for _, v in expected], rel=1e-6)
    ea = EventAccumulator(str(run / "tensorboard"))
    ea.Reload()
    tags_text = ea.Tensors("run/tags/text_summary")[0].tensor_proto.string_val[0].decode()
    assert all(t in tags_text for t in ("env: DangerousTaxi", "seed: 5", "method: reflect_rl"))


def test_off_by_default_writes_nothing_more(tmp_path):
    run = RunDir(tmp_path / "plain", config=SFTConfig())
    run.log_metrics(1, loss=1.0)
    with tracking("none"):
        RunDir(tmp_path / "none").log_metrics(1, loss=1.0)
    assert sorted(p.name for p in (tmp_path / "plain").iterdir()) == ["config.yaml", "metrics.jsonl", "run.log"]
    assert not (tmp_path / "none" / "tensorboard").exists()
    with pytest.raises(ValueError, match="tensorboard"), tracking("tensorbord"):
        pass


def test_resume_purges_the_steps_that_are_logged_again(tmp_path):
    with tracking("tensorboard"):
        run = RunDir(tmp_path / "r")
        for step in (1, 2, 3):
            run.log_metrics(step, loss=float(step), note="text is not a scalar", best=None)
    with tracking("tensorboard"):  # a new process resumes from the checkpoint of step 1
        run = RunDir(tmp_path / "r", resume=True)
        run.truncate_metrics(1)
        for step in (2, 3):
            run.log_metrics(step, loss=10.0 * step)
    assert _scalars(tmp_path / "r" / "tensorboard") == {"loss": [(1, 1.0), (2, 20.0), (3, 30.0)]}
    assert [r["loss"] for r in run.metrics()] == [1.0, 20.0, 30.0]


def test_sft_config_report_to_alone_turns_it_on(tmp_path):
    run = RunDir(tmp_path / "sft", config=SFTConfig(report_to="tensorboard"))
    run.log_metrics(5, loss=2.5, lr=1e-4)
    assert _scalars(tmp_path / "sft" / "tensorboard") == {"loss": [(5, 2.5)], "lr": [(5, pytest.approx(1e-4))]}


class _FakeWandb(types.ModuleType):
    """Records what frugalft asks of wandb (the real package is optional and not installed in CI)."""

    def __init__(self) -> None:
        super().__init__("wandb")
        self.inits: list[dict] = []
        self.logged: list[tuple[dict, int]] = []
        self.finished = 0

    def init(self, **kwargs):
        self.inits.append(kwargs)
        fake = self
        return types.SimpleNamespace(log=lambda data, step: fake.logged.append((data, step)),
                                     finish=lambda: setattr(fake, "finished", fake.finished + 1))


def test_wandb_offline_without_a_key_one_run_per_cell(tmp_path, monkeypatch):
    fake = _FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    with tracking("wandb", root=tmp_path, group="table", tags={"env": "DangerousTaxi"},
                  describe=_cell_tags(tmp_path)):
        for method in ("rl", "reflect_rl"):
            run = RunDir(tmp_path / "seed-0" / "rl" / method, config=RLConfig())
            run.log_metrics(1, success=0.5, level=0)
    assert [i["name"] for i in fake.inits] == ["seed-0/rl/rl", "seed-0/rl/reflect_rl"]
    first = fake.inits[0]
    assert first["mode"] == "offline" and first["group"] == "table" and first["project"] == "frugalft"
    assert set(first["tags"]) == {"env:DangerousTaxi", "seed:0", "method:rl"}
    assert first["config"]["method"] == "rl" and first["config"]["config"]["algorithm"] == "reinforce"
    assert fake.logged == [({"success": 0.5, "level": 0.0}, 1)] * 2 and fake.finished == 2
    monkeypatch.setenv("WANDB_API_KEY", "k")
    with tracking("wandb"):
        RunDir(tmp_path / "online").log_metrics(1, loss=1.0)
    assert fake.inits[-1]["mode"] == "online"


def test_missing_wandb_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    with pytest.raises(ImportError, match="pip install wandb"), tracking("wandb"):
        pass
    (tmp_path / "t.jsonl").write_text(json.dumps({"prompt": "a", "response": "b"}) + "\n")
    for argv in (["sft"], ["curve"], ["rl", "table"]):
        res = CliRunner().invoke(app, [*argv, "--report-to", "wandb", "--set", f"train={tmp_path}/t.jsonl"]
                                 if argv == ["sft"] else [*argv, "--report-to", "wandb"])
        assert res.exit_code != 0 and "pip install wandb" in res.output, (argv, res.output)
    res = CliRunner().invoke(app, ["rl", "train", "--report-to", "tb"])
    assert res.exit_code != 0 and "report_to must be one of none, tensorboard, wandb" in res.output


def test_cell_tags_from_the_run_layouts(tmp_path):
    describe = _cell_tags(tmp_path)
    assert describe(tmp_path / "seed-2" / "rl" / "sft_rl_noreflect") == {"seed": 2, "method": "sft_rl_noreflect"}
    assert describe(tmp_path / "seed-0" / "warmup" / "reflect" / "policy") == {
        "seed": 0, "variant": "reflect", "player": "policy"}
    assert describe(tmp_path.parent / "elsewhere") == {}
    assert _curve_cell_tags(Path("sft/facility-location__b100__s2")) == {
        "strategy": "facility-location", "budget": 100, "seed": 2}
    assert _curve_cell_tags(Path("sft/run")) == {}


def test_sft_cli_report_to_tensorboard(tmp_path):
    rows = [{"prompt": f"Echo {w}.", "response": w} for w in ["red", "green", "blue", "cyan"] * 2]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["sft", "--report-to", "tensorboard", "--set", "model=tiny-test",
                                   "--set", f"train={tmp_path}/train.jsonl", "--set", "max_steps=2",
                                   "--set", "batch_size=4", "--set", "log_every=1", "--set", "finetune=full",
                                   "--set", "save_model=false", "--set", "eval_fraction=0.25", "--set", f"out={out}"])
    assert res.exit_code == 0, res.output
    assert set(_scalars(out / "tensorboard")) == _names(read_metrics(out / "metrics.jsonl")) >= {"loss", "eval_loss"}
