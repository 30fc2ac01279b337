"""The built-in offline benchmark pool: >= 20 task types, a long-tailed task mix, and a disjoint eval set.

Two kinds of tasks, all answerable from the prompt alone or from general Python knowledge:

- **mined** from real code no one here wrote: the source and docstrings of installed Python packages, read
  with ``ast`` (never imported). docstring -> function name, code -> one-line summary, signature -> parameter
  list, ... The packages and their versions are pinned in ``manifest.json``; the same versions and seed give
  byte-identical files.
- **procedural** instruction tasks: arithmetic, string and list transformations, format conversions. Their
  words come from the mined docstrings, so even these read like real text.

Leakage: mined *functions* (not just prompts) are split between pool and eval by a hash of their qualified
name, so no function seen in the pool is asked about in the eval set; every eval prompt text is also checked
absent from the pool. The pool's task mix is Zipf-like (share of the k-th task ~ 1 / k^alpha, task order
shuffled by the seed); the eval set has the same number of prompts per task, so its overall mean is the
macro average over tasks.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import importlib.util
import json
import random
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

from frugalft.atomic import atomic_path, write_json

BUILDER_VERSION = 1

# Standard-library modules (pinned by the Python version) and frugalft's own dependencies (pinned by their
# versions in the manifest). Pure-Python, docstring-rich, and installed wherever frugalft is.
DEFAULT_SOURCES: list[str] = [
    "argparse", "ast", "asyncio", "calendar", "collections", "concurrent", "configparser", "contextlib",
    "csv", "dataclasses", "datetime", "decimal", "difflib", "email", "enum", "fractions", "ftplib",
    "functools", "gettext", "glob", "gzip", "heapq", "html", "http", "imaplib", "importlib", "inspect",
    "ipaddress", "json", "logging", "mailbox", "multiprocessing", "optparse", "pathlib", "pdb", "pickle",
    "pprint", "pydoc", "random", "shlex", "shutil", "smtplib", "statistics", "string", "subprocess",
    "tarfile", "tempfile", "textwrap", "threading", "tokenize", "typing", "unittest", "urllib", "uuid",
    "xml", "zipfile",
    "click", "numpy", "rich", "tqdm", "typer", "yaml", "pandas", "matplotlib", "datasets", "accelerate",
    "peft", "gymnasium", "requests",
]


class PoolBuildError(ValueError):
    pass


@dataclass
class PoolBuildConfig:
    out: str = "pool"  # output directory: pool.jsonl, eval.jsonl, manifest.json
    n_pool: int = 20000  # prompts in the pool (>= 20k is the benchmark's size; tests build ~1k)
    eval_per_task: int = 40  # held-out prompts per task type (equal per task: overall = macro average)
    seed: int = 0  # everything random (task order, sampling, numbers) derives from it
    zipf_alpha: float = 1.0  # long tail: the k-th most common task gets a share ~ 1/k^alpha
    eval_function_fraction: float = 0.15  # share of mined functions reserved for the eval set
    sources: list[str] = field(default_factory=lambda: list(DEFAULT_SOURCES))  # top-level modules to mine


# ----------------------------------------------------------------------------------------------- mining


@dataclass
class FunctionRecord:
    module: str  # dotted module path, e.g. json.decoder
    qualname: str  # Class.method or function
    name: str
    source: str  # the def with its docstring removed
    signature: str  # the def line(s), e.g. "def dumps(obj, *, skipkeys=False):"
    params: list[str]  # parameter names without self/cls, in order
    defaults: list[tuple[str, str]]  # (name, default source) for parameters with defaults
    calls: list[str]  # called function names, in order of first appearance
    summary: str  # the docstring's first sentence
    doc: str  # the docstring's first paragraph
    returns: str | None  # the return annotation's source, if any
    split: str = "pool"  # "pool" or "eval" (by a hash of module.qualname)


@dataclass
class ClassRecord:
    module: str
    name: str
    skeleton: str  # the class with method bodies elided
    methods: list[str]  # public method names in order
    split: str = "pool"


def _source_files(module: str) -> tuple[list[Path], Path, str]:
    """The .py files of a top-level module (sorted, tests excluded), its root, and its distribution version."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin in (None, "built-in", "frozen"):
        raise PoolBuildError(f"cannot mine {module!r}: not installed as Python source")
    origin = Path(spec.origin)
    if spec.submodule_search_locations:
        root = origin.parent
        files = sorted(p for p in root.rglob("*.py") if not ({"tests", "test", "testing"} & set(p.relative_to(root).parts)))
    else:
        root = origin.parent
        files = [origin]
    return files, root, _version_of(module, origin)


