import json

import pytest
import torch

from frugalft.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, save_checkpoint
from frugalft.models import LoraSettings, ValueHead, add_lora, load_model
from frugalft.runs import RunDir, read_metrics
from frugalft.seeding import seed_everything

TEXT = "the taxi drives north, then east, picks up the passenger and drops them at the depot. " * 8


def _setup(lora: bool):
    seed_everything(0)
    model, tok = load_model("tiny-test", seed=0)
    if lora:
        model = add_lora(model, LoraSettings(r=4, alpha=8, dropout=0.1))
    model.train()  # dropout on: resume must restore the RNG to match
    head = ValueHead(64)
    params = [p for p in model.parameters() if p.requires_grad] + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=3e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + 0.1 * s))
    ids = torch.tensor(tok.encode(TEXT))
    return model, head, opt, sched, ids


def _train(model, head, opt, sched, ids, start: int, stop: int, run: RunDir | None = None) -> list[float]:
    losses = []
    for step in range(start, stop):
        # Data order comes from the global RNG, which the checkpoint must restore.
        offsets = torch.randint(0, len(ids) - 33, (4,))
        batch = torch.stack([ids[o : o + 32] for o in offsets])
        out = model(input_ids=batch, labels=batch, output_hidden_states=True)
        loss = out.loss + 0.01 * head(out.hidden_states[-1]).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if run is not None:
            run.log_metrics(step + 1, loss=loss)
    return losses


@pytest.mark.parametrize("lora", [False, True])
def test_resume_continues_exactly(tmp_path, lora):
    model, head, opt, sched, ids = _setup(lora)
    straight = _train(model, head, opt, sched, ids, 0, 6)

    model, head, opt, sched, ids = _setup(lora)
    run = RunDir(tmp_path / "run", config={"lora": lora})
    first = _train(model, head, opt, sched, ids, 0, 3, run)
    save_checkpoint(run.checkpoints, 3, model, opt, sched, heads={"value": head}, counters={"episodes": 12})
    _train(model, head, opt, sched, ids, 3, 5, run)  # progress after the checkpoint, then a "crash"

    model, head, opt, sched, ids = _setup(lora)
    torch.manual_seed(1234)  # a fresh process would start from another RNG state
    run = RunDir(tmp_path / "run", resume=True)
    meta = load_checkpoint(latest_checkpoint(run.checkpoints), model, opt, sched, heads={"value": head})
    assert meta == {"step": 3, "counters": {"episodes": 12}}
    run.truncate_metrics(meta["step"])
    rest = _train(model, head, opt, sched, ids, 3, 6, run)
    assert first + rest == pytest.approx(straight, rel=1e-5, abs=1e-6)
    # metrics.jsonl holds each step once, in order, after the resume.
    assert [r["step"] for r in read_metrics(run.metrics_path)] == [1, 2, 3, 4, 5, 6]


def test_save_then_load_gives_identical_logits(tmp_path):
    model, tok = load_model("tiny-test", seed=5)
    save_checkpoint(tmp_path, 7, model)
    other, _ = load_model("tiny-test", seed=6)
    x = torch.tensor([tok.encode("cd src")])
    assert not torch.equal(model(x).logits, other(x).logits)
    load_checkpoint(latest_checkpoint(tmp_path), other)
    assert torch.equal(model(x).logits, other(x).logits)


def test_keep_prunes_old_checkpoints_and_latest_points_at_newest(tmp_path):
    model, _ = load_model("tiny-test")
    for step in (1, 2, 3, 4):
        save_checkpoint(tmp_path, step, model, keep=2)
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-00000003", "step-00000004"]
    assert latest_checkpoint(tmp_path).name == "step-00000004"
    assert not list(tmp_path.glob(".*tmp"))  # no temp leftovers


def test_missing_and_corrupt_checkpoints_fail_clearly_and_overwrite_nothing(tmp_path):
    model, _ = load_model("tiny-test")
    assert latest_checkpoint(tmp_path) is None
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nope", model)
    path = save_checkpoint(tmp_path, 1, model)
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    (path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path, model)
    assert (path / "meta.json").read_bytes() == before["meta.json"]
    (tmp_path / "LATEST").write_text("step-00000099\n")
    with pytest.raises(CheckpointError, match="missing or incomplete"):
        latest_checkpoint(tmp_path)


def test_mismatched_checkpoint_is_rejected(tmp_path):
    small, _ = load_model("tiny-test")
    save_checkpoint(tmp_path, 1, small)
    bigger, _ = load_model("tiny")
    with pytest.raises(CheckpointError):
        load_checkpoint(latest_checkpoint(tmp_path), bigger)


def test_run_dir_writes_config_and_plain_json_metrics(tmp_path):
    run = RunDir(tmp_path / "r", config={"a": 1})
    run.log_metrics(1, loss=torch.tensor(0.5), success=1)
    run.log.info("hello")
    assert (tmp_path / "r" / "config.yaml").read_text() == "a: 1\n"
    row = json.loads((tmp_path / "r" / "metrics.jsonl").read_text())
    assert row["loss"] == 0.5 and row["step"] == 1
    assert "hello" in (tmp_path / "r" / "run.log").read_text()
