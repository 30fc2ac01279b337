"""``frugalft sft`` from the command line: trains from a JSONL file, and refuses bad input clearly."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from frugalft.cli.main import _add_subapps, app

_add_subapps()


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_sft_cli_trains_and_holds_out(tmp_path):
    rows = [{"prompt": f"Echo {w}.", "response": w} for w in ["red", "green", "blue", "cyan", "teal", "gold"] * 2]
    _write(tmp_path / "train.jsonl", rows)
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["sft", "--set", "model=tiny-test", "--set", f"train={tmp_path}/train.jsonl",
                                   "--set", "max_steps=3", "--set", "batch_size=4", "--set", "eval_fraction=0.25",
                                   "--set", "finetune=full", "--set", f"out={out}"])
    assert res.exit_code == 0, res.output
    assert "3 steps" in res.output
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("eval_loss" in m for m in metrics)
    assert "9 train / 3 eval examples" in (out / "run.log").read_text()  # 25% of 12 rows held out
    assert (out / "checkpoints" / "LATEST").exists() and (out / "model").is_dir()


def test_sft_cli_bad_input(tmp_path):
    _write(tmp_path / "noresp.jsonl", [{"prompt": "a"}, {"prompt": "b"}])
    res = CliRunner().invoke(app, ["sft", "--set", f"train={tmp_path}/noresp.jsonl", "--set", f"out={tmp_path}/r"])
    assert res.exit_code != 0 and "no 'response' field" in res.output
    (tmp_path / "broken.jsonl").write_text('{"prompt": "a", "response": "b"}\n{"prompt": \n')
    res = CliRunner().invoke(app, ["sft", "--set", f"train={tmp_path}/broken.jsonl", "--set", f"out={tmp_path}/r"])
    assert res.exit_code != 0 and "broken.jsonl" in res.output and "2" in res.output
    res = CliRunner().invoke(app, ["sft", "--set", "nope=1"])
    assert res.exit_code != 0 and "valid keys" in res.output
    res = CliRunner().invoke(app, ["sft"])
    assert res.exit_code != 0 and "no training data" in res.output
