"""A finished warm-up stage keeps its result (``model/``) and drops its checkpoints and best-validation copy,
and is still recognised as finished: reused as is, and refused under another config."""

from __future__ import annotations

import dataclasses

import pytest

from frugalft.models import load_model
from frugalft.reflect.teachers import TeacherConfig
from frugalft.reflect.warmup import WarmupConfig, warmup
from frugalft.reflect.warmup_data import DataConfig, generate
from frugalft.runs import RunError

pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_finished_warmup_keeps_its_model_not_its_checkpoints(tmp_path):
    data = tmp_path / "data"
    generate(DataConfig(levels=[0], tasks_per_level=6, seed=0, teacher=TeacherConfig(brief=True)), data,
             log=lambda *a: None)
    # Checkpoints every 2 steps and validation (best/) every 2: both would be left behind before.
    cfg = WarmupConfig(model="tiny-test", device="cpu", reflection_steps=4, policy_steps=4, batch_size=2,
                       checkpoint_every=2, eval_every=2, val_fraction=0.4, patience=0, val_generate=0,
                       reflection_tokens=4, log_every=2, seed=0)
    run = tmp_path / "warmup"
    paths = warmup(cfg, data, run, log=lambda *a: None)
    for player in ("reflection", "policy"):
        stage = run / player
        assert paths[player] == stage / "model" and (stage / "model" / "config.json").exists()
        assert not list(stage.rglob("step-*")), f"{player} kept checkpoints: {list(stage.rglob('step-*'))}"
        assert not (stage / "checkpoints").exists() and not (stage / "best").exists()
        assert (stage / "summary.json").exists() and (stage / "metrics.jsonl").stat().st_size > 0
        lm, _ = load_model(str(stage / "model"), device="cpu")
        assert lm.config.n_layer == 2

    # Still a finished stage: reused without training again, and refused under another config.
    lines: list[str] = []
    assert warmup(cfg, data, run, log=lines.append) == paths
    assert any("already trained" in line for line in lines) and not any("resuming" in line for line in lines)
    with pytest.raises(RunError, match="another config"):
        warmup(dataclasses.replace(cfg, lr=5e-4), data, run, log=lambda *a: None)
