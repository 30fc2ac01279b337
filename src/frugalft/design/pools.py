"""Pools of unlabeled prompts: load JSONL, CSV, Parquet or a Hugging Face ``datasets`` directory into one
Arrow table (no Python object per row), check it, and report duplicates and empty prompts.

A pool row is ``{"id", "prompt", "task"?, "response"?}``; the field names are configurable. Ids must be unique
(selections and annotator answers are joined on them); duplicate and empty prompts are reported, not refused.
The layouts TRL trains on are read too (what ``frugalft merge`` writes): with the default field names, a
``completion`` field stands for ``response``, and single-turn ``messages`` (``[user]`` or ``[user, assistant]``)
stand for ``prompt`` and ``response``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


class DesignError(ValueError):
    """A user mistake in pools, selections or strategy settings; the message says what and where."""


@dataclass
class PoolReport:
    """What a user should know about a pool before spending labels on it."""

    rows: int
    duplicate_prompts: int  # rows whose prompt already appeared earlier (exact match)
    empty_prompts: int  # rows whose prompt is missing or only whitespace
    examples: list[str] = field(default_factory=list)  # a few ids of duplicate/empty rows, for a quick look

    def lines(self) -> list[str]:
        out = [f"{self.rows} prompts"]
        if self.duplicate_prompts:
            out.append(f"{self.duplicate_prompts} duplicate prompts (kept; selection may pick both copies)")
        if self.empty_prompts:
            out.append(f"{self.empty_prompts} empty prompts (kept; consider removing them)")
        if self.examples:
            out.append("e.g. ids " + ", ".join(self.examples))
        return out


@dataclass
class Pool:
    """Prompts as Arrow columns: ``id``, ``prompt`` and optionally ``task`` and ``response`` (all strings)."""

    table: pa.Table
    source: str = "<memory>"

    def __len__(self) -> int:
        return self.table.num_rows

    @property
    def has_tasks(self) -> bool:
        return "task" in self.table.column_names

    @property
    def has_responses(self) -> bool:
        return "response" in self.table.column_names

    @property
    def ids(self) -> np.ndarray:
        """Ids as a NumPy array of str (materialised on demand; fine up to millions of rows)."""
        return np.asarray(self.table.column("id").to_numpy(zero_copy_only=False), dtype=object)

    def prompts(self, indices: np.ndarray | None = None) -> list[str]:
        """Prompt strings, all or at ``indices``: Python strings only for the rows asked for."""
        col = self.table.column("prompt")
        if indices is not None:
            col = col.take(pa.array(np.asarray(indices, dtype=np.int64)))
        return col.to_pylist()

    def task_codes(self) -> tuple[np.ndarray, list[str]]:
        """(code per row, task names): tasks as small integers, for counting and balancing."""
        if not self.has_tasks:
            raise DesignError(f"{self.source} has no task field; this strategy needs one (see --task-field)")
        enc = self.table.column("task").combine_chunks().dictionary_encode()
        return enc.indices.to_numpy(zero_copy_only=False).astype(np.int64), enc.dictionary.to_pylist()

    def rows(self, indices: np.ndarray) -> list[dict]:
        return self.table.take(pa.array(np.asarray(indices, dtype=np.int64))).to_pylist()

    def content_hash(self) -> str:
        """Hash of the prompts in order (not the ids): features depend on nothing else. Chunking-invariant."""
        lengths, data = hashlib.blake2b(digest_size=16), hashlib.blake2b(digest_size=16)
        for chunk in self.table.column("prompt").chunks:
            chunk = chunk.cast(pa.large_string())
            offs = np.frombuffer(chunk.buffers()[1], dtype=np.int64)[chunk.offset: chunk.offset + len(chunk) + 1]
            lengths.update(np.diff(offs).tobytes())
            if len(offs) and chunk.buffers()[2] is not None:
                data.update(memoryview(chunk.buffers()[2])[offs[0]: offs[-1]])
        return hashlib.blake2b(lengths.digest() + data.digest(), digest_size=12).hexdigest()

    def report(self) -> PoolReport:
        prompts = self.table.column("prompt")
        empty = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(prompts), ""), True)
        n_empty = pc.sum(empty).as_py() or 0
        # Duplicates via a hash of each prompt, vectorised: group sizes of the dictionary encoding.
        codes = prompts.combine_chunks().dictionary_encode().indices.to_numpy(zero_copy_only=False)
        first = np.zeros(len(codes), dtype=bool)
        _, first_pos = np.unique(codes, return_index=True)
        first[first_pos] = True
        dup = ~first
        ids = self.table.column("id")
        flagged = np.flatnonzero(dup | empty.to_numpy(zero_copy_only=False))[:5]
        return PoolReport(len(self), int(dup.sum()), int(n_empty), [ids[int(i)].as_py() for i in flagged])


def pool_from_rows(rows: list[dict], source: str = "<memory>") -> Pool:
    """A pool from Python dicts with keys id, prompt, task?, response? (tests and small tools)."""
    return _finish(pa.Table.from_pylist(rows), source, "id", "prompt", "task", "response", False)


def load_pool(
    path: str | Path,
    id_field: str | None = "id",
    prompt_field: str = "prompt",
    task_field: str | None = "task",
    response_field: str | None = "response",
    split: str | None = None,
) -> Pool:
    """Load a pool from ``.jsonl``/``.json``, ``.csv``, ``.parquet`` or a ``datasets.save_to_disk`` directory.

    ``id_field=None`` numbers the rows instead. The task and response fields are optional when left at their
    defaults; named explicitly, they must exist. ``split`` picks a split of a saved ``DatasetDict``.
    """
    path = Path(path)
    if not path.exists():
        raise DesignError(f"pool {path} does not exist")
    if path.is_dir():
        table = _read_hf_dir(path, split)
    else:
        suffix = "".join(path.suffixes[-1:]).lower()
        if suffix in (".jsonl", ".json", ".ndjson"):
            table = _read_jsonl(path)
        elif suffix in (".csv", ".tsv"):
            table = _read_csv(path, delimiter="\t" if suffix == ".tsv" else ",")
        elif suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            try:
                table = pq.read_table(path)
            except (pa.ArrowInvalid, OSError) as e:
                raise DesignError(f"{path}: not a readable Parquet file: {e}") from None
        else:
            raise DesignError(f"{path}: unknown pool format {suffix!r}; use .jsonl, .csv, .tsv, .parquet "
                              "or a datasets directory (save_to_disk)")
    explicit_optional = task_field not in (None, "task"), response_field not in (None, "response")
    return _finish(table, str(path), id_field, prompt_field, task_field, response_field, explicit_optional)


def _finish(table: pa.Table, source: str, id_field: str | None, prompt_field: str, task_field: str | None,
            response_field: str | None, explicit_optional: bool | tuple[bool, bool]) -> Pool:
    """Rename to the canonical columns, cast to strings, check ids are present and unique."""
    if isinstance(explicit_optional, bool):
        explicit_optional = (explicit_optional, explicit_optional)
    names = table.column_names
    # TRL's layouts under the default names: conversational rows, and prompt-completion rows.
    if prompt_field == "prompt" and "prompt" not in names and "messages" in names:
        table = _from_messages(table, source, response_field == "response")
        names = table.column_names
    if response_field == "response" and "response" not in names and "completion" in names:
        response_field = "completion"
    required = [f for f in (id_field, prompt_field) if f is not None]
    required += [f for f, must in zip((task_field, response_field), explicit_optional, strict=True) if must and f]
    missing = [f for f in required if f not in names]
    if missing:
        raise DesignError(f"{source}: missing field(s) {', '.join(map(repr, missing))}; the rows have "
                          f"{', '.join(map(repr, names)) or 'no fields'} (choose with --id-field/--prompt-field/"
                          "--task-field/--response-field)")
    cols: dict[str, pa.ChunkedArray] = {}
    if id_field is None:
        cols["id"] = pa.chunked_array([pa.array(np.arange(table.num_rows).astype(str))])
    else:
        cols["id"] = _as_string(table.column(id_field), source, id_field)
    cols["prompt"] = _as_string(table.column(prompt_field), source, prompt_field)
    for canon, f in (("task", task_field), ("response", response_field)):
        if f is not None and f in names:
            cols[canon] = _as_string(table.column(f), source, f)
    out = pa.table(cols)
    ids = out.column("id")
    if ids.null_count:
        first = int(np.flatnonzero(ids.is_null().to_numpy(zero_copy_only=False))[0])
        raise DesignError(f"{source}: row {first + 1} has no id (field {id_field!r})")
    if pc.count_distinct(ids).as_py() != out.num_rows:
        codes = ids.combine_chunks().dictionary_encode()
        counts = np.bincount(codes.indices.to_numpy(zero_copy_only=False))
        dupes = [codes.dictionary[int(c)].as_py() for c in np.flatnonzero(counts > 1)[:5]]
        raise DesignError(f"{source}: ids must be unique; repeated: {', '.join(map(repr, dupes))}")
    return Pool(out, source)


def _from_messages(table: pa.Table, source: str, with_response: bool) -> pa.Table:
    """Single-turn ``messages`` rows as ``prompt`` (the user turn) and ``response`` (the assistant turn, if any)."""
    prompts, responses = [], []
    for i, msgs in enumerate(table.column("messages").to_pylist(), start=1):
        if isinstance(msgs, str):  # the line-by-line JSON reader keeps nested values as JSON text
            try:
                msgs = json.loads(msgs)
            except json.JSONDecodeError:
                msgs = None
        roles = [m.get("role") if isinstance(m, dict) else None for m in msgs] if isinstance(msgs, list) else None
        if roles not in (["user"], ["user", "assistant"]):
            raise DesignError(f"{source}: row {i}: 'messages' must be [user] or [user, assistant] turns (one "
                              f"prompt and its answer), got roles {roles}; write prompt/completion fields for "
                              "anything else")
        content = [m.get("content") for m in msgs]
        if not all(c is None or isinstance(c, str) for c in content):
            raise DesignError(f"{source}: row {i}: message content must be text")
        prompts.append(content[0])
        responses.append(content[1] if len(content) > 1 else None)
    table = table.drop_columns(["messages"]).append_column("prompt", pa.array(prompts, type=pa.string()))
    if with_response and "response" not in table.column_names and any(r is not None for r in responses):
        table = table.append_column("response", pa.array(responses, type=pa.string()))
    return table


def _as_string(col: pa.ChunkedArray, source: str, name: str) -> pa.ChunkedArray:
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        return col
    if pa.types.is_null(col.type):
        return col.cast(pa.string())
    try:
        return col.cast(pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise DesignError(f"{source}: field {name!r} must hold text or numbers, found {col.type}") from None


def _read_jsonl(path: Path) -> pa.Table:
    """Fast path: Arrow's multithreaded JSON reader. On any error, a line-by-line pass finds the culprit
    (file:line) or, for rows Arrow cannot type (an id that is a number in one row and text in another),
    builds the table itself."""
    import pyarrow.json as pj

    try:
        table = pj.read_json(path, read_options=pj.ReadOptions(block_size=1 << 24))
        table.validate(full=True)  # Arrow's JSON reader lets invalid UTF-8 through; this catches it
        return table
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        pass
    rows: dict[str, list] = {}
    n = 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DesignError(f"{path}:{lineno}: not UTF-8 text ({e.reason} at byte {e.start})") from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DesignError(f"{path}:{lineno}: malformed JSON ({e.msg}, column {e.colno})") from None
            if not isinstance(obj, dict):
                raise DesignError(f"{path}:{lineno}: each line must be a JSON object, got {type(obj).__name__}")
            for k in obj.keys() - rows.keys():
                rows[k] = [None] * n
            for k, col in rows.items():
                v = obj.get(k)
                col.append(v if v is None or isinstance(v, str) else json.dumps(v) if isinstance(v, (dict, list))
                           else str(v))
            n += 1
    if n == 0:
        raise DesignError(f"{path}: the pool is empty")
    return pa.table({k: pa.array(v, type=pa.string()) for k, v in rows.items()})


def _read_csv(path: Path, delimiter: str) -> pa.Table:
    import pyarrow.csv as pcsv

    try:
        with open(path, "rb") as f:
            header = next(csv.reader([f.readline().decode("utf-8")], delimiter=delimiter), None)
    except UnicodeDecodeError as e:
        raise DesignError(f"{path}:1: not UTF-8 text ({e.reason})") from None
    if not header:
        raise DesignError(f"{path}: the pool is empty (no header line)")
    try:
        return pcsv.read_csv(
            path,
            parse_options=pcsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
            convert_options=pcsv.ConvertOptions(column_types={h: pa.string() for h in header},
                                                strings_can_be_null=False),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError):
        pass
    # Locate the bad record with Python's csv module, which counts physical lines.
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        lineno = data[: e.start].count(b"\n") + 1
        raise DesignError(f"{path}:{lineno}: not UTF-8 text ({e.reason})") from None
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    width = None
    for record in reader:
        if width is None:
            width = len(record)
        elif record and len(record) != width:
            raise DesignError(f"{path}:{reader.line_num}: expected {width} fields, found {len(record)}")
    raise DesignError(f"{path}: could not parse as CSV")


def _read_hf_dir(path: Path, split: str | None) -> pa.Table:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except FileNotFoundError as e:
        raise DesignError(f"{path}: not a datasets directory saved with save_to_disk ({e})") from None
    if isinstance(ds, datasets.DatasetDict):
        if split is None:
            if len(ds) != 1:
                raise DesignError(f"{path} holds splits {', '.join(ds)}; choose one with --split")
            split = next(iter(ds))
        if split not in ds:
            raise DesignError(f"{path}: no split {split!r}; it has {', '.join(ds)}")
        ds = ds[split]
    if ds._indices is not None:  # a filtered/shuffled view: materialise the rows it selects
        ds = ds.flatten_indices()
    return ds.data.table
