"""``frugalft curve`` on a tiny config runs end to end, writes its table, plot and savings, and resumes."""

from __future__ import annotations

import csv
import json

from typer.testing import CliRunner

from frugalft.cli.main import _add_subapps, app
from frugalft.eval.curve import CurveConfig, run_curve
from frugalft.sft import SFTConfig


def _rows(prefix: str, n: int) -> list[dict]:
    tasks = ["add", "rev", "echo"]
    out = []
    for i in range(n):
        t = tasks[i % 3]
        a, b = i * 7 % 50, i * 3 % 40
        prompt, resp = {"add": (f"{prefix} {a} + {b} =", str(a + b)), "rev": (f"{prefix} reverse w{i}x", f"x{i}w"),
                        "echo": (f"{prefix} echo token{i}", f"token{i}")}[t]
        out.append({"id": f"{prefix}{i}", "prompt": prompt, "response": resp, "task": t})
    return out


def test_curve_end_to_end_and_resume(tmp_path):
    for name, rows in (("pool.jsonl", _rows("p", 30)), ("eval.jsonl", _rows("e", 6))):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = CurveConfig(pool=str(tmp_path / "pool.jsonl"), eval=str(tmp_path / "eval.jsonl"),
                      strategies=["random", "task-balanced"], budgets=[3, 6], seeds=[0, 1],
                      sft=SFTConfig(model="tiny-test", finetune="full", lr=1e-3, max_steps=2, batch_size=2,
                                    max_len=32, save_every=-1, save_model=False),
                      max_new_tokens=4, out=str(tmp_path / "curve"))
    result = run_curve(cfg, log=lambda s: None)
    out = tmp_path / "curve"
    with open(out / "curve.csv") as f:
        rows = list(csv.DictReader(f))
    zero, cells = rows[0], rows[1:]
    assert len(cells) == 2 * 2 * 2
    assert {(c["strategy"], int(c["budget"]), int(c["seed"])) for c in cells} == {
        (s, b, seed) for s in ("random", "task-balanced") for b in (3, 6) for seed in (0, 1)}
    assert all(0.0 <= float(c["rougeL"]) <= 1.0 and int(c["n_eval"]) == 6 for c in rows)
    # The zero-shot row: budget 0, no training, evaluated on the same 6 prompts; in the summaries, not the savings.
    assert (zero["strategy"], zero["budget"], zero["train_steps"], zero["train_loss"]) == ("zero-shot", "0", "0", "")
    zs = json.loads((out / "cells" / "zero-shot__b0.json").read_text())
    assert result["zero_shot"]["mean"] == zs["rougeL"] and "zero-shot" not in result["savings"]
    assert "| zero-shot (no fine-tuning) |" in (out / "summary.md").read_text()
    assert (out / "curve.png").read_bytes()[:4] == b"\x89PNG"
    sel = [json.loads(x) for x in (out / "selections" / "task-balanced__b6__s1.jsonl").read_text().splitlines()]
    assert len(sel) == 6
    # task-balanced over 3 equal tasks with budget 6: two per task, so the cell saw each task twice.
    cell = json.loads((out / "cells" / "task-balanced__b6__s1.json").read_text())
    assert cell["selected_tasks"] == {"add": 2, "echo": 2, "rev": 2}
    sav = result["savings"]
    assert set(sav) == {"random", "task-balanced"} and sav["random"]["reference_budget"] == 6
    # Summary means are the means of the cells.
    rnd = [float(c["rougeL"]) for c in cells if c["strategy"] == "random" and c["budget"] == "6"]
    assert result["summary"]["random"]["6"]["mean"] == sum(rnd) / 2

    # Resume: finished cells are skipped (their files are untouched); a deleted one is redone.
    victim = out / "cells" / "random__b3__s0.json"
    victim.unlink()
    keep = out / "cells" / "random__b6__s1.json"
    kept = {p: p.stat().st_mtime_ns for p in (keep, out / "cells" / "zero-shot__b0.json")}
    logs: list[str] = []
    run_curve(cfg, log=logs.append)
    assert victim.exists() and all(p.stat().st_mtime_ns == t for p, t in kept.items())
    assert sum("random b=3 seed=0" in s for s in logs) == 1 and len(logs) == 2  # header + the one redone cell
    assert "9 cells, 8 already done" in logs[0] and "ETA" in logs[1]


def test_curve_cli_errors(tmp_path):
    _add_subapps()
    res = CliRunner().invoke(app, ["curve", "--set", f"pool={tmp_path}/missing.jsonl", "--set", f"out={tmp_path}/c"])
    assert res.exit_code != 0 and "does not exist" in res.output
    res = CliRunner().invoke(app, ["curve", "--set", "strategies=[nope]", "--set", f"out={tmp_path}/c"])
    assert res.exit_code != 0 and "unknown strategies" in res.output
