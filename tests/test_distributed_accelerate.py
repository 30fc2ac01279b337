"""SFT under ``accelerate launch`` with 2 CPU processes (gloo) matches the single-process loss, step by step;
and ``train_sft`` handed a one-process Accelerator takes the plain run's steps (same weights, dropout included)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from frugalft.sft.data import pad_batch
from frugalft.sft.train import SFTConfig, rows_of, run_sft
from two_processes import launch_two_cpu_processes

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


PAIRS = [(f"What is {a} plus {b}?", f"{a + b}, since {a} and {b} make {a + b}") for a in range(4) for b in range(5)]


def _config(tmp: Path, out: str, **kw) -> SFTConfig:
    data = tmp / "pairs.jsonl"
    if not data.exists():
        data.write_text("".join(json.dumps({"prompt": p, "response": r}) + "\n" for p, r in PAIRS))
    base = SFTConfig(model="tiny-test", train=str(data), eval_fraction=0.0, finetune="full", chat_template="off",
                     batch_size=5, max_steps=4, log_every=1, lr=1e-3, warmup_ratio=0.0, save_every=-1,
                     save_model=False, device="cpu", out=str(tmp / out))
    return replace(base, **kw)


def _losses(run: Path) -> list[float]:
    return [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


def _reset_accelerate():
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)


def test_rows_split_a_batch_without_loss_or_overlap():
    from frugalft.models import load_model
    from frugalft.sft.data import PromptFormat, encode_all

    _, tok = load_model("tiny-test")
    batch = pad_batch(encode_all(PromptFormat(tok, "off"), PAIRS[:5], 64), tok.pad_token_id)
    parts = [rows_of(batch, r, 2) for r in range(2)]
    assert [p.input_ids.shape[0] for p in parts] == [3, 2]
    assert sum(p.n_tokens for p in parts) == batch.n_tokens
    assert parts[0].input_ids[1].tolist() == batch.input_ids[2].tolist()
    empty = rows_of(pad_batch(encode_all(PromptFormat(tok, "off"), PAIRS[:1], 64), tok.pad_token_id), 1, 2)
    assert (empty.labels == -100).all()  # a process without rows still runs, with no loss tokens


def test_one_process_accelerator_takes_the_plain_steps(tmp_path):
    import torch

    cfg = _config(tmp_path, "ref", save_model=True)
    ref = run_sft(cfg, quiet=True, distributed=False)  # as `frugalft sft` runs in one process
    out = run_sft(replace(cfg, out=str(tmp_path / "acc1")), quiet=True, distributed=True)
    _reset_accelerate()
    assert out.processes == 1 and ref.processes == 1
    assert _losses(tmp_path / "acc1") == pytest.approx(_losses(tmp_path / "ref"), abs=1e-6)
    # sum * 1 / N back-propagated is the mean loss, bit for bit: the same weights
    for (name, a), b in zip(ref.model.state_dict().items(), out.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


@pytest.mark.slow  # ~30-50 s: the launcher and two processes each import torch and transformers
@pytest.mark.parametrize("entry", [["frugalft.distributed.accelerate_sft"], ["frugalft.cli.main", "sft"]],
                         ids=["module", "cli"])
def test_two_process_accelerate_launch_matches_one_process(tmp_path, entry):
    yaml = tmp_path / "sft.yaml"
    yaml.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in vars(_config(tmp_path, "two")).items()
                            if not isinstance(v, dict) and k != "lora"))
    def reference() -> None:
        cfg = _config(tmp_path, "one")
        run_sft(cfg, disable_dropout=True, quiet=True, distributed=True)
        _reset_accelerate()

    stdout = launch_two_cpu_processes([*entry, "-c", str(yaml), "--no-dropout"],
                                      reference)
    assert "on 2 processes" in stdout
    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    rows = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert all(r.get("processes") == 2 for r in rows if "loss" in r)
    assert len(two) == len(one) == 4
    assert two == pytest.approx(one, abs=1e-5)  # the same global loss; only the float summation order differs
    assert one[-1] < one[0]  # it trains
