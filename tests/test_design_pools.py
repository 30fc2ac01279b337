"""Pools: every format loads to the same table; bad input fails with file, line and field names."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from frugalft.design import DesignError, load_pool, pool_from_rows, select_prompts

ROWS = [{"id": f"q{i}", "prompt": f"prompt number {i % 7}", "task": f"t{i % 3}", "response": f"r{i}"}
        for i in range(20)]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_formats_load_the_same(tmp_path):
    import pandas as pd

    ref = load_pool(_jsonl(tmp_path / "p.jsonl", ROWS))
    pd.DataFrame(ROWS).to_csv(tmp_path / "p.csv", index=False)
    pd.DataFrame(ROWS).to_parquet(tmp_path / "p.parquet")
    import datasets

    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "hf"))
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS)}).save_to_disk(str(tmp_path / "hfd"))
    for p in ("p.csv", "p.parquet", "hf", "hfd"):
        pool = load_pool(tmp_path / p)
        assert pool.table.to_pylist() == ref.table.to_pylist(), p
        assert pool.content_hash() == ref.content_hash()
    assert len(ref) == 20 and ref.has_tasks and ref.has_responses
    assert ref.prompts([3, 0]) == ["prompt number 3", "prompt number 0"]


def test_configurable_fields_and_numeric_ids(tmp_path):
    rows = [{"key": i, "text": f"t{i}", "kind": "a" if i < 2 else "b"} for i in range(5)]
    pool = load_pool(_jsonl(tmp_path / "p.jsonl", rows), id_field="key", prompt_field="text", task_field="kind")
    assert list(pool.ids) == ["0", "1", "2", "3", "4"]
    codes, names = pool.task_codes()
    assert names == ["a", "b"] and codes.tolist() == [0, 0, 1, 1, 1]
    assert not pool.has_responses
    numbered = load_pool(tmp_path / "p.jsonl", id_field=None, prompt_field="text")
    assert list(numbered.ids) == ["0", "1", "2", "3", "4"]


def test_mixed_types_fall_back_to_python(tmp_path):
    rows = [{"id": 1, "prompt": "a"}, {"id": "x", "prompt": "b", "extra": [1, 2]}]
    pool = load_pool(_jsonl(tmp_path / "p.jsonl", rows))
    assert list(pool.ids) == ["1", "x"] and pool.prompts() == ["a", "b"]


def test_malformed_line_names_file_and_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"id": "a", "prompt": "x"}\n{"id": "b", "prompt": "y"}\n{"id": "c", "prompt": \n')
    with pytest.raises(DesignError, match=r"bad\.jsonl:3: malformed JSON"):
        load_pool(p)
    p.write_text('{"id": "a", "prompt": "x"}\n[1, 2]\n')
    with pytest.raises(DesignError, match=r"bad\.jsonl:2: each line must be a JSON object"):
        load_pool(p)


def test_non_utf8_reported_with_line(tmp_path):
    p = tmp_path / "latin.jsonl"
    p.write_bytes(b'{"id": "a", "prompt": "ok"}\n{"id": "b", "prompt": "caf\xe9"}\n')
    with pytest.raises(DesignError, match=r"latin\.jsonl:2: not UTF-8"):
        load_pool(p)
    c = tmp_path / "latin.csv"
    c.write_bytes(b"id,prompt\na,ok\nb,caf\xe9\n")
    with pytest.raises(DesignError, match=r"latin\.csv:3: not UTF-8"):
        load_pool(c)


def test_csv_bad_row_names_line(tmp_path):
    c = tmp_path / "bad.csv"
    c.write_text("id,prompt\na,x\nb,y,extra\n")
    with pytest.raises(DesignError, match=r"bad\.csv:3: expected 2 fields, found 3"):
        load_pool(c)


def test_missing_fields_are_named(tmp_path):
    p = _jsonl(tmp_path / "p.jsonl", [{"key": "a", "text": "x"}])
    with pytest.raises(DesignError, match=r"missing field\(s\) 'id', 'prompt'.*'key', 'text'"):
        load_pool(p)
    with pytest.raises(DesignError, match=r"missing field\(s\) 'label'"):
        load_pool(p, id_field="key", prompt_field="text", task_field="label")
    with pytest.raises(DesignError, match="does not exist"):
        load_pool(tmp_path / "nope.jsonl")
    with pytest.raises(DesignError, match="unknown pool format"):
        load_pool(_jsonl(tmp_path / "p.txt", [{"id": "a"}]))


def test_duplicate_ids_refused_duplicate_and_empty_prompts_reported(tmp_path):
    with pytest.raises(DesignError, match="ids must be unique; repeated: 'a'"):
        load_pool(_jsonl(tmp_path / "d.jsonl", [{"id": "a", "prompt": "x"}, {"id": "a", "prompt": "y"}]))
    rows = [{"id": "a", "prompt": "x"}, {"id": "b", "prompt": "  "}, {"id": "c", "prompt": "x"},
            {"id": "d", "prompt": None}, {"id": "e", "prompt": "y"}]
    report = load_pool(_jsonl(tmp_path / "r.jsonl", rows)).report()
    assert (report.rows, report.duplicate_prompts, report.empty_prompts) == (5, 1, 2)
    assert report.examples == ["b", "c", "d"]


def test_content_hash_ignores_chunking_and_ids():
    a = pool_from_rows(ROWS)
    chunked = pa.Table.from_batches(a.table.to_batches(max_chunksize=3))
    assert chunked.column("prompt").num_chunks > 1
    from frugalft.design import Pool

    assert Pool(chunked).content_hash() == a.content_hash()
    renamed = pool_from_rows([{**r, "id": "z" + r["id"]} for r in ROWS])
    assert renamed.content_hash() == a.content_hash()
    changed = pool_from_rows([{**r, "prompt": r["prompt"] + "!"} if r["id"] == "q5" else r for r in ROWS])
    assert changed.content_hash() != a.content_hash()


@pytest.mark.parametrize("budget,match", [(0, "at least 1"), (-3, "at least 1"), (21, "larger than the pool"),
                                          (2.5, "must be an integer")])
def test_bad_budgets(budget, match):
    with pytest.raises(DesignError, match=match):
        select_prompts(pool_from_rows(ROWS), "random", budget)


def test_unknown_strategy_and_parameter_named():
    pool = pool_from_rows(ROWS)
    with pytest.raises(DesignError, match="unknown strategy 'nope'; choose from .*facility-location.*random"):
        select_prompts(pool, "nope", 3)
    with pytest.raises(DesignError, match="no parameter\\(s\\) sigmaa; valid: .*sigma"):
        select_prompts(pool, "facility-location", 3, params={"sigmaa": 1})


def test_random_is_seeded_and_selection_roundtrips(tmp_path):
    from frugalft.design import Selection

    pool = pool_from_rows(ROWS)
    a, b = select_prompts(pool, "random", 5, seed=3), select_prompts(pool, "random", 5, seed=3)
    assert a.indices.tolist() == b.indices.tolist() and len(set(a.indices.tolist())) == 5
    assert a.ids == [f"q{i}" for i in a.indices]
    a.save(tmp_path / "s.jsonl")
    first = json.loads((tmp_path / "s.jsonl").read_text().splitlines()[0])
    assert first["rank"] == 1 and first["id"] == a.ids[0] and first["params"]["seed"] == 3
    back = Selection.load(tmp_path / "s.jsonl")
    assert back.indices.tolist() == a.indices.tolist() and back.strategy == "random"
    assert np.isnan(back.scores).all()
