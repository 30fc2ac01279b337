"""select -> export -> merge hands a file to the trainers people use: `datasets`, TRL's SFTTrainer and
``frugalft sft`` read it as it is, in both layouts (prompt-completion and conversational messages)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from frugalft.cli.main import _add_subapps, app
from frugalft.design import DesignError, load_pool

_add_subapps()
runner = CliRunner()


def _run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture()
def merged(tmp_path):
    """(pool, selection, filled answers): 12 of 30 prompts selected at random, every one answered."""
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"What is {i} + 1?", "task": "ab"[i % 2]}) + "\n"
                            for i in range(30)))
    sel, ann = tmp_path / "sel.jsonl", tmp_path / "to_annotate.jsonl"
    assert _run("select", pool, "--budget", 12, "--strategy", "random", "--out", sel).exit_code == 0
    assert _run("export", pool, sel, "--out", ann).exit_code == 0
    rows = [json.loads(line) for line in ann.read_text().splitlines()]
    for row in rows:
        row["response"] = str(int(row["prompt"].split()[2]) + 1)
    ann.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return pool, sel, ann


def _merge(merged, out, *extra):
    r = _run("merge", *merged, "--out", out, *extra)
    assert r.exit_code == 0, r.output
    return out


def test_merge_writes_prompt_completion_rows_datasets_reads(tmp_path, merged):
    import datasets

    out = _merge(merged, tmp_path / "train.jsonl")
    ds = datasets.load_dataset("json", data_files=str(out), split="train")
    assert ds.column_names == ["id", "prompt", "completion", "task"] and len(ds) == 12
    for row in ds:
        assert row["completion"] == str(int(row["prompt"].split()[2]) + 1) and row["task"] in ("a", "b")


def test_merge_messages_format(tmp_path, merged):
    import datasets

    out = _merge(merged, tmp_path / "train.jsonl", "--format", "messages")
    ds = datasets.load_dataset("json", data_files=str(out), split="train")
    assert ds.column_names == ["id", "messages", "task"]
    first = ds[0]["messages"]
    assert [m["role"] for m in first] == ["user", "assistant"]
    assert first[1]["content"] == str(int(first[0]["content"].split()[2]) + 1)
    r = _run("merge", *merged, "--out", tmp_path / "x.jsonl", "--format", "sharegpt")
    assert r.exit_code != 0 and "--format must be prompt-completion or messages" in r.output


@pytest.mark.parametrize("fmt", ["prompt-completion", "messages"])
def test_frugalft_sft_reads_the_merged_file(tmp_path, merged, fmt):
    out = _merge(merged, tmp_path / "train.jsonl", "--format", fmt)
    pool = load_pool(out)  # what `frugalft sft` reads its pairs with
    assert pool.has_responses and len(pool) == 12
    for prompt, answer in zip(pool.prompts(), pool.table.column("response").to_pylist(), strict=True):
        assert answer == str(int(prompt.split()[2]) + 1)
    run = tmp_path / f"run-{fmt}"
    r = _run("sft", "--set", "model=tiny-test", "--set", f"train={out}", "--set", "max_steps=2",
             "--set", "batch_size=4", "--set", "finetune=full", "--set", "save_every=-1",
             "--set", "save_model=false", "--set", f"out={run}")
    assert r.exit_code == 0, r.output
    assert "2 steps" in r.output


def test_pools_read_trl_layouts_and_refuse_multi_turn(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"id": "a", "prompt": "p", "completion": "c", "response": "r"}) + "\n")
    assert load_pool(path).table.column("response").to_pylist() == ["r"]  # an explicit response wins
    path.write_text(json.dumps({"id": "a", "messages": [{"role": "user", "content": "hi"}]}) + "\n")
    pool = load_pool(path)
    assert pool.prompts() == ["hi"] and not pool.has_responses  # an unlabeled conversational pool
    path.write_text(json.dumps({"id": "a", "messages": [{"role": "system", "content": "s"},
                                                        {"role": "user", "content": "hi"}]}) + "\n")
    with pytest.raises(DesignError, match=r"row 1: 'messages' must be \[user\] or \[user, assistant\]"):
        load_pool(path)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # TRL's own config trips transformers' deprecations
def test_trl_sft_trainer_trains_on_the_merged_file(tmp_path, merged):
    trl = pytest.importorskip("trl")
    import datasets

    from frugalft.models import load_model

    for fmt in ("prompt-completion", "messages"):
        out = _merge(merged, tmp_path / f"train-{fmt}.jsonl", "--format", fmt)
        ds = datasets.load_dataset("json", data_files=str(out), split="train")
        model, tok = load_model("tiny-test", device="cpu")
        if fmt == "messages":  # the tiny GPT-2 tokenizer has no chat template; a minimal one
            tok.chat_template = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                                 "{% if add_generation_prompt %}assistant: {% endif %}")
        model.train()
        args = trl.SFTConfig(output_dir=str(tmp_path / f"trl-{fmt}"), max_steps=2, per_device_train_batch_size=4,
                             report_to="none", save_strategy="no", logging_steps=1, use_cpu=True,
                             dataloader_num_workers=0, disable_tqdm=True)
        trainer = trl.SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
        try:
            result = trainer.train()
        finally:
            # The Trainer leaves accelerate's process-wide state (its mixed-precision and device settings)
            # behind: reset it, or frugalft's accelerate path run later in the same process inherits it.
            from accelerate.state import AcceleratorState

            AcceleratorState._reset_state(True)
        assert result.global_step == 2 and result.training_loss > 0
