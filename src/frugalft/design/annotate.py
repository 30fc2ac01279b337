"""Hand the chosen prompts to annotators and take their answers back, with the checks that keep labels honest.

``export_for_annotation`` writes the selection's prompts (JSONL, CSV/TSV or XLSX, by extension) with an empty
``response`` column to fill in. ``merge_answers`` reads the filled file and joins it to the pool by id, refusing
answers for prompts that were not selected, the same id twice, and prompts edited on the way; it reports (or
refuses) missing answers. The result is a training file that TRL's ``SFTTrainer``, ``datasets`` and
``frugalft sft`` read as it is: prompt-completion rows ``{id, prompt, completion, task}`` (TRL's name for the
answer field), or conversational rows ``{id, messages, task}`` with ``fmt="messages"``.

Files that annotators open in a spreadsheet must not run as formulas (CSV injection: a prompt such as
``=HYPERLINK("http://x","click")``). The rule, reversible by construction:

- CSV/TSV: a text cell (id, task, prompt) that starts with ``=``, ``+``, ``-``, ``@``, tab or carriage return
  gets a leading ``'``, and so does a cell that already starts with ``'`` (``'=already`` is written
  ``''=already``). Merge drops exactly one leading ``'`` from the id and prompt cells that start with one, so
  every id and prompt comes back byte for byte. (A spreadsheet that hid the ``'`` when saving leaves the bare
  prompt, which merge accepts too; the merged prompt is always the pool's own text.) Answers are taken verbatim.
- XLSX (needs openpyxl): every cell is written as a string, never a formula, so nothing needs a guard. XML
  reads a carriage return back as a line feed: merge compares prompts with line endings normalised.
- JSONL: written and read verbatim.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from frugalft.atomic import atomic_path, write_jsonl
from frugalft.design.pools import DesignError, Pool, load_pool, pool_from_rows
from frugalft.design.selection import Selection


def _rows_for(pool: Pool, selection: Selection) -> list[dict]:
    ids = pool.ids
    idx = np.asarray(selection.indices)
    if len(idx) and (idx.max() >= len(pool) or [str(i) for i in ids[idx]] != list(selection.ids)):
        # The selection was made on another pool (or a re-ordered one): join by id instead of row position.
        where = {pid: i for i, pid in enumerate(ids)}
        missing = [pid for pid in selection.ids if pid not in where]
        if missing:
            raise DesignError(f"{len(missing)} selected ids are not in the pool {pool.source}, e.g. "
                              f"{', '.join(missing[:5])}")
        idx = np.array([where[pid] for pid in selection.ids], dtype=np.int64)
    return pool.rows(idx)


# A spreadsheet evaluates a cell that starts with one of these (OWASP's CSV-injection list).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
GUARD = "'"


def guard_cell(text: str) -> str:
    """A CSV cell a spreadsheet shows as text: ``'`` before a formula start, and before a leading ``'`` too
    (which is what makes ``unguard_cell`` exact)."""
    return GUARD + text if text.startswith((*FORMULA_STARTS, GUARD)) else text


def unguard_cell(text: str) -> str:
    """Undo ``guard_cell``: drop one leading ``'``. ``unguard_cell(guard_cell(x)) == x`` for every string."""
    return text[1:] if text.startswith(GUARD) else text


def export_for_annotation(pool: Pool, selection: Selection, out: str | Path) -> int:
    """Write id, rank, task, prompt and an empty response per chosen prompt; returns the row count."""
    rows = []
    for rank, row in enumerate(_rows_for(pool, selection), start=1):
        rows.append({"id": row["id"], "rank": rank, "task": row.get("task") or "", "prompt": row["prompt"],
                     "response": ""})
    _write_rows(out, rows, ["id", "rank", "task", "prompt", "response"])
    return len(rows)


# Row layouts of the merged file, both read as they are by TRL's SFTTrainer and by `frugalft sft`.
MERGE_FORMATS = ("prompt-completion", "messages")


def training_row(pid: str, prompt: str, answer: str, task: str, fmt: str = "prompt-completion") -> dict:
    """One merged row: ``{id, prompt, completion, task}`` or ``{id, messages: [user, assistant], task}``."""
    if fmt == "messages":
        return {"id": pid, "messages": [{"role": "user", "content": prompt},
                                        {"role": "assistant", "content": answer}], "task": task}
    return {"id": pid, "prompt": prompt, "completion": answer, "task": task}