def _version_of(module: str, origin: Path) -> str:
    stdlib = Path(sys.base_prefix)
    if str(origin).startswith(str(stdlib)) and "site-packages" not in origin.parts:
        return f"python-stdlib-{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"
    dists = importlib.metadata.packages_distributions().get(module, [module])
    for dist in dists:
        try:
            return f"{dist}=={importlib.metadata.version(dist)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


def _first_sentence(doc: str) -> str:
    para = doc.strip().split("\n\n")[0]
    para = " ".join(para.split())
    m = re.match(r"(.+?[.!?])(\s|$)", para)
    return (m.group(1) if m else para).strip()


def _strip_docstring(node: ast.AST) -> None:
    body = getattr(node, "body", None)
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
            and isinstance(body[0].value.value, str):
        node.body = body[1:] or [ast.Expr(ast.Constant(...))]


def _called_names(node: ast.AST) -> list[str]:
    """Names of the functions and methods called in ``node``, in order of first appearance in the source."""
    first: dict[str, tuple[int, int]] = {}
    for sub in ast.walk(node):
        if isinstance(sub, ast.Call):
            f = sub.func
            if isinstance(f, ast.Name):
                name, pos = f.id, (f.lineno, f.col_offset)
            elif isinstance(f, ast.Attribute):  # obj.method(...): where ".method" ends
                name, pos = f.attr, (f.end_lineno or 0, f.end_col_offset or 0)
            else:
                continue
            first[name] = min(first.get(name, pos), pos)
    return sorted(first, key=first.__getitem__)


def _record_function(fn: ast.FunctionDef | ast.AsyncFunctionDef, module: str, qualname: str) -> FunctionRecord | None:
    doc = ast.get_docstring(fn)
    if not doc or fn.name.startswith("__"):
        return None
    summary = _first_sentence(doc)
    if not (15 <= len(summary) <= 160) or not summary[0].isalpha():
        return None
    fn = _copy(fn)
    _strip_docstring(fn)
    fn.decorator_list = []
    try:
        source = ast.unparse(fn)
    except (ValueError, RecursionError):
        return None
    if len(source) > 1200 or len(fn.name) < 3:
        return None
    header = source.split("\n", 1)[0]
    args = fn.args
    positional = args.posonlyargs + args.args
    names = [a.arg for a in positional + ([args.vararg] if args.vararg else []) + args.kwonlyargs
             + ([args.kwarg] if args.kwarg else [])]
    params = [n for n in names if n not in ("self", "cls")]
    defaults: list[tuple[str, str]] = []
    for a, d in zip(positional[len(positional) - len(args.defaults):], args.defaults, strict=True):
        defaults.append((a.arg, ast.unparse(d)))
    for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True):
        if d is not None:
            defaults.append((a.arg, ast.unparse(d)))
    doc_para = " ".join(doc.strip().split("\n\n")[0].split())[:300]
    return FunctionRecord(
        module=module, qualname=qualname, name=fn.name, source=source, signature=header, params=params,
        defaults=defaults, calls=_called_names(fn), summary=summary, doc=doc_para,
        returns=ast.unparse(fn.returns) if fn.returns is not None else None,
    )


def _copy(node: ast.AST) -> ast.AST:
    return ast.parse(ast.unparse(node)).body[0]


def _record_class(cls: ast.ClassDef, module: str) -> ClassRecord | None:
    methods = [b.name for b in cls.body if isinstance(b, (ast.FunctionDef, ast.AsyncFunctionDef))
               and not b.name.startswith("_")]
    if not (2 <= len(methods) <= 8) or cls.name.startswith("_"):
        return None
    skel = _copy(cls)
    skel.decorator_list = []
    _strip_docstring(skel)
    for b in skel.body:
        if isinstance(b, (ast.FunctionDef, ast.AsyncFunctionDef)):
            b.body = [ast.Expr(ast.Constant(...))]
            b.decorator_list = []
    text = ast.unparse(skel)
    if len(text) > 900:
        return None
    return ClassRecord(module=module, name=cls.name, skeleton=text, methods=methods)


