"""The curve's zero-shot row (budget 0: the base model, evaluated like every cell), its place in the tables and
the plot but not in the savings, the task filter, and the ETA over cells."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, replace

import pytest

from curvecells import write_cells
from frugalft.eval import curve as C
from frugalft.eval.curve import CurveConfig, CurveError, run_curve, summarize
from frugalft.sft import SFTConfig, train_sft


def _rows(prefix: str, n: int) -> list[dict]:
    tasks = ["add", "echo"]
    return [{"id": f"{prefix}{i}", "task": tasks[i % 2],
             "prompt": f"{prefix} {i} + {i * 3} =" if i % 2 == 0 else f"{prefix} echo w{i}",
             "response": str(i * 4) if i % 2 == 0 else f"w{i}"} for i in range(n)]


@pytest.fixture()
def pools(tmp_path):
    for name, rows in (("pool.jsonl", _rows("p", 12)), ("eval.jsonl", _rows("e", 4))):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


def _cfg(tmp, **kw) -> CurveConfig:
    sft = SFTConfig(model="tiny-test", finetune="full", lr=0.0, max_steps=1, batch_size=2, max_len=32, save_every=-1,
                    save_model=False, plain_template="Q: {prompt}\nA:")  # not the default template: it must reach
    return CurveConfig(pool=str(tmp / "pool.jsonl"), eval=str(tmp / "eval.jsonl"), sft=sft, seeds=[0],
                       max_new_tokens=3, out=str(tmp / "curve"), **kw)


def test_zero_shot_is_an_untrained_cell(pools):
    # strategies=[]: only the zero-shot cell runs (how to check the base model before sizing a curve).
    cfg = _cfg(pools, strategies=[])
    logs: list[str] = []
    result = run_curve(cfg, log=logs.append)
    zs = json.loads((pools / "curve" / "cells" / "zero-shot__b0.json").read_text())
    assert zs["budget"] == 0 and zs["train_steps"] == 0 and zs["n_eval"] == 4 and set(zs["per_task"]) == {"add", "echo"}
    assert result["zero_shot"]["mean"] == zs["rougeL"] and "savings" not in result
    assert logs[1].startswith("[1/1] zero-shot b=0:")
    assert "zero-shot (no fine-tuning), per task" in (pools / "curve" / "summary.md").read_text()
    # The same numbers as a cell whose training changed nothing (lr 0): same model, prompt format, generation
    # settings and held-out loss. A zero-shot row built with another template would differ in eval_loss.
    eval_rows = [json.loads(x) for x in (pools / "eval.jsonl").read_text().splitlines()]
    res = train_sft(SFTConfig(**{**asdict(cfg.sft), "lora": cfg.sft.lora, "out": str(pools / "sft")}),
                    [("a", "b"), ("c", "d")], quiet=True)
    cell = C._evaluate(res.model, res.prompt_format, eval_rows, cfg)
    assert cell["eval_loss"] == pytest.approx(zs["eval_loss"], rel=1e-6)
    assert [e["prediction"] for e in cell["examples"]] == [e["prediction"] for e in zs["examples"]]
    other = C._evaluate(res.model, _with_template(res.prompt_format, "{prompt} ->"), eval_rows, cfg)
    assert other["eval_loss"] != pytest.approx(zs["eval_loss"], rel=1e-6)


def _with_template(fmt, template: str):
    from frugalft.sft import PromptFormat

    return PromptFormat(fmt.tok, "off", template)


def test_zero_shot_row_in_tables_and_plot_not_in_savings(tmp_path, monkeypatch):
    import matplotlib.axes

    lines: list[tuple[float, str]] = []
    real = matplotlib.axes.Axes.axhline
    monkeypatch.setattr(matplotlib.axes.Axes, "axhline",
                        lambda self, y=0, *a, **kw: lines.append((y, kw.get("label"))) or real(self, y, *a, **kw))
    # A zero-shot score above every cell: were it a point of random's curve, "random" would look flat.
    zero = {"strategy": "zero-shot", "budget": 0, "seed": 0, "rougeL": 0.9, "exact_match": 0.8, "eval_loss": 1.0,
            "macro_rougeL": 0.9, "macro_exact_match": 0.8, "n_eval": 4, "train_loss": None, "train_steps": 0,
            "tokens_per_s": None, "seconds_select": 0.0, "seconds_train": 1.0, "seconds_eval": 0.5,
            "per_task": {"add": {"rougeL": 1.0, "exact_match": 1.0, "n": 2}, "echo": {"rougeL": 0.8,
                                                                                     "exact_match": 0.6, "n": 2}}}
    results = {}
    for on in (True, False):
        out = tmp_path / str(on)
        write_cells(out, zero)
        cfg = CurveConfig(strategies=["random", "task-balanced"], budgets=[10, 20], seeds=[0, 1], zero_shot=on,
                          out=str(out))
        results[on] = summarize(cfg, out)
    with_zs, without = results[True], results[False]
    for metric in C.METRICS:
        assert with_zs[metric]["savings"] == without[metric]["savings"]
        assert with_zs[metric]["summary"] == without[metric]["summary"]
        assert with_zs[metric]["zero_shot"] == {"mean": zero[metric], "lo": zero[metric], "hi": zero[metric], "n": 1}
        assert "zero_shot" not in without[metric]
    assert with_zs["savings"]["task-balanced"]["budget_needed"] == pytest.approx(15.0)
    out = tmp_path / "True"
    with open(out / "curve.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["strategy"] == "zero-shot" and rows[0]["budget"] == "0" and rows[0]["tokens_per_s"] == ""
    assert len(rows) == 1 + 8
    with open(out / "summary.csv") as f:
        summary = list(csv.reader(f))
    assert summary[1] == ["zero-shot", "0", "0.9", "0.9", "0.9", "1"]
    md = (out / "summary.md").read_text()
    assert "| strategy | b=0 | b=10 | b=20 | savings vs random @ b=20 |" in md
    assert "| zero-shot (no fine-tuning) | 0.900 |  |  |  |" in md
    assert "| task-balanced |  | 0.300 [" in md and "+25% (b_S = 15, interpolated)" in md
    assert "| echo | 2 | 0.800 | 0.600 |" in md
    # One dashed zero-shot line per metric plot (3 plots), none without the zero-shot row.
    assert lines == [(0.9, C.ZERO_SHOT_LABEL), (0.8, C.ZERO_SHOT_LABEL), (1.0, C.ZERO_SHOT_LABEL)]
    assert (out / "curve.png").read_bytes()[:4] == b"\x89PNG"


def test_task_filter(pools):
    cfg = _cfg(pools, strategies=["random"], tasks=["echo"], eval_per_task=1)
    pool, eval_rows = C._load_pools(cfg)
    assert set(pool.table.column("task").to_pylist()) == {"echo"} and len(pool) == 6
    assert [r["task"] for r in eval_rows] == ["echo"]
    with pytest.raises(CurveError, match="not in"):
        C._load_pools(replace(cfg, tasks=["nope"]))


def test_eta_weights_cells_by_budget():
    units = lambda b: 3.0 * b  # noqa: E731  (epochs 3)
    zero = {"strategy": "zero-shot", "budget": 0, "seconds_select": 0.0, "seconds_train": 2.0, "seconds_eval": 10.0}
    r10 = {"strategy": "random", "budget": 10, "seconds_select": 1.0, "seconds_train": 30.0, "seconds_eval": 10.0}
    # One budget seen: train time proportional to budget x epochs (1 s per example-epoch here).
    # random b=20: select 1 + eval 10 + train 60; fl b=10 (not run yet): its first selection as the others' first
    # (1), eval 10, train 30; fl b=20 after that: the others' warm selection (1), eval 10, train 60.
    todo = [("random", 20), ("fl", 10), ("fl", 20)]
    assert C.estimate_remaining([zero, r10], todo, units) == pytest.approx(71 + 41 + 71)
    # Two budgets seen: a fitted intercept (model load) + a rate: 30 = a + 30 r, 50 = a + 60 r -> a 10, r 2/3.
    r20 = {**r10, "budget": 20, "seconds_train": 50.0}
    assert C.estimate_remaining([zero, r10, r20], [("random", 40)], units) == pytest.approx(1 + 10 + 10 + 80)
    assert math.isnan(C.estimate_remaining([], todo, units))  # nothing to go on yet
    assert C.estimate_remaining([zero], [("zero-shot", 0)], units) == pytest.approx(10.0)
    assert C.train_units(CurveConfig(sft=SFTConfig(epochs=3)), 32) == 96
    assert C.train_units(CurveConfig(sft=SFTConfig(max_steps=5, batch_size=8)), 32) == 40
    assert [C.fmt_seconds(x) for x in (42.4, 185, 3725, float("nan"))] == ["42s", "3m05s", "1h02m", "?"]


def test_cli_zero_shot_only(pools):
    from typer.testing import CliRunner

    from frugalft.cli.main import _add_subapps, app

    _add_subapps()
    res = CliRunner().invoke(app, ["curve", "--set", f"pool={pools}/pool.jsonl", "--set", f"eval={pools}/eval.jsonl",
                                   "--set", "strategies=[]", "--set", "sft.model=tiny-test", "--set",
                                   "sft.finetune=full", "--set", "max_new_tokens=3", "--set", f"out={pools}/cli"])
    assert res.exit_code == 0, res.output
    assert "[1/1] zero-shot b=0:" in res.output and "zero-shot  b=0:" in res.output and "savings" not in res.output


def test_a_lora_cell_is_evaluated_merged_with_the_same_numbers(pools):
    # _evaluate folds the adapter into the weights for speed: the answers and the held-out loss must be those of
    # the adapter run as it is, and the model must come back unmerged (a later use would otherwise add it twice).
    from frugalft.eval.generate import generate_answers
    from frugalft.models import LoraSettings

    cfg = _cfg(pools)
    cfg.sft = replace(cfg.sft, finetune="lora", lora=LoraSettings(r=4, alpha=8, dropout=0.0), lr=5e-2, max_steps=3)
    eval_rows = [json.loads(x) for x in (pools / "eval.jsonl").read_text().splitlines()]
    res = train_sft(SFTConfig(**{**asdict(cfg.sft), "lora": cfg.sft.lora, "out": str(pools / "sft")}),
                    [("a", "b"), ("c", "d"), ("e", "f")], quiet=True)
    lora_b = [m for n, m in res.model.named_parameters() if "lora_B" in n]
    assert lora_b and any(float(p.detach().abs().sum()) > 0 for p in lora_b)  # the adapter is not a no-op
    want_preds = generate_answers(res.model, res.prompt_format, [r["prompt"] for r in eval_rows], cfg.max_new_tokens)
    want_loss = C._eval_loss(res.model, res.prompt_format, eval_rows, cfg)
    cell = C._evaluate(res.model, res.prompt_format, eval_rows, cfg)
    assert cell["eval_loss"] == pytest.approx(want_loss, rel=1e-5)
    assert [e["prediction"] for e in cell["examples"]] == want_preds[:5]
    assert not any(getattr(m, "merged", False) for m in res.model.modules())
    assert C._eval_loss(res.model, res.prompt_format, eval_rows, cfg) == pytest.approx(want_loss, rel=1e-6)
