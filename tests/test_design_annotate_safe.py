"""Annotator files are safe to open in a spreadsheet (no cell runs as a formula) and round-trip exactly:
hostile prompts through ``export`` -> annotators -> ``merge`` for CSV, TSV and XLSX."""

from __future__ import annotations

import csv
import json

import pytest
import typer
from typer.testing import CliRunner

from frugalft.cli.design import register
from frugalft.design.annotate import FORMULA_STARTS, _read_answers, guard_cell, unguard_cell

app = typer.Typer()
register(app)

HOSTILE = [
    '=HYPERLINK("http://x","click")',
    "@SUM(1)",
    "+1+2",
    "-2",
    "\t=1",
    "\r=1+1",
    "'=already",
    "''twice",
    "'",
    "=",
    "",
    " =a space first is text already",
    "naïve café: 日本語, emoji 🙂, ＝full-width",
    "line one\nline two\r\nline three\rline four",
    'He said "hi", then \'bye\'; a,b;c',
    "ends with a quote\"",
    "plain question?",
]
# Ids and tasks are cells too: a hostile id must come back as itself, or the answer would not join.
IDS = ["=id", "-3", "'q", "@x", "+y", "\tz"] + [f"q{i}" for i in range(len(HOSTILE) - 6)]


def _run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture()
def selected(tmp_path):
    pool = tmp_path / "pool.jsonl"
    with open(pool, "w", encoding="utf-8") as f:
        for i, (pid, prompt) in enumerate(zip(IDS, HOSTILE, strict=True)):
            f.write(json.dumps({"id": pid, "prompt": prompt, "task": ["-neg", "=t", "ok"][i % 3]}) + "\n")
    sel = tmp_path / "sel.jsonl"
    r = _run("select", pool, "-b", len(HOSTILE), "--strategy", "random", "-o", sel)
    assert r.exit_code == 0, r.output
    return pool, sel


def _answer(prompt: str) -> str:
    return "=answer to: " + prompt  # answers are taken verbatim, even ones that look like formulas


