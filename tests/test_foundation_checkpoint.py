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


# ---- manifests, fallback, pruning by write order, stale temporaries, failed writes ------------------------
def test_a_truncated_latest_falls_back_to_the_newest_intact_checkpoint(tmp_path, caplog):
    model, tok = load_model("tiny-test", seed=1)
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, model)
    manifest = json.loads((tmp_path / "step-00000003" / "manifest.json").read_text())
    assert manifest["seq"] == 3 and set(manifest["files"]) == {"model.safetensors", "state.pt", "meta.json"}
    weights = tmp_path / "step-00000003" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a write cut short
    with caplog.at_level("WARNING", logger="frugalft.checkpoint"):
        assert latest_checkpoint(tmp_path).name == "step-00000002"
    assert "step-00000003" in caplog.text and "truncated" in caplog.text and "step-00000002" in caplog.text
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(tmp_path / "step-00000003", model)
    other, _ = load_model("tiny-test", seed=2)
    assert load_checkpoint(latest_checkpoint(tmp_path), other)["step"] == 2

    # Same size, flipped bytes: the checksum catches it. LATEST gone: the newest that verifies, not None.
    state = tmp_path / "step-00000002" / "state.pt"
    data = bytearray(state.read_bytes())
    data[-10] ^= 0xFF
    state.write_bytes(bytes(data))
    (tmp_path / "LATEST").unlink()
    assert latest_checkpoint(tmp_path).name == "step-00000001"
    # Nothing intact at all: an error that says so, never a silent start from zero.
    (tmp_path / "step-00000001" / "meta.json").unlink()
    with pytest.raises(CheckpointError, match="no other checkpoint .* verifies.*--restart"):
        latest_checkpoint(tmp_path)


def test_pruning_keeps_the_newest_written_not_the_highest_step(tmp_path):
    model, _ = load_model("tiny-test")
    for step in (3, 4):
        save_checkpoint(tmp_path, step, model, keep=2)
    (tmp_path / "LATEST").unlink()  # lost; the run then restarted lower (e.g. its config asked for it)
    new = save_checkpoint(tmp_path, 1, model, keep=2)
    assert new.is_dir() and latest_checkpoint(tmp_path) == new
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-00000001", "step-00000004"]
    save_checkpoint(tmp_path, 2, model, keep=2)
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-00000001", "step-00000002"]


def test_stale_temporaries_are_removed_when_the_run_directory_opens(tmp_path):
    run_dir = tmp_path / "run"
    model, _ = load_model("tiny-test")
    save_checkpoint(run_dir / "checkpoints", 1, model)
    # What a process killed mid-save leaves: a half-written step folder, a LATEST temp, a folder moved aside.
    for name in (".step-00000002.k3j4h5.tmp", ".step-00000001.old", ".LATEST.abc123.tmp"):
        (run_dir / "checkpoints" / name).mkdir()
    (run_dir / "checkpoints" / ".step-00000002.k3j4h5.tmp" / "step-00000002").mkdir()
    (run_dir / ".config.yaml.x1y2.tmp").mkdir()
    RunDir(run_dir, resume=True)
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["LATEST", "step-00000001"]
    assert not list(run_dir.glob(".*.tmp"))
    assert "left by a process that died" in (run_dir / "run.log").read_text()


@pytest.mark.parametrize("failure", ["oserror", "torch"])
def test_a_failed_write_names_the_path_and_the_cause_and_keeps_the_last_checkpoint(tmp_path, monkeypatch,
                                                                                     failure):
    import errno

    model, _ = load_model("tiny-test")
    save_checkpoint(tmp_path, 1, model)

    def full_disk(*args, **kwargs):
        if failure == "oserror":
            raise OSError(errno.ENOSPC, "No space left on device")
        # What torch.save itself raises on a full disk: a RuntimeError without an errno.
        raise RuntimeError("[enforce fail at inline_container.cc:595] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed\nException raised from ...")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CheckpointError) as info:
        save_checkpoint(tmp_path, 2, model)
    message = str(info.value)
    assert str(tmp_path / "step-00000002") in message and "free there" in message and "\n" not in message
    if failure == "oserror":
        assert "No space left on device [ENOSPC]" in message
    else:
        assert "file write failed" in message
    assert latest_checkpoint(tmp_path).name == "step-00000001"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["LATEST", "step-00000001"]  # no temp left behind


def test_checkpoints_from_before_manifests_still_load_and_count_as_older(tmp_path):
    model, _ = load_model("tiny-test")
    old = save_checkpoint(tmp_path, 5, model)
    (old / "manifest.json").unlink()  # as written by an earlier version
    assert latest_checkpoint(tmp_path) == old
    load_checkpoint(old, model)
    new = save_checkpoint(tmp_path, 1, model, keep=1)
    assert [p.name for p in tmp_path.glob("step-*")] == [new.name]