def merge_answers(pool: Pool, selection: Selection, answers_path: str | Path, out: str | Path,
                  answer_field: str = "response", allow_missing: bool = False,
                  fmt: str = "prompt-completion") -> dict[str, int]:
    """Join annotators' answers to the selected prompts; write JSONL rows ``training_row`` lays out by ``fmt``.

    Errors (nothing written): an answered id that was not selected, an id answered twice, a prompt that differs
    from the pool's. Missing or blank answers are an error unless ``allow_missing``, then they are left out.
    """
    if fmt not in MERGE_FORMATS:
        raise DesignError(f"unknown format {fmt!r}; choose {' or '.join(MERGE_FORMATS)}")
    answers = _read_answers(Path(answers_path), answer_field)
    selected = {row["id"]: row for row in _rows_for(pool, selection)}
    extra = [pid for pid in answers.ids if pid not in selected]
    if extra:
        raise DesignError(f"{answers_path}: {len(extra)} answered ids were not selected, e.g. {', '.join(extra[:5])}")
    got = {row["id"]: row for row in answers.table.to_pylist()}
    suffix = Path(answers_path).suffix.lower()

    def same_prompt(answered: str | None, original: str | None) -> bool:
        a, o = answered or "", original or ""
        if suffix == ".xlsx":  # XML reads a carriage return back as a line feed
            a, o = _lf(a), _lf(o)
        return a.strip() == o.strip() or (suffix in (".csv", ".tsv") and unguard_cell(a).strip() == o.strip())

    edited = [pid for pid, row in got.items() if not same_prompt(row["prompt"], selected[pid]["prompt"])]
    if edited:
        raise DesignError(f"{answers_path}: the prompt of {len(edited)} rows differs from the pool's, e.g. id "
                          f"{edited[0]}; answers must keep the prompt they answer")
    merged, missing = [], []
    for pid, row in selected.items():
        ans = got.get(pid, {}).get("response")
        if ans is None or not str(ans).strip():
            missing.append(pid)
            continue
        merged.append(training_row(pid, row["prompt"], ans, row.get("task") or "", fmt))
    if missing and not allow_missing:
        raise DesignError(f"{len(missing)} selected prompts have no answer, e.g. {', '.join(missing[:5])}; "
                          "finish them or pass --allow-missing to leave them out")
    write_jsonl(out, merged)
    return {"merged": len(merged), "missing": len(missing)}


def _read_answers(path: Path, answer_field: str) -> Pool:
    """The annotators' file as a pool (id, prompt, response), with the CSV guard taken off the ids."""
    if path.suffix.lower() == ".xlsx":
        return _read_xlsx(path, answer_field)
    answers = load_pool(path, prompt_field="prompt", task_field=None, response_field=answer_field)
    if path.suffix.lower() not in (".csv", ".tsv"):
        return answers
    rows = answers.table.to_pylist()
    for row in rows:
        row["id"] = unguard_cell(row["id"])  # the prompt is compared both ways in merge_answers
    return pool_from_rows(rows, str(path))


def _lf(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _openpyxl():
    try:
        import openpyxl
    except ImportError:
        raise DesignError("xlsx files need openpyxl: pip install openpyxl (or 'frugalft[xlsx]'), or use .csv "
                          "or .jsonl") from None
    return openpyxl


def _write_xlsx(out: Path, rows: list[dict], columns: list[str]) -> None:
    from openpyxl.utils.exceptions import IllegalCharacterError

    wb = _openpyxl().Workbook()
    ws = wb.active
    ws.title = "annotate"
    for r, row in enumerate([dict(zip(columns, columns, strict=True)), *rows], start=1):
        for c, name in enumerate(columns, start=1):
            value = row[name]
            try:
                cell = ws.cell(row=r, column=c, value=value)
            except IllegalCharacterError:
                raise DesignError(f"{out}: the {name} of id {row['id']!r} holds a control character that xlsx "
                                  "cannot store; export .csv or .jsonl instead") from None
            if isinstance(value, str):
                cell.data_type = "s"  # openpyxl would store a text starting with "=" as a formula
    with atomic_path(out) as tmp:
        wb.save(tmp)


def _read_xlsx(path: Path, answer_field: str) -> Pool:
    try:
        wb = _openpyxl().load_workbook(path, read_only=True, data_only=True)
    except (OSError, KeyError, ValueError) as e:  # a zip that is not a workbook, a broken file
        raise DesignError(f"{path}: not a readable xlsx file ({e})") from None
    records = list(wb.worksheets[0].iter_rows(values_only=True))
    wb.close()
    if not records:
        raise DesignError(f"{path}: the sheet is empty (no header row)")
    header = [str(h) if h is not None else "" for h in records[0]]
    missing = [f for f in ("id", "prompt", answer_field) if f not in header]
    if missing:
        raise DesignError(f"{path}: missing column(s) {', '.join(map(repr, missing))}; the header has "
                          f"{', '.join(map(repr, [h for h in header if h]))}")
    col = {name: header.index(name) for name in ("id", "prompt", answer_field)}
    rows = []
    for values in records[1:]:
        if values is None or all(v is None or v == "" for v in values):
            continue  # blank rows a spreadsheet keeps below the data
        cell = {k: values[i] if i < len(values) else None for k, i in col.items()}
        # an annotator's number (42) is read back as one: answers are text
        rows.append({"id": None if cell["id"] is None else str(cell["id"]),
                     "prompt": None if cell["prompt"] is None else str(cell["prompt"]),
                     "response": None if cell[answer_field] is None else str(cell[answer_field])})
    if not rows:
        raise DesignError(f"{path}: no answer rows")
    return pool_from_rows(rows, str(path))


def _write_rows(out: str | Path, rows: list[dict], columns: list[str]) -> None:
    out = Path(out)
    if out.suffix.lower() in (".csv", ".tsv"):
        with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
            w = csv.DictWriter(f, fieldnames=columns, delimiter="\t" if out.suffix.lower() == ".tsv" else ",")
            w.writeheader()
            w.writerows({k: guard_cell(v) if isinstance(v, str) else v for k, v in row.items()} for row in rows)
    elif out.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    elif out.suffix.lower() == ".xlsx":
        _write_xlsx(out, rows, columns)
    else:
        raise DesignError(f"{out}: write .jsonl, .csv, .tsv or .xlsx (got {out.suffix or 'no extension'})")