def _lf(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _check_merged(out, pool, xlsx: bool = False):
    merged = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    original = {r["id"]: r for r in map(json.loads, pool.read_text(encoding="utf-8").splitlines())}
    assert len(merged) == len(HOSTILE)
    for m in merged:
        assert m["prompt"] == original[m["id"]]["prompt"]  # byte for byte
        # (an xlsx cell cannot hold a carriage return: the annotator's answer comes back with line feeds)
        answer = _lf(_answer(m["prompt"])) if xlsx else _answer(m["prompt"])
        assert m["completion"] == answer and m["task"] == original[m["id"]]["task"]


def test_guard_is_reversible_and_leaves_no_formula_start():
    for text in [*HOSTILE, *IDS, "''", "'''=x", "-", "@"]:
        guarded = guard_cell(text)
        assert unguard_cell(guarded) == text
        assert not guarded.startswith(FORMULA_STARTS)
        assert guarded == text or guarded == "'" + text
    assert guard_cell("plain") == "plain" and guard_cell("=1") == "'=1" and guard_cell("'=1") == "''=1"


@pytest.mark.parametrize("suffix", [".csv", ".tsv"])
def test_csv_export_is_guarded_and_merge_round_trips(tmp_path, selected, suffix):
    pool, sel = selected
    ann = tmp_path / f"annotate{suffix}"
    r = _run("export", pool, sel, "--out", ann)
    assert r.exit_code == 0, r.output
    delimiter = "\t" if suffix == ".tsv" else ","
    with open(ann, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter=delimiter))
    assert sorted(r["prompt"] for r in rows) == sorted(guard_cell(p) for p in HOSTILE)
    for row in rows:
        for name in ("id", "task", "prompt"):
            assert not row[name].startswith(FORMULA_STARTS), (name, row[name])  # the spreadsheet sees text
        assert row["prompt"] == guard_cell(HOSTILE[IDS.index(unguard_cell(row["id"]))])
    first = next(r for r in rows if r["id"] == "'=id")
    assert first["prompt"] == "'=HYPERLINK(\"http://x\",\"click\")" and first["task"] == "'-neg"
    # Read back exactly: every id and prompt without its guard, no stripping, no newline translation.
    answers = _read_answers(ann, "response")
    assert {(r["id"], unguard_cell(r["prompt"])) for r in answers.table.to_pylist()} == set(zip(IDS, HOSTILE, strict=True))
    # The annotators fill in the answers; a spreadsheet saves text cells as they are.
    for row in rows:
        row["response"] = _answer(HOSTILE[IDS.index(unguard_cell(row["id"]))])
    with open(ann, "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter=delimiter)
        w.writeheader()
        w.writerows(rows)
    out = tmp_path / "train.jsonl"
    r = _run("merge", pool, sel, ann, "--out", out)
    assert r.exit_code == 0, r.output
    _check_merged(out, pool)


def test_merge_accepts_a_spreadsheet_that_dropped_the_guard_and_still_catches_edits(tmp_path, selected):
    pool, sel = selected
    ann = tmp_path / "a.csv"
    assert _run("export", pool, sel, "--out", ann).exit_code == 0
    with open(ann, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:  # the prompt saved bare (the id keeps its guard)
        row["prompt"] = HOSTILE[IDS.index(unguard_cell(row["id"]))]
        row["response"] = _answer(row["prompt"])
    with open(ann, "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    out = tmp_path / "train.jsonl"
    assert _run("merge", pool, sel, ann, "--out", out).exit_code == 0
    _check_merged(out, pool)
    rows[0]["prompt"] = "''" + rows[0]["prompt"]  # two guards: not what export wrote, an edit
    with open(ann, "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    r = _run("merge", pool, sel, ann, "--out", tmp_path / "t2.jsonl")
    assert r.exit_code != 0 and "differs from the pool" in r.output


def test_xlsx_cells_are_text_and_merge_round_trips(tmp_path, selected):
    openpyxl = pytest.importorskip("openpyxl")
    pool, sel = selected
    ann = tmp_path / "annotate.xlsx"
    r = _run("export", pool, sel, "--out", ann)
    assert r.exit_code == 0, r.output
    wb = openpyxl.load_workbook(ann)
    ws = wb.active
    header = [c.value for c in ws[1]]
    assert header == ["id", "rank", "task", "prompt", "response"]
    seen = []
    for row in ws.iter_rows(min_row=2):
        cells = dict(zip(header, row, strict=True))
        assert all(c.data_type != "f" for c in row)  # never a formula
        pid = cells["id"].value
        expected = HOSTILE[IDS.index(pid)]
        # XML reads a carriage return back as a line feed; everything else is the prompt itself
        assert (cells["prompt"].value or "") == _lf(expected)
        seen.append(pid)
        cells["response"].value = _answer(expected)
        cells["response"].data_type = "s"
    assert sorted(seen) == sorted(IDS)
    wb.save(ann)
    out = tmp_path / "train.jsonl"
    r = _run("merge", pool, sel, ann, "--out", out)
    assert r.exit_code == 0, r.output
    _check_merged(out, pool, xlsx=True)


def test_xlsx_refuses_a_control_character_clearly(tmp_path):
    pytest.importorskip("openpyxl")
    pool = tmp_path / "pool.jsonl"
    pool.write_text(json.dumps({"id": "a", "prompt": "bell \x07 here"}) + "\n")
    sel = tmp_path / "sel.jsonl"
    assert _run("select", pool, "-b", 1, "--strategy", "random", "-o", sel).exit_code == 0
    r = _run("export", pool, sel, "--out", tmp_path / "a.xlsx")
    assert r.exit_code != 0 and "control character" in r.output and not (tmp_path / "a.xlsx").exists()
    assert _run("export", pool, sel, "--out", tmp_path / "a.csv").exit_code == 0
