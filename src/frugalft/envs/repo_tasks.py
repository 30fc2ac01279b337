"""AutoExplore's tasks: questions about a repository whose answer is one file, generated without an LLM.

A question is made from the source itself, and kept only when
- its answer is unique in the repository (the class is defined once, the docstring line occurs once, ...);
- the evidence (the line that proves the answer) is inside the truncated view that ``cat`` shows;
- it does not give the path away (no file or directory name of the answer's path appears in it);
- the answer file is reachable through listings (within ``max_entries`` per directory).

Question kinds: ``class`` (which file defines class X), ``function_name`` (which file defines function f),
``docstring`` (the function/method whose docstring begins "..."), ``module`` (the module whose docstring begins "..."), ``config_key`` (which configuration file
sets key k), ``heading`` (which document has a section titled "..."), ``metadata`` (which file records the
package's name, version and dependencies).

Built-in repositories are the source trees of pure-Python packages this project installs anyway, copied once
into ``frugalft.cache.cache_dir("autoexplore", "repos")`` as ``<package>-<version>/`` with the package folder
and its ``PKG-INFO``. Some are training repositories, the others are only ever in the test split.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import json
import re
import shutil
import warnings
from dataclasses import asdict, dataclass, replace
from functools import cache, lru_cache
from pathlib import Path

from frugalft.atomic import atomic_path, write_json, write_jsonl
from frugalft.cache import cache_dir
from frugalft.envs.sandbox import FileView, Sandbox

# (import name, distribution, pinned version, role). Shapes: flat (click, jinja2, packaging), one level of
# subpackages (markdown_it, tqdm), deeper (urllib3, typer, accelerate, huggingface_hub, fsspec).
BUILTIN_REPOS: list[tuple[str, str, str, str]] = [
    ("click", "click", "8.5.1", "train"),
    ("jinja2", "Jinja2", "3.1.6", "train"),
    ("markdown_it", "markdown-it-py", "4.3.0", "train"),
    ("urllib3", "urllib3", "2.7.0", "train"),
    ("typer", "typer", "0.29.2", "train"),
    ("accelerate", "accelerate", "1.15.0", "train"),
    ("huggingface_hub", "huggingface_hub", "2.4.0", "train"),
    ("tqdm", "tqdm", "4.70.1", "test"),
    ("packaging", "packaging", "26.4", "test"),
    ("fsspec", "fsspec", "2026.9.0", "test"),

]
HELD_OUT_EVERY = 5  # one question in 5 of a training repository is held out for the test split
MAX_TASKS_PER_LEVEL = 40  # per repository: keeps big repositories from dominating
MAX_TASKS_PER_FILE = 3
MAX_DEPTH = 8
CONFIG_SUFFIXES = (".json", ".toml", ".cfg", ".ini", ".yaml", ".yml")
DOC_SUFFIXES = (".md", ".rst", ".txt")


@dataclass(frozen=True)
class Task:
    task_id: str
    repo: str  # repository name (built-in: <package>-<version>; user: the folder name)
    root: str  # absolute path of the repository root
    path: str  # answer file, '/'-joined below the root
    kind: str
    question: str
    evidence: str  # a line of the answer file, inside the truncated view, that proves the answer
    depth: int  # directories between the root and the answer file
    level: int
    split: str  # "train" or "test"
    unseen_repo: bool  # test task from a repository that has no training task


def level_of_depth(depth: int) -> int:
    """Curriculum level of an answer at ``depth`` (0 = a file at the root): 0 for depth <= 1, 1 for 2, 2 deeper."""
    return 0 if depth <= 1 else 1 if depth == 2 else 2


# ---- the truncated view that `cat` shows ----------------------------------------------------------------
def visible_text(fv: FileView, view_lines: int, view_chars: int) -> tuple[str, bool]:
    """The part of a file's text that ``cat`` shows, and whether the file was cut."""
    lines = fv.text.splitlines()
    shown = "\n".join(lines[:view_lines])
    cut = len(lines) > view_lines or fv.bytes_read < fv.size
    if len(shown) > view_chars:
        shown, cut = shown[:view_chars], True
    return shown, cut