@lru_cache(maxsize=4)
def _mine_cached(sources: tuple[str, ...]) -> tuple[list[FunctionRecord], list[ClassRecord], list[dict]]:
    return mine(list(sources))


def mine(sources: list[str]) -> tuple[list[FunctionRecord], list[ClassRecord], list[dict]]:
    """Parse every source file of each module; return functions, classes and the manifest's package list."""
    functions: list[FunctionRecord] = []
    classes: list[ClassRecord] = []
    packages: list[dict] = []
    for top in sources:
        files, root, version = _source_files(top)
        digest = hashlib.sha256()
        n_before = len(functions)
        for path in files:
            data = path.read_bytes()
            digest.update(path.name.encode() + b"\0" + data)
            try:
                tree = ast.parse(data, filename=str(path))
            except (SyntaxError, ValueError):
                continue
            if path == Path(importlib.util.find_spec(top).origin) and path.name != "__init__.py":
                module = top  # a single-file module
            else:
                rel = path.relative_to(root).with_suffix("").parts
                module = ".".join([top, *[p for p in rel if p != "__init__"]])
            for node in tree.body:
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    rec = _record_function(node, module, node.name)
                    if rec:
                        functions.append(rec)
                elif isinstance(node, ast.ClassDef):
                    crec = _record_class(node, module)
                    if crec:
                        classes.append(crec)
                    for sub in node.body:
                        if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)) and not sub.name.startswith("_"):
                            rec = _record_function(sub, module, f"{node.name}.{sub.name}")
                            if rec:
                                functions.append(rec)
        packages.append({"module": top, "version": version, "files": len(files),
                         "functions": len(functions) - n_before, "sha256": digest.hexdigest()})
    return functions, classes, packages


def _split_of(key: str, eval_fraction: float) -> str:
    h = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "eval" if h < eval_fraction else "pool"


# ------------------------------------------------------------------------------------------------ tasks
# Each task maps (rng, resources, split) to (prompt, response) or None when that item does not fit.


@dataclass
class Resources:
    functions: dict[str, list[FunctionRecord]]  # by split
    classes: dict[str, list[ClassRecord]]
    words: list[str]  # lower-case words from docstrings (procedural tasks' vocabulary)
    sentences: list[str]  # short docstring sentences
    identifiers: list[str]  # snake_case function names with >= 2 parts


Generator = Callable[[random.Random, Resources, str], tuple[str, str] | None]


def _fn(rng: random.Random, res: Resources, split: str) -> FunctionRecord:
    return rng.choice(res.functions[split])


def t_doc2name(rng, res, split):
    f = _fn(rng, res, split)
    return f"Here is the docstring of a Python function:\n\n{f.doc}\n\nWhat is the function's name?", f.name


def t_code2summary(rng, res, split):
    f = _fn(rng, res, split)
    return f"Summarize in one sentence what this Python function does.\n\n{f.source}", f.summary


def t_code2name(rng, res, split):
    f = _fn(rng, res, split)
    masked = re.sub(rf"\b{re.escape(f.name)}\b", "___", f.source)
    return f"This Python function's name was replaced by ___. What is its name?\n\n{masked}", f.name


def t_sig2params(rng, res, split):
    f = _fn(rng, res, split)
    if not f.params:
        return None
    return (f"List the parameter names of this Python signature (without self or cls), separated by commas.\n\n"
            f"{f.signature}", ", ".join(f.params))


def t_sig2defaults(rng, res, split):
    f = _fn(rng, res, split)
    if not f.defaults:
        return None
    return (f"Which parameters of this Python signature have default values? Answer as name=default, "
            f"separated by commas.\n\n{f.signature}", ", ".join(f"{n}={d}" for n, d in f.defaults))


def t_param_count(rng, res, split):
    f = _fn(rng, res, split)
    return (f"How many parameters does this Python signature take, not counting self or cls?\n\n{f.signature}",
            str(len(f.params)))


