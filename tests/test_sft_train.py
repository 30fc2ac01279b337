"""The SFT loop: the loss falls on a tiny set, and a run resumed from a checkpoint ends bit-identical to an
uninterrupted one (weights, optimizer moments and logged metrics)."""

from __future__ import annotations

import json
import shutil

import torch

from frugalft.checkpoint import trainable_state_dict
from frugalft.models import LoraSettings
from frugalft.sft import SFTConfig, train_sft

PAIRS = [(f"What is {a} + {b}?", str(a + b)) for a, b in [(1, 2), (3, 4), (10, 20), (7, 8), (5, 5), (9, 1)]]
PAIRS += [("Reverse the letters of the word \"abc\".", "cba"), ("Say yes.", "yes")]


def test_loss_decreases_and_metrics_logged(tmp_path):
    cfg = SFTConfig(model="tiny-test", finetune="full", lr=5e-3, batch_size=4, max_steps=16, log_every=4,
                    eval_every=8, out=str(tmp_path / "run"), save_every=-1, save_model=True, seed=0)
    res = train_sft(cfg, PAIRS, PAIRS[:4], quiet=True)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if "loss" in r]
    evals = [r for r in rows if "eval_loss" in r]
    assert [r["step"] for r in train] == [4, 8, 12, 16]
    assert [r["step"] for r in evals] == [8, 16]
    assert {"loss", "tokens_per_s", "lr", "grad_norm"} <= set(train[0])
    assert train[-1]["loss"] < 0.7 * train[0]["loss"]  # 9.99 -> 6.31 when written
    assert evals[-1]["eval_loss"] < evals[0]["eval_loss"]
    assert res.steps == 16 and (tmp_path / "run" / "model" / "config.json").exists()


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainable_state_dict(model).items()}


def test_resume_equals_uninterrupted(tmp_path):
    # LoRA with dropout and packing on: resuming must restore RNG, optimizer, scheduler and the data order.
    base = dict(model="tiny-test", finetune="lora", lora=LoraSettings(r=4, alpha=8, dropout=0.1), lr=1e-2,
                batch_size=2, max_steps=5, log_every=1, save_every=2, save_model=False, packing=True, max_len=48,
                seed=1)
    full = train_sft(SFTConfig(**base, out=str(tmp_path / "a")), PAIRS, quiet=True)
    w_full = _weights(full.model)

    # The same run "killed" after step 2: a copy of its directory with the later checkpoints gone.
    b = tmp_path / "b"
    shutil.copytree(tmp_path / "a", b)
    ck = b / "checkpoints"
    assert sorted(p.name for p in ck.glob("step-*")) == ["step-00000002", "step-00000004", "step-00000005"]
    shutil.rmtree(ck / "step-00000004")
    shutil.rmtree(ck / "step-00000005")
    (ck / "LATEST").write_text("step-00000002\n")
    resumed = train_sft(SFTConfig(**base, out=str(b), resume=True), PAIRS, quiet=True)
    w_res = _weights(resumed.model)
    assert w_full.keys() == w_res.keys()
    for k in w_full:
        assert torch.equal(w_full[k], w_res[k]), k
    strip = lambda p: [{k: v for k, v in json.loads(x).items() if k not in ("time", "tokens_per_s")}  # noqa: E731
                       for x in p.read_text().splitlines()]
    assert strip(tmp_path / "a" / "metrics.jsonl") == strip(b / "metrics.jsonl")
    assert "resumed from" in (b / "run.log").read_text()
    # And training actually moved the adapter (the test would be vacuous otherwise).
    assert any(v.abs().sum() > 0 for k, v in w_full.items() if "lora_B" in k)