def cat_view(fv: FileView, view_lines: int, view_chars: int) -> str:
    """What ``cat`` prints: the visible text plus notes (truncation, binary, encoding, errors)."""
    if fv.error:
        return f"({fv.error})"
    if fv.binary:
        return f"(binary file, {fv.size} bytes; not shown)"
    if fv.size == 0:
        return "(empty file)"
    shown, cut = visible_text(fv, view_lines, view_chars)
    notes = []
    if not fv.utf8:
        notes.append("(note: this file is not valid UTF-8; undecodable bytes are shown as \ufffd)")
    if cut:
        notes.append(f"[... truncated: the file has {fv.size} bytes; only its beginning is shown]")
    return "\n".join([shown, *notes])


# ---- question generation --------------------------------------------------------------------------------
def _norm(s: str) -> str:
    return re.sub(r"[^a-z0-9]", "", s.lower())


def _gives_away(subject: str, path: str, repo_dirs: set[str]) -> bool:
    """Does the question subject name a file or directory of the answer's path (the top folders excepted)?"""
    subj = _norm(subject)
    for comp in path.split("/"):
        stem = _norm(comp.rsplit(".", 1)[0] if "." in comp[1:] else comp)
        if comp in repo_dirs or len(stem) < 4:
            continue
        if stem in subj:
            return True
    return False


def _doc_first_line(node: ast.AST) -> str:
    doc = ast.get_docstring(node, clean=True) if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                                                    ast.AsyncFunctionDef)) else None
    if not doc:
        return ""
    return doc.strip().splitlines()[0].strip()


def _good_sentence(line: str) -> bool:
    return 20 <= len(line) <= 120 and len(line.split()) >= 4 and '"' not in line and "`" not in line