def t_code2calls(rng, res, split):
    f = _fn(rng, res, split)
    if not (1 <= len(f.calls) <= 8):
        return None
    return (f"List the functions and methods this code calls, in order of first appearance, separated by "
            f"commas.\n\n{f.source}", ", ".join(f.calls))


def t_doc2module(rng, res, split):
    f = _fn(rng, res, split)
    return (f"Which Python module defines `{f.qualname}`, documented as \"{f.summary}\"? Answer with the dotted "
            f"module path.", f.module)


def t_code2returns(rng, res, split):
    f = _fn(rng, res, split)
    if not f.returns or len(f.returns) > 40:
        return None
    stripped = f.source.replace(f" -> {f.returns}:", ":", 1)
    return (f"This function's return annotation was removed. What type does it return?\n\n{stripped}", f.returns)


def t_class2methods(rng, res, split):
    c = rng.choice(res.classes[split]) if res.classes[split] else None
    if c is None:
        return None
    return (f"List the public methods this Python class defines, in order, separated by commas.\n\n{c.skeleton}",
            ", ".join(c.methods))


def t_snake2camel(rng, res, split):
    name = rng.choice(res.identifiers)
    head, *rest = name.split("_")
    return f"Convert the identifier `{name}` to camelCase.", head + "".join(p.capitalize() for p in rest)


def t_add(rng, res, split):
    a, b = rng.randint(10, 9999), rng.randint(10, 9999)
    return f"What is {a} + {b}?", str(a + b)


def t_subtract(rng, res, split):
    a, b = rng.randint(10, 999), rng.randint(10, 999)
    return f"Compute {a} - {b}.", str(a - b)


def t_multiply(rng, res, split):
    a, b = rng.randint(2, 99), rng.randint(2, 99)
    return f"Multiply {a} by {b}.", str(a * b)


def t_reverse_string(rng, res, split):
    w = rng.choice(res.words)
    return f"Reverse the letters of the word \"{w}\".", w[::-1]


def t_uppercase(rng, res, split):
    s = rng.choice(res.sentences)
    return f"Rewrite this sentence in upper case:\n{s}", s.upper()


def t_count_words(rng, res, split):
    s = rng.choice(res.sentences)
    return f"How many words are in this sentence?\n{s}", str(len(s.split()))


def t_reverse_words(rng, res, split):
    s = rng.choice(res.sentences)
    return f"Reverse the order of the words in this sentence:\n{s}", " ".join(reversed(s.split()))


def t_sort_numbers(rng, res, split):
    xs = [rng.randint(0, 99) for _ in range(rng.randint(4, 8))]
    return f"Sort these numbers in ascending order: {', '.join(map(str, xs))}", ", ".join(map(str, sorted(xs)))


def t_list_max(rng, res, split):
    xs = [rng.randint(-50, 200) for _ in range(rng.randint(4, 9))]
    return f"What is the largest number in [{', '.join(map(str, xs))}]?", str(max(xs))


def t_list_sum(rng, res, split):
    xs = [rng.randint(1, 50) for _ in range(rng.randint(3, 6))]
    return f"Add up these numbers: {' '.join(map(str, xs))}", str(sum(xs))


def t_dedupe_words(rng, res, split):
    base = rng.sample(res.words, rng.randint(3, 5))
    xs = base + rng.choices(base, k=rng.randint(2, 4))
    rng.shuffle(xs)
    return (f"Remove duplicates from this list, keeping the first occurrence of each word: {', '.join(xs)}",
            ", ".join(dict.fromkeys(xs)))


def t_json2kv(rng, res, split):
    keys = rng.sample(res.words, rng.randint(2, 4))
    obj = {k: rng.choice([rng.randint(0, 999), rng.choice(res.words)]) for k in keys}
    return (f"Convert this JSON object to key=value pairs separated by semicolons:\n{json.dumps(obj)}",
            "; ".join(f"{k}={v}" for k, v in obj.items()))


def t_csv2json(rng, res, split):
    keys = rng.sample(res.words, rng.randint(2, 3))
    vals = [str(rng.randint(0, 99)) for _ in keys]
    return (f"Convert this CSV (a header and one row) to a JSON object with string values:\n"
            f"{','.join(keys)}\n{','.join(vals)}", json.dumps(dict(zip(keys, vals, strict=True))))


