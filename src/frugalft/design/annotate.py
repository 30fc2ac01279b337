"""Hand the chosen prompts to annotators and take their answers back, with the checks that keep labels honest.

``export_for_annotation`` writes the selection's prompts (JSONL or CSV, by extension) with an empty ``response``
column to fill in. ``merge_answers`` reads the filled file and joins it to the pool by id, refusing answers for
prompts that were not selected, the same id twice, and prompts edited on the way; it reports (or refuses)
missing answers. The result is the prompt/response file that ``frugalft sft`` trains on.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from frugalft.atomic import atomic_path, write_jsonl
from frugalft.design.pools import DesignError, Pool, load_pool
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


def export_for_annotation(pool: Pool, selection: Selection, out: str | Path) -> int:
    """Write id, rank, task, prompt and an empty response per chosen prompt; returns the row count."""
    rows = []
    for rank, row in enumerate(_rows_for(pool, selection), start=1):
        rows.append({"id": row["id"], "rank": rank, "task": row.get("task") or "", "prompt": row["prompt"],
                     "response": ""})
    _write_rows(out, rows, ["id", "rank", "task", "prompt", "response"])
    return len(rows)


def merge_answers(pool: Pool, selection: Selection, answers_path: str | Path, out: str | Path,
                  answer_field: str = "response", allow_missing: bool = False) -> dict[str, int]:
    """Join annotators' answers to the selected prompts; write ``{id, prompt, response, task}`` JSONL.

    Errors (nothing written): an answered id that was not selected, an id answered twice, a prompt that differs
    from the pool's. Missing or blank answers are an error unless ``allow_missing``, then they are left out.
    """
    answers = load_pool(answers_path, prompt_field="prompt", task_field=None, response_field=answer_field)
    selected = {row["id"]: row for row in _rows_for(pool, selection)}
    extra = [pid for pid in answers.ids if pid not in selected]
    if extra:
        raise DesignError(f"{answers_path}: {len(extra)} answered ids were not selected, e.g. {', '.join(extra[:5])}")
    got = {row["id"]: row for row in answers.table.to_pylist()}
    edited = [pid for pid, row in got.items() if (row["prompt"] or "").strip() != (selected[pid]["prompt"] or "").strip()]
    if edited:
        raise DesignError(f"{answers_path}: the prompt of {len(edited)} rows differs from the pool's, e.g. id "
                          f"{edited[0]}; answers must keep the prompt they answer")
    merged, missing = [], []
    for pid, row in selected.items():
        ans = got.get(pid, {}).get("response")
        if ans is None or not str(ans).strip():
            missing.append(pid)
            continue
        merged.append({"id": pid, "prompt": row["prompt"], "response": ans, "task": row.get("task") or ""})
    if missing and not allow_missing:
        raise DesignError(f"{len(missing)} selected prompts have no answer, e.g. {', '.join(missing[:5])}; "
                          "finish them or pass --allow-missing to leave them out")
    write_jsonl(out, merged)
    return {"merged": len(merged), "missing": len(missing)}


def _write_rows(out: str | Path, rows: list[dict], columns: list[str]) -> None:
    out = Path(out)
    if out.suffix.lower() in (".csv", ".tsv"):
        with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
            w = csv.DictWriter(f, fieldnames=columns, delimiter="\t" if out.suffix.lower() == ".tsv" else ",")
            w.writeheader()
            w.writerows(rows)
    elif out.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    else:
        raise DesignError(f"{out}: write .jsonl or .csv (got {out.suffix or 'no extension'})")
