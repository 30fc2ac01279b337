"""``frugalft select | export | merge`` end to end, and the checks on annotators' answers."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from frugalft.cli.design import register

app = typer.Typer()
register(app)
runner = CliRunner()


@pytest.fixture()
def pool(tmp_path):
    path = tmp_path / "pool.jsonl"
    with open(path, "w") as f:
        for i in range(40):
            f.write(json.dumps({"id": f"q{i}", "prompt": f"question {i}?", "task": "ab"[i % 2]}) + "\n")
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(40, 5)).astype(np.float32))
    return path


def _run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_select_export_merge(tmp_path, pool):
    sel = tmp_path / "sel.jsonl"
    r = _run("select", pool, "--budget", 6, "--strategy", "facility-location", "--out", sel,
             "--set", f"features={tmp_path / 'x.npy'}")
    assert r.exit_code == 0, r.output
    assert "sigma = " in r.output and (tmp_path / "sel.gains.png").stat().st_size > 1000
    rows = [json.loads(line) for line in sel.read_text().splitlines()]
    assert [row["rank"] for row in rows] == list(range(1, 7))
    assert all(row["strategy"] == "facility-location" and row["score"] > 0 for row in rows)
    assert rows[0]["params"]["sigma"] == "auto" and rows[0]["params"]["features"].endswith("x.npy")
    assert rows[0]["params"]["sigma_chosen"] == pytest.approx(float(r.output.split("sigma = ")[1].split()[0]), rel=1e-3)

    ann = tmp_path / "ann.csv"
    r = _run("export", pool, sel, "--out", ann)
    assert r.exit_code == 0, r.output
    with open(ann, newline="") as f:
        exported = list(csv.DictReader(f))
    assert [e["id"] for e in exported] == [row["id"] for row in rows] and all(e["response"] == "" for e in exported)

    for e in exported:  # the annotators answer all but one
        e["response"] = "" if e["rank"] == "6" else f"answer to {e['prompt']}"
    with open(ann, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(exported[0]))
        w.writeheader()
        w.writerows(exported)
    out = tmp_path / "train.jsonl"
    r = _run("merge", pool, sel, ann, "--out", out)
    assert r.exit_code != 0 and "1 selected prompts have no answer" in r.output and not out.exists()
    r = _run("merge", pool, sel, ann, "--out", out, "--allow-missing")
    assert r.exit_code == 0, r.output
    merged = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(merged) == 5 and merged[0]["completion"] == f"answer to {merged[0]['prompt']}"
    assert {m["task"] for m in merged} <= {"a", "b"}


def test_merge_refuses_foreign_duplicate_and_edited_answers(tmp_path, pool):
    sel = tmp_path / "sel.jsonl"
    assert _run("select", pool, "-b", 3, "--strategy", "random", "-o", sel).exit_code == 0
    chosen = [json.loads(line)["id"] for line in sel.read_text().splitlines()]
    other = next(f"q{i}" for i in range(40) if f"q{i}" not in chosen)
    cases = {
        "not selected": [{"id": other, "prompt": f"question {other[1:]}?", "response": "x"}],
        "ids must be unique": [{"id": chosen[0], "prompt": f"question {chosen[0][1:]}?", "response": "x"}] * 2,
        "differs from the pool": [{"id": chosen[0], "prompt": "an edited prompt", "response": "x"}],
    }
    for match, rows in cases.items():
        ans = tmp_path / "ans.jsonl"
        ans.write_text("".join(json.dumps(r) + "\n" for r in rows))
        r = _run("merge", pool, sel, ans, "--out", tmp_path / "t.jsonl")
        assert r.exit_code != 0 and match in r.output, (match, r.output)
        assert not (tmp_path / "t.jsonl").exists()


def test_select_errors_are_one_line(tmp_path, pool):
    r = _run("select", pool, "--budget", 41, "--strategy", "random", "--out", tmp_path / "s.jsonl")
    assert r.exit_code == 2 and "budget 41 is larger than the pool (40 prompts" in r.output
    r = _run("select", pool, "--budget", 0, "--strategy", "random", "--out", tmp_path / "s.jsonl")
    assert r.exit_code == 2 and "budget must be at least 1" in r.output
    r = _run("select", pool, "--budget", 3, "--strategy", "bogus", "--out", tmp_path / "s.jsonl")
    assert r.exit_code == 2 and "choose from" in r.output
    r = _run("select", pool, "-b", 3, "--strategy", "random", "-o", tmp_path / "s.jsonl", "--prompt-field", "text")
    assert r.exit_code == 2 and "missing field(s) 'text'" in r.output
    assert not (tmp_path / "s.jsonl").exists()
    r = _run("select", "--list")
    assert r.exit_code == 0 and "facility-location" in r.output and "min-margin" in r.output
