"""The built-in benchmark pool: task count and long-tailed mix, pool/eval disjointness, determinism, and
mined/procedural answers checked against a second computation."""

from __future__ import annotations

import ast
import json
import re
from collections import Counter

import pytest

from frugalft.design.builtin_pool import TASKS, PoolBuildConfig, PoolBuildError, build_pool, task_shares

SMALL_SOURCES = ["json", "email", "logging", "textwrap", "calendar", "argparse", "typer"]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("pool") / "p"
    cfg = PoolBuildConfig(out=str(out), n_pool=1500, eval_per_task=4, seed=3, sources=SMALL_SOURCES)
    manifest = build_pool(cfg)
    pool = [json.loads(line) for line in (out / "pool.jsonl").read_text().splitlines()]
    ev = [json.loads(line) for line in (out / "eval.jsonl").read_text().splitlines()]
    return cfg, manifest, pool, ev


def test_task_count_and_long_tail(small):
    cfg, manifest, pool, ev = small
    counts = Counter(r["task"] for r in pool)
    assert len(TASKS) >= 20 and set(counts) == set(TASKS)
    assert len(pool) == cfg.n_pool == manifest["n_pool"]
    assert all(set(r) == {"id", "prompt", "response", "task"} for r in pool)
    # Long tail: the head task has many times the tail's share, and counts follow the Zipf quotas closely.
    shares = task_shares(cfg.seed, cfg.zipf_alpha)
    head = max(shares, key=shares.get)
    assert counts[head] / min(counts.values()) > 8
    # Total variation from the Zipf quotas is small (only a task whose supply ran out moves its share).
    assert sum(abs(counts[t] - s * cfg.n_pool) for t, s in shares.items()) < 0.05 * cfg.n_pool


def test_eval_is_disjoint_and_balanced(small):
    _, manifest, pool, ev = small
    assert Counter(r["task"] for r in ev) == {t: 4 for t in TASKS}
    assert not {r["prompt"] for r in ev} & {r["prompt"] for r in pool}
    assert len({r["prompt"] for r in pool}) == len(pool)  # no duplicate prompts
    assert len({r["id"] for r in pool + ev}) == len(pool) + len(ev)
    # Mined functions are split, not just prompts: no qualified name asked about on both sides.
    def names(rows):
        return {re.search(r"`([^`]+)`", r["prompt"]).group(1) for r in rows if r["task"] == "doc2module"}
    assert not names(ev) & names(pool)


def test_deterministic_and_manifest(small, tmp_path):
    cfg, manifest, _, _ = small
    again = build_pool(PoolBuildConfig(**{**cfg.__dict__, "out": str(tmp_path / "again")}))
    assert again["pool.jsonl_sha256"] == manifest["pool.jsonl_sha256"]
    assert again["eval.jsonl_sha256"] == manifest["eval.jsonl_sha256"]
    mods = {p["module"]: p for p in manifest["packages"]}
    assert set(mods) == set(SMALL_SOURCES)
    assert mods["json"]["version"].startswith("python-stdlib-") and len(mods["json"]["sha256"]) == 64
    other = build_pool(PoolBuildConfig(**{**cfg.__dict__, "out": str(tmp_path / "other"), "seed": 4}))
    assert other["pool.jsonl_sha256"] != manifest["pool.jsonl_sha256"]


def test_answers_are_right(small):
    """Recompute answers another way: parse signatures with ast, evaluate arithmetic, re-split words."""
    _, _, pool, ev = small
    checked = Counter()
    for r in pool + ev:
        p, a, t = r["prompt"], r["response"], r["task"]
        if t == "sig2params":
            sig = p.split("\n\n", 1)[1]
            fn = ast.parse(sig + "\n    pass").body[0]
            params = [x.arg for x in fn.args.posonlyargs + fn.args.args + fn.args.kwonlyargs]
            params += [x.arg for x in (fn.args.vararg, fn.args.kwarg) if x]
            order = {x.arg: x.col_offset for x in ast.walk(fn) if isinstance(x, ast.arg)}
            assert a == ", ".join(sorted((q for q in params if q not in ("self", "cls")), key=order.get))
        elif t == "add":
            x, y = map(int, re.findall(r"\d+", p))
            assert int(a) == x + y
        elif t == "multiply":
            x, y = map(int, re.findall(r"\d+", p))
            assert int(a) == x * y
        elif t == "date_format":
            y, m, d = re.search(r"(\d{4})-(\d{2})-(\d{2})", p).groups()
            assert a == f"{d}/{m}/{y}"
        elif t == "count_words":
            assert int(a) == len(p.split("\n", 1)[1].split())
        elif t == "snake2camel":
            name = re.search(r"`([^`]+)`", p).group(1)
            assert a.lower() == name.replace("_", "") and "_" not in a
        elif t == "code2name":
            assert "def ___(" in p and a.isidentifier()
        else:
            continue
        checked[t] += 1
    assert len(checked) == 7 and min(checked.values()) >= 4


def test_bad_settings_are_refused(tmp_path):
    with pytest.raises(PoolBuildError, match="n_pool"):
        build_pool(PoolBuildConfig(out=str(tmp_path / "x"), n_pool=3, sources=SMALL_SOURCES))
    with pytest.raises(PoolBuildError, match="not installed"):
        build_pool(PoolBuildConfig(out=str(tmp_path / "y"), n_pool=100, sources=["no_such_module_xyz"]))
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