def _py_candidates(text: str) -> list[tuple[str, str, str, str]]:
    """(kind, subject, question, evidence) candidates of a Python file, in source order."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return []
    lines = text.splitlines()
    out = []
    first = _doc_first_line(tree)
    if _good_sentence(first):
        out.append(("module", first, f'Which file\'s module docstring begins "{first}"?', first))
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            out.append(("class", node.name, f"Which file defines the class `{node.name}`?",
                        lines[node.lineno - 1].strip()))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("__"):
            out.append(("function_name", node.name, f"Which file defines the function `{node.name}`?",
                        lines[node.lineno - 1].strip()))
        members = [(node, "function")] if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) else []
        if isinstance(node, ast.ClassDef):
            members = [(m, "method") for m in node.body if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef))]
        for fn, what in members:
            doc = _doc_first_line(fn)
            if _good_sentence(doc):
                out.append(("docstring", doc, f'Which file defines the {what} whose docstring begins "{doc}"?', doc))
    return out


_KEY = re.compile(r'^\s*"?([A-Za-z_][\w.-]{2,40})"?\s*[:=]')
_MD_HEADING = re.compile(r"^#{1,6}\s+(.{4,80}?)\s*#*\s*$")


def _config_candidates(text: str) -> list[tuple[str, str, str, str]]:
    out = []
    for line in text.splitlines():
        m = _KEY.match(line)
        if m:
            key = m.group(1)
            out.append(("config_key", key, f"Which configuration file sets the key `{key}`?", line.strip()))
    return out


def _doc_candidates(text: str) -> list[tuple[str, str, str, str]]:
    out = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = _MD_HEADING.match(line)
        title = m.group(1).strip() if m else ""
        if not m and i + 1 < len(lines) and re.fullmatch(r"([=\-~^*])\1{3,}", lines[i + 1].strip()):
            title = line.strip() if 4 <= len(line.strip()) <= 80 else ""  # an rst title, underlined
        if title and '"' not in title:
            out.append(("heading", title, f'Which document has a section titled "{title}"?', line.strip()))
    return out


def _metadata_candidates(text: str) -> list[tuple[str, str, str, str]]:
    first = text.splitlines()[0].strip() if text.strip() else ""
    if first.startswith("Metadata-Version:"):
        return [("metadata", "package metadata",
                 "Which file records the package's name, version and dependencies?", first)]
    return []


def _candidates(name: str, text: str) -> list[tuple[str, str, str, str]]:
    if name.endswith(".py"):
        return _py_candidates(text)
    if name in ("PKG-INFO", "METADATA"):
        return _metadata_candidates(text)
    if name.endswith(CONFIG_SUFFIXES):
        return _config_candidates(text)
    if name.endswith(DOC_SUFFIXES):
        return _doc_candidates(text)
    return []


def _walk(sandbox: Sandbox, max_entries: int) -> list[tuple[str, ...]]:
    """Files reachable by the agent (within the first ``max_entries`` of each listing), breadth first.
    Symlinks are not followed here, so each file has one answer path."""
    out, seen = [], set()
    frontier: list[tuple[str, ...]] = [()]
    while frontier:
        d = frontier.pop(0)
        real = sandbox.resolve(d)
        if real in seen or len(d) > MAX_DEPTH:
            continue
        seen.add(real)
        listing = sandbox.listdir(d)
        entries = [(n, True) for n in listing.dirs] + [(n, False) for n in listing.files]
        for name, is_dir in entries[:max_entries]:
            if sandbox.is_symlink((*d, name)):
                continue
            (frontier if is_dir else out).append((*d, name))
    return out


@lru_cache(maxsize=64)
def generate_tasks(root: str, repo: str, view_lines: int, view_chars: int, max_entries: int,
                   max_bytes: int) -> tuple[Task, ...]:
    """All questions of the repository at ``root`` (split fields not yet assigned: split="", unseen=False)."""
    sandbox = Sandbox(root, max_bytes=max_bytes)
    top = sandbox.listdir(())
    repo_dirs = set(top.dirs)  # the top-level folders: naming them gives nothing away
    per_file: dict[str, list[tuple[str, str, str, str]]] = {}
    subject_count: dict[tuple[str, str], int] = {}
    for path in _walk(sandbox, max_entries):
        fv = sandbox.read(path)
        if fv.error or fv.binary or not fv.text:
            continue
        cands = _candidates(path[-1], fv.text)
        # Uniqueness is over the whole file; visibility only over what `cat` shows.
        for kind, subject, _, _ in cands:
            subject_count[(kind, subject)] = subject_count.get((kind, subject), 0) + 1
        shown, _ = visible_text(fv, view_lines, view_chars)
        rel = "/".join(path)
        per_file[rel] = []
        for kind, subject, question, fragment in cands:
            # the evidence is the whole shown line holding the fragment (a docstring line keeps its quotes)
            line = next((ln.strip() for ln in shown.splitlines() if fragment in ln), None)
            if line is not None:
                per_file[rel].append((kind, subject, question, line))
    tasks = []
    for rel, cands in per_file.items():
        kept, used = [], set()
        for kind, subject, question, evidence in cands:
            if subject_count[(kind, subject)] != 1 or _gives_away(subject, rel, repo_dirs) or subject in used:
                continue
            used.add(subject)
            kept.append((kind, question, evidence))
        # prefer a mix of kinds within a file: one of each kind first
        by_kind: dict[str, list] = {}
        for k in kept:
            by_kind.setdefault(k[0], []).append(k)
        mixed = [k for round_ in range(max(map(len, by_kind.values()), default=0))
                 for ks in by_kind.values() if round_ < len(ks) for k in [ks[round_]]]
        depth = rel.count("/")
        for kind, question, evidence in mixed[:MAX_TASKS_PER_FILE]:
            digest = hashlib.sha1(f"{rel}\n{question}".encode()).hexdigest()[:10]
            tasks.append(Task(f"{repo}/{kind}/{digest}", repo, root, rel, kind, question, evidence, depth,
                              level_of_depth(depth), "", False))
    # cap per level, deterministically (the order of ids is a fixed hash order)
    out = []
    for level in sorted({t.level for t in tasks}):
        at = sorted((t for t in tasks if t.level == level), key=lambda t: t.task_id)
        out.extend(at[:MAX_TASKS_PER_LEVEL])
    return tuple(sorted(out, key=lambda t: t.task_id))


def held_out_ids(tasks: tuple[Task, ...] | list[Task]) -> set[str]:
    """The questions of one repository kept for the test split: every ``HELD_OUT_EVERY``-th in a fixed hash
    order, starting with the first (so even a small repository has a test question and training ones)."""
    order = sorted(tasks, key=lambda t: hashlib.sha1(t.task_id.encode()).hexdigest())
    return {t.task_id for i, t in enumerate(order) if i % HELD_OUT_EVERY == 0}


# ---- built-in repositories --------------------------------------------------------------------------------
@cache
def builtin_repo(package: str) -> Path:
    """The cached copy of a built-in package's source tree (made on first use), ``<cache>/<package>-<version>``."""
    entry = next((r for r in BUILTIN_REPOS if r[0] == package), None)
    if entry is None:
        raise ValueError(f"unknown built-in repository {package!r}; known: {[r[0] for r in BUILTIN_REPOS]}")
    _, dist_name, pinned, _ = entry
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(f"built-in repository {package!r} needs the package {dist_name!r} installed "
                                f"(pip install '{dist_name}=={pinned}')") from None
    version = dist.version
    if version != pinned:
        warnings.warn(f"{dist_name} {version} is installed, not the pinned {pinned}: its tasks differ from the "
                      "documented ones", stacklevel=2)
    name = f"{package}-{version}"
    base = cache_dir("autoexplore", "repos")
    dest = base / name
    manifest = base / f"{name}.json"
    if dest.is_dir() and manifest.is_file():
        return dest
    src = Path(str(dist.locate_file(package)))
    if not (src / "__init__.py").is_file():
        raise FileNotFoundError(f"cannot find the source of {package!r} at {src}")
    with atomic_path(dest) as tmp:
        shutil.copytree(src, tmp / package, symlinks=False,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", "*.so", "*.pyd"))
        meta = dist.read_text("METADATA")
        if meta:
            (tmp / "PKG-INFO").write_text(meta, encoding="utf-8")
    write_json(manifest, {"package": package, "distribution": dist_name, "version": version,
                          "pinned": pinned, "source": str(src)})
    return dest


@lru_cache(maxsize=1)
def _generator_hash() -> str:
    return hashlib.sha1(Path(__file__).read_bytes()).hexdigest()[:12]


def _cached_tasks(root: Path, *args: int) -> tuple[Task, ...]:
    """``generate_tasks`` of a built-in (read-only, versioned) repository, kept on disk: generating parses
    every file (seconds); the key holds the view settings and a hash of this generator's source."""
    key = hashlib.sha1(f"{root.name}|{args}|{_generator_hash()}".encode()).hexdigest()[:16]
    path = cache_dir("autoexplore", "tasks") / f"{root.name}-{key}.jsonl"
    if path.is_file():
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
        return tuple(Task(**{**r, "root": str(root)}) for r in rows)
    tasks = generate_tasks(str(root), root.name, *args)
    write_jsonl(path, [asdict(t) for t in tasks])
    return tasks


@lru_cache(maxsize=8)
def builtin_tasks(view_lines: int, view_chars: int, max_entries: int, max_bytes: int) -> tuple[Task, ...]:
    """Tasks of all built-in repositories, with splits: test repos are test only; training repos give one
    question in ``HELD_OUT_EVERY`` to the test split."""
    out = []
    for package, _, _, role in BUILTIN_REPOS:
        root = builtin_repo(package)
        tasks = _cached_tasks(root, view_lines, view_chars, max_entries, max_bytes)
        test = held_out_ids(tasks)
        for t in tasks:
            if role == "test":
                out.append(_with_split(t, "test", True))
            else:
                out.append(_with_split(t, "test" if t.task_id in test else "train", False))
    return tuple(out)


def user_tasks(paths: list[str], view_lines: int, view_chars: int, max_entries: int, max_bytes: int) -> list[Task]:
    """Tasks of the user's repositories; one question in ``HELD_OUT_EVERY`` goes to the test split."""
    out, names = [], set()
    for p in paths:
        root = Path(p).expanduser().resolve()
        if not root.is_dir():
            raise FileNotFoundError(f"--repo {p}: not a directory")
        name = root.name
        while name in names:  # two folders with the same name
            name += "_"
        names.add(name)
        tasks = generate_tasks(str(root), name, view_lines, view_chars, max_entries, max_bytes)
        test = held_out_ids(tasks)
        out.extend(_with_split(t, "test" if t.task_id in test else "train", False) for t in tasks)
    return out


def _with_split(t: Task, split: str, unseen: bool) -> Task:
    return replace(t, split=split, unseen_repo=unseen)


def dump_tasks(tasks: list[Task]) -> str:
    """Tasks as JSON lines (for inspection)."""
    return "\n".join(json.dumps(asdict(t), ensure_ascii=False) for t in tasks)