def t_date_format(rng, res, split):
    y, m, d = rng.randint(1950, 2049), rng.randint(1, 12), rng.randint(1, 28)
    return f"Rewrite the date {y:04d}-{m:02d}-{d:02d} in DD/MM/YYYY format.", f"{d:02d}/{m:02d}/{y:04d}"


TASKS: dict[str, Generator] = {
    # mined from package source
    "doc2name": t_doc2name,
    "code2summary": t_code2summary,
    "code2name": t_code2name,
    "sig2params": t_sig2params,
    "sig2defaults": t_sig2defaults,
    "param_count": t_param_count,
    "code2calls": t_code2calls,
    "doc2module": t_doc2module,
    "code2returns": t_code2returns,
    "class2methods": t_class2methods,
    "snake2camel": t_snake2camel,
    # procedural
    "add": t_add,
    "subtract": t_subtract,
    "multiply": t_multiply,
    "reverse_string": t_reverse_string,
    "uppercase": t_uppercase,
    "count_words": t_count_words,
    "reverse_words": t_reverse_words,
    "sort_numbers": t_sort_numbers,
    "list_max": t_list_max,
    "list_sum": t_list_sum,
    "dedupe_words": t_dedupe_words,
    "json2kv": t_json2kv,
    "csv2json": t_csv2json,
    "date_format": t_date_format,
}
MINED_TASKS = {"doc2name", "code2summary", "code2name", "sig2params", "sig2defaults", "param_count",
               "code2calls", "doc2module", "code2returns", "class2methods", "snake2camel"}


def task_shares(seed: int, alpha: float) -> dict[str, float]:
    """Zipf shares over the tasks, in a seeded random order (so the head is not always the same task)."""
    names = sorted(TASKS)
    random.Random(f"order-{seed}").shuffle(names)
    weights = [1.0 / (k + 1) ** alpha for k in range(len(names))]
    total = sum(weights)
    return {n: w / total for n, w in zip(names, weights, strict=True)}


def _quotas(n: int, shares: dict[str, float]) -> dict[str, int]:
    """Integer counts summing to n (largest remainder), at least one per task."""
    raw = {t: max(1.0, s * n) for t, s in shares.items()}
    base = {t: int(v) for t, v in raw.items()}
    left = n - sum(base.values())
    for t in sorted(raw, key=lambda t: (-(raw[t] - base[t]), t))[:max(left, 0)]:
        base[t] += 1
    return base


def _draw(task: str, count: int, rng: random.Random, res: Resources, split: str, taken: set[str]) -> Iterator[tuple[str, str]]:
    """Up to ``count`` distinct (prompt, response) pairs whose prompt is not in ``taken`` (which grows)."""
    gen = TASKS[task]
    made, misses = 0, 0
    while made < count and misses < 50 * count + 1000:  # a task with a small supply stops early
        item = gen(rng, res, split)
        if item is None or item[0] in taken or not item[1].strip():
            misses += 1
            continue
        taken.add(item[0])
        made += 1
        yield item


_WORD = re.compile(r"^[a-z]{4,12}$")


def _resources(functions: list[FunctionRecord], classes: list[ClassRecord]) -> Resources:
    words = sorted({w for f in functions for w in f.summary.lower().rstrip(".").split() if _WORD.match(w)})
    sentences = sorted({f.summary for f in functions if 4 <= len(f.summary.split()) <= 14})
    identifiers = sorted({f.name for f in functions if re.fullmatch(r"[a-z]+(_[a-z]+)+", f.name)})
    by_split: dict[str, list[FunctionRecord]] = {"pool": [], "eval": []}
    for f in functions:
        by_split[f.split].append(f)
    cls_split: dict[str, list[ClassRecord]] = {"pool": [], "eval": []}
    for c in classes:
        cls_split[c.split].append(c)
    for name, lst in (("functions", by_split), ("classes", cls_split)):
        if not lst["pool"] or not lst["eval"]:
            raise PoolBuildError(f"too few {name} mined for both pool and eval splits: add sources")
    if len(words) < 20 or len(sentences) < 20 or len(identifiers) < 20:
        raise PoolBuildError("too little text mined (words, sentences or identifiers): add sources")
    return Resources(by_split, cls_split, words, sentences, identifiers)


def build_rows(cfg: PoolBuildConfig) -> tuple[list[dict], list[dict], dict]:
    """The pool rows, the eval rows, and the manifest (without file hashes)."""
    if cfg.n_pool < len(TASKS):
        raise PoolBuildError(f"n_pool must be at least the number of tasks ({len(TASKS)}), got {cfg.n_pool}")
    if cfg.eval_per_task < 1:
        raise PoolBuildError(f"eval_per_task must be at least 1, got {cfg.eval_per_task}")
    functions, classes, packages = _mine_cached(tuple(cfg.sources))
    functions = [replace(f, split=_split_of(f"{f.module}.{f.qualname}", cfg.eval_function_fraction))
                 for f in functions]
    classes = [replace(c, split=_split_of(f"{c.module}.{c.name}", cfg.eval_function_fraction)) for c in classes]
    res = _resources(functions, classes)

    # Eval first, from eval-split functions and its own RNG stream; the pool then refuses any eval prompt.
    eval_rows: list[dict] = []
    taken: set[str] = set()
    for task in sorted(TASKS):
        rng = random.Random(f"eval-{cfg.seed}-{task}")
        for i, (p, r) in enumerate(_draw(task, cfg.eval_per_task, rng, res, "eval", taken)):
            eval_rows.append({"id": f"eval-{task}-{i:05d}", "prompt": p, "response": r, "task": task})
    eval_prompts = set(taken)

    shares = task_shares(cfg.seed, cfg.zipf_alpha)
    quotas = _quotas(cfg.n_pool, shares)
    pool_rows: list[dict] = []
    made: Counter[str] = Counter()
    rngs = {task: random.Random(f"pool-{cfg.seed}-{task}") for task in sorted(TASKS)}

    def draw(task: str, count: int) -> None:
        for p, r in _draw(task, count, rngs[task], res, "pool", taken):
            pool_rows.append({"id": f"{task}-{made[task]:06d}", "prompt": p, "response": r, "task": task})
            made[task] += 1

    for task in sorted(TASKS):
        draw(task, quotas[task])
    # A task whose supply ran out leaves a deficit: top it up from the others, most common first.
    for task in sorted(TASKS, key=lambda t: -shares[t]):
        if len(pool_rows) >= cfg.n_pool:
            break
        draw(task, cfg.n_pool - len(pool_rows))
    random.Random(f"shuffle-{cfg.seed}").shuffle(pool_rows)
    assert not eval_prompts & {r["prompt"] for r in pool_rows}  # guaranteed by `taken`; cheap to check

    counts = Counter(r["task"] for r in pool_rows)
    manifest = {
        "builder_version": BUILDER_VERSION,
        "seed": cfg.seed,
        "zipf_alpha": cfg.zipf_alpha,
        "eval_function_fraction": cfg.eval_function_fraction,
        "python": sys.version.split()[0],
        "packages": packages,
        "mined_functions": len(functions),
        "mined_classes": len(classes),
        "tasks": {t: {"kind": "mined" if t in MINED_TASKS else "procedural", "share": round(shares[t], 5),
                      "pool": counts.get(t, 0), "eval": sum(r["task"] == t for r in eval_rows)}
                  for t in sorted(TASKS)},
        "n_pool": len(pool_rows),
        "n_eval": len(eval_rows),
    }
    return pool_rows, eval_rows, manifest


def build_pool(cfg: PoolBuildConfig) -> dict:
    """Write ``pool.jsonl``, ``eval.jsonl`` and ``manifest.json`` (with their sha256) into ``cfg.out``."""
    pool_rows, eval_rows, manifest = build_rows(cfg)
    out = Path(cfg.out)
    with atomic_path(out) as tmp:
        tmp.mkdir()
        for name, rows in (("pool.jsonl", pool_rows), ("eval.jsonl", eval_rows)):
            text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
            (tmp / name).write_text(text, encoding="utf-8")
            manifest[f"{name}_sha256"] = hashlib.sha256(text.encode("utf-8")).hexdigest()
        write_json(tmp / "manifest.json", manifest)
    return manifest
