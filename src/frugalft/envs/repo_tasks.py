"""AutoExplore's tasks: questions about a repository whose answer is one file, generated without an LLM.

A question is made from the source itself, and kept only when
- its answer is unique in the repository (the class is defined once, the docstring line occurs once, ...);
- the evidence (the line that proves the answer) is inside the truncated view that ``cat`` shows;
- it does not give the path away (no file or directory name of the answer's path appears in it);
- the answer file is reachable through listings (within ``max_entries`` per directory).

Question kinds: ``class`` (which file defines class X), ``function_name`` (which file defines function f),
``docstring`` (the function/method whose docstring begins "..."), ``module`` (the module whose docstring
begins "..."), ``config_key`` (which configuration file sets key k), ``heading`` (which document has a section
titled "..."), ``metadata`` (which file records the package's name, version and dependencies).

Built-in repositories are pinned source trees of pure-Python packages, shipped with frugalft as one archive
(``assets/autoexplore/repos.tar.xz``, built by ``scripts/build_autoexplore_snapshot.py``) and extracted once
into ``frugalft.cache.cache_dir("autoexplore", "snapshot")``: each is ``<package>-<version>/`` with the package
folder and its ``PKG-INFO``, the same on every machine whatever is installed. Some are training repositories,
the others are only ever in the valid split (one repository) or the test split (two). Their tasks are balanced (``balance``): no answer file name holds
more than ``MAX_FILE_SHARE`` and no question kind more than ``MAX_KIND_SHARE`` of a split x level, and each
split x level is in an interleaved order (of kinds and repositories), so its first tasks are a fair sample.
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
import os
import re
import shutil
import tarfile
import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path

from frugalft.atomic import write_jsonl
from frugalft.cache import cache_dir
from frugalft.envs.sandbox import FileView, Sandbox

# (import name, distribution, pinned version, role). Shapes: flat (click, jinja2, packaging), one level of
# subpackages (markdown_it, tqdm), deeper (urllib3, typer, accelerate, huggingface_hub, fsspec). The versions
# are those in the snapshot; installed versions play no part.
BUILTIN_REPOS: list[tuple[str, str, str, str]] = [
    ("click", "click", "8.5.1", "train"),
    ("jinja2", "Jinja2", "3.1.6", "train"),
    ("markdown_it", "markdown-it-py", "4.3.0", "train"),
    ("urllib3", "urllib3", "2.8.0", "train"),
    ("typer", "typer", "0.29.2", "train"),
    ("accelerate", "accelerate", "1.16.0", "train"),
    ("huggingface_hub", "huggingface_hub", "2.4.0", "train"),
    ("tqdm", "tqdm", "4.70.1", "valid"),
    ("packaging", "packaging", "26.4", "test"),
    ("fsspec", "fsspec", "2026.9.0", "test"),
]
# The pinned source trees, shipped with the package (built by scripts/build_autoexplore_snapshot.py).
SNAPSHOT = Path(__file__).resolve().parent.parent / "assets" / "autoexplore" / "repos.tar.xz"
SNAPSHOT_MANIFEST = "manifest.json"  # the archive's first member: versions and a sha256 per file
SNAPSHOT_FORMAT = 1
# Training repositories give the test split one answer *file* in 5 per level (built-in; all questions about
# it, so a test answer is never a training answer) or one question in 5 (user repositories).
HELD_OUT_EVERY = 5
MAX_TASKS_PER_LEVEL = 40  # per repository: keeps big repositories from dominating
MAX_TASKS_PER_FILE = 3
MAX_DEPTH = 8
# No answer file name (PKG-INFO, __init__.py, utils.py, a README, ...) answers more than this share of a
# built-in split x level: a policy that always names one file (`id PKG-INFO` is offered at every root) or
# learns one popular name then succeeds on at most 10% of the tasks, so success measures navigation. The
# metadata kind, always answered by PKG-INFO, is capped by it too.
MAX_FILE_SHARE = 0.10
# The share cap needs this many distinct answer file names: a level whose held-out files give the test split
# fewer takes more training files (while the training split keeps as many).
MIN_FILES = math.ceil(1 / MAX_FILE_SHARE)
# No question kind holds more than this share of a built-in split x level: class and function questions are
# the most plentiful, and a split made mostly of them would mostly test grepping for `class X` / `def f`.
MAX_KIND_SHARE = 0.35
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
    split: str  # "train", "valid" or "test"
    unseen_repo: bool  # valid or test task from a repository that has no training task


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
    # cap per level, in the interleaved order of kinds (deterministic)
    out = []
    for level in sorted({t.level for t in tasks}):
        out.extend(fair_order([t for t in tasks if t.level == level])[:MAX_TASKS_PER_LEVEL])
    return tuple(sorted(out, key=lambda t: t.task_id))


def held_out_ids(tasks: tuple[Task, ...] | list[Task]) -> set[str]:
    """The questions of one repository kept for the test split: every ``HELD_OUT_EVERY``-th in a fixed hash
    order, starting with the first (so even a small repository has a test question and training ones)."""
    order = sorted(tasks, key=lambda t: hashlib.sha1(t.task_id.encode()).hexdigest())
    return {t.task_id for i, t in enumerate(order) if i % HELD_OUT_EVERY == 0}


def held_out_files(tasks: tuple[Task, ...] | list[Task]) -> set[str]:
    """The answer files of one repository kept for the test split: per level, every ``HELD_OUT_EVERY``-th in a
    fixed hash order, starting with the first (so every level with an answer has a test file)."""
    out: set[str] = set()
    for level in {t.level for t in tasks}:
        files = sorted({(t.repo, t.path) for t in tasks if t.level == level}, key=lambda f: _hash("/".join(f)))
        out.update(path for _, path in files[::HELD_OUT_EVERY])
    return out


# ---- balance and order ------------------------------------------------------------------------------------
def _hash(s: str) -> str:
    return hashlib.sha1(s.encode()).hexdigest()


def file_name(task: Task) -> str:
    """The answer's file name (``PKG-INFO``, ``utils.py``): what a policy that always names one file would say."""
    return task.path.rsplit("/", 1)[-1]


def fair_order(tasks: Iterable[Task]) -> list[Task]:
    """Tasks interleaved so that every prefix holds each kind and each repository in about its overall share
    (evaluation takes the first ``max_tasks`` of a level). Greedy: the next task is of the kind x repository
    furthest behind its shares; ties, and the order within a kind x repository, go by a fixed hash of the id."""
    queues: dict[tuple[str, str], list[tuple[str, Task]]] = {}
    for key, t in sorted(((_hash(t.task_id), t) for t in tasks), key=lambda kt: kt[0]):
        queues.setdefault((t.kind, t.repo), []).append((key, t))
    n = sum(map(len, queues.values()))
    kinds = Counter(k for (k, _), q in queues.items() for _ in q)
    repos = Counter(r for (_, r), q in queues.items() for _ in q)
    done_kinds: Counter[str] = Counter()
    done_repos: Counter[str] = Counter()
    out: list[Task] = []
    for p in range(1, n + 1):
        # n x (how far ahead of its shares): integers, so that ties are exact
        cell = min((c for c in queues if queues[c]),
                   key=lambda c, p=p: (n * (done_kinds[c[0]] + done_repos[c[1]])
                                       - p * (kinds[c[0]] + repos[c[1]]), queues[c][0][0]))
        _, t = queues[cell].pop(0)
        done_kinds[t.kind] += 1
        done_repos[t.repo] += 1
        out.append(t)
    return out


def file_cap(n: int) -> int:
    """The most tasks one answer file name may answer among ``n`` of a split x level: ``MAX_FILE_SHARE`` of them
    (but one at least, so that a pool of fewer than ``MIN_FILES`` is not emptied)."""
    return max(1, math.floor(MAX_FILE_SHARE * n + 1e-9))


def kind_cap(n: int) -> int:
    """The most tasks of one kind among ``n`` of a split x level: ``MAX_KIND_SHARE`` of them, rounded up (a
    small split x level, like the deepest level's, has few questions of the rarer kinds)."""
    return math.ceil(MAX_KIND_SHARE * n - 1e-9)


def _select(tasks: list[Task]) -> list[Task]:
    """The most tasks of one split x level that keep each file name within ``MAX_FILE_SHARE`` and each kind
    within ``MAX_KIND_SHARE``: for n from all down, take tasks while their kind and file name are under the
    caps of n; the first n filled wins. Rarer kinds are taken first (a file with a class and a module question
    then gives the module one, and leaves the class cap to files that have nothing else), each kind in the fair
    order."""
    kinds_in = Counter(t.kind for t in tasks)
    order = sorted(fair_order(tasks), key=lambda t: kinds_in[t.kind])  # stable: fair order within a kind
    for n in range(len(order), 0, -1):
        kinds_max, files_max = kind_cap(n), file_cap(n)
        kinds: Counter[str] = Counter()
        names: Counter[str] = Counter()
        picked = []
        for t in order:
            if kinds[t.kind] < kinds_max and names[file_name(t)] < files_max:
                picked.append(t)
                kinds[t.kind] += 1
                names[file_name(t)] += 1
                if len(picked) == n:
                    return fair_order(picked)
    return []


def _by_split_and_level(tasks: Iterable[Task]) -> dict[tuple[str, int], list[Task]]:
    groups: dict[tuple[str, int], list[Task]] = {}
    for t in tasks:
        groups.setdefault((t.split, t.level), []).append(t)
    return dict(sorted(groups.items()))


def balance(tasks: Iterable[Task]) -> tuple[Task, ...]:
    """Each split x level cut to the largest set within the file-name and kind caps (``_select``), in the
    fair order; splits and levels in sorted order."""
    return tuple(t for group in _by_split_and_level(tasks).values() for t in _select(group))


def _balanced_size(tasks: list[Task]) -> int:
    return len(_select(tasks))


def _split_builtin(per_repo: dict[str, tuple[Task, ...]]) -> list[Task]:
    """Splits of the built-in tasks: a test (valid) repository's go to test (valid); a training repository gives
    its held-out answer files (``held_out_files``) to valid and test alternately, in a fixed hash order, so both
    hold new files of known repositories beside their own unseen repository. At a level where the balanced
    valid or test split would hold fewer than ``MIN_FILES`` tasks (too few for the file-name cap), more training
    files go to it (hash order, names new to that split first) while the balanced training split keeps at least
    ``MIN_FILES``."""
    role = {package: r for package, *_, r in BUILTIN_REPOS}
    only = {sp: [t for p, ts in per_repo.items() if role[p] == sp for t in ts] for sp in ("valid", "test")}
    trainable = [t for p, ts in per_repo.items() if role[p] == "train" for t in ts]
    held_files = sorted({(ts[0].repo, f) for p, ts in per_repo.items() if role[p] == "train" and ts
                         for f in held_out_files(ts)}, key=lambda f: _hash("/".join(f)))
    held = {"test": set(held_files[0::2]), "valid": set(held_files[1::2])}
    for level in sorted({t.level for t in trainable}):
        at = [t for t in trainable if t.level == level]

        def members(sp: str, extra: frozenset = frozenset(), at: list[Task] = at, level: int = level) -> list[Task]:
            files = held[sp] | extra
            return [t for t in only[sp] if t.level == level] + [t for t in at if (t.repo, t.path) in files]

        def training(extra: frozenset = frozenset(), at: list[Task] = at) -> list[Task]:
            gone = held["valid"] | held["test"] | extra
            return [t for t in at if (t.repo, t.path) not in gone]

        for sp in ("test", "valid"):
            names = {file_name(t) for t in members(sp)}
            spare = sorted({(t.repo, t.path) for t in training()},
                           key=lambda f, names=names: (f[1].rsplit("/", 1)[-1] in names, _hash("/".join(f))))
            for f in spare:
                if _balanced_size(members(sp)) >= MIN_FILES:
                    break
                if _balanced_size(training(frozenset({f}))) >= MIN_FILES:
                    held[sp].add(f)

    def split_of(t: Task) -> str:
        f = (t.repo, t.path)
        return "valid" if f in held["valid"] else "test" if f in held["test"] else "train"

    return ([_with_split(t, sp, True) for sp in ("valid", "test") for t in only[sp]]
            + [_with_split(t, split_of(t), False) for t in trainable])


# ---- the pinned snapshot ----------------------------------------------------------------------------------
def _member_name(info: tarfile.TarInfo) -> str:
    """The name of an archive member that is safe to write: a regular file (no link, device or folder entry:
    folders are made as needed) at a relative path without empty, ``.`` or ``..`` parts."""
    name = info.name
    if not info.isfile():
        raise ValueError(f"snapshot member {name!r} is not a regular file (links, folders and special files "
                         "are refused)")
    parts = name.split("/")
    if (name.startswith("/") or "\\" in name or any(ord(c) < 32 for c in name)
            or any(p in ("", ".", "..") for p in parts)):
        raise ValueError(f"snapshot member {name!r} is not a plain relative path")
    return name


def extract_snapshot(archive: Path, dest: Path) -> dict:
    """Extract ``archive`` into the new folder ``dest`` and return its manifest. The manifest comes first; every
    other member must be a regular file at a safe relative path (``_member_name``), listed in the manifest with
    its sha256, and every listed file must be there: anything else raises ``ValueError``. Files are written by
    this function, never by ``tarfile``'s extraction, so an archive cannot place anything outside ``dest``."""
    dest.mkdir(parents=True)
    manifest: dict | None = None
    expected: dict[str, str] = {}
    with tarfile.open(archive, "r:xz") as tar:
        for info in tar:
            name = _member_name(info)
            data = tar.extractfile(info).read()
            if manifest is None:
                if name != SNAPSHOT_MANIFEST:
                    raise ValueError(f"the snapshot's first member is {name!r}, not {SNAPSHOT_MANIFEST!r}")
                manifest = json.loads(data)
                if manifest.get("format") != SNAPSHOT_FORMAT:
                    raise ValueError(f"snapshot format {manifest.get('format')!r}, expected {SNAPSHOT_FORMAT}")
                for repo in manifest["repos"]:
                    if not re.fullmatch(r"[A-Za-z0-9_][\w.-]*", repo["root"]) or repo["root"] in (".", ".."):
                        raise ValueError(f"snapshot repository root {repo['root']!r} is not a plain folder name")
                expected = {f"{r['root']}/{rel}": sha for r in manifest["repos"]
                            for rel, sha in r["files"].items()}
                continue
            if expected.pop(name, None) != hashlib.sha256(data).hexdigest():
                raise ValueError(f"snapshot member {name!r} is not in the manifest, is repeated, or its sha256 "
                                 "differs")
            out = dest / name
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(data)
    if manifest is None or expected:
        raise ValueError(f"the snapshot lacks its manifest or {len(expected)} listed files, e.g. "
                         f"{sorted(expected)[:3]}")
    (dest / SNAPSHOT_MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n",
                                          encoding="utf-8")
    return manifest


@lru_cache(maxsize=8)
def _snapshot_at(base: str, archive: str) -> Path:
    digest = hashlib.sha256(Path(archive).read_bytes()).hexdigest()[:16]
    final = Path(base) / digest
    if (final / SNAPSHOT_MANIFEST).is_file():
        return final
    # Extract beside, then one rename: a reader never sees a half-made tree, and of two processes racing
    # the first rename wins and the other's copy is dropped.
    tmp = Path(tempfile.mkdtemp(prefix=f".{digest}.", suffix=".tmp", dir=base))
    try:
        extract_snapshot(Path(archive), tmp / digest)
        try:
            os.rename(tmp / digest, final)
        except OSError:
            if not (final / SNAPSHOT_MANIFEST).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def snapshot_dir() -> Path:
    """The extracted snapshot, ``<cache>/autoexplore/snapshot/<sha256 of the archive, 16 hex>/`` (made on first
    use; a rebuilt archive gets a new folder)."""
    if not SNAPSHOT.is_file():
        raise FileNotFoundError(f"AutoExplore's repository snapshot {SNAPSHOT} is missing: reinstall frugalft, or "
                                "rebuild it with scripts/build_autoexplore_snapshot.py")
    return _snapshot_at(str(cache_dir("autoexplore", "snapshot")), str(SNAPSHOT))


@lru_cache(maxsize=8)
def _manifest(snapshot: str) -> dict:
    return json.loads(Path(snapshot, SNAPSHOT_MANIFEST).read_text(encoding="utf-8"))


def snapshot_manifest() -> dict:
    """The snapshot's manifest: ``format`` and per repository ``package``, ``distribution``, ``version``,
    ``role``, ``root`` and ``files`` (relative path -> sha256)."""
    return _manifest(str(snapshot_dir()))


def builtin_repo(package: str) -> Path:
    """The pinned source tree of a built-in repository, ``<snapshot>/<package>-<version>/`` (the package folder
    and its ``PKG-INFO``), from the snapshot shipped with frugalft."""
    entry = next((r for r in BUILTIN_REPOS if r[0] == package), None)
    if entry is None:
        raise ValueError(f"unknown built-in repository {package!r}; known: {[r[0] for r in BUILTIN_REPOS]}")
    snapshot = snapshot_dir()
    repo = next((r for r in _manifest(str(snapshot))["repos"] if r["package"] == package), None)
    if repo is None or repo["version"] != entry[2]:
        found = f"{package} {repo['version']}" if repo else f"no {package}"
        raise RuntimeError(f"the snapshot {SNAPSHOT} holds {found}, not the pinned {entry[2]}: rebuild it with "
                           "scripts/build_autoexplore_snapshot.py, or update BUILTIN_REPOS")
    return snapshot / repo["root"]


@lru_cache(maxsize=1)
def _generator_hash() -> str:
    return hashlib.sha1(Path(__file__).read_bytes()).hexdigest()[:12]


def _cached_tasks(root: Path, *args: int) -> tuple[Task, ...]:
    """``generate_tasks`` of a built-in (read-only, pinned) repository, kept on disk: generating parses every
    file (seconds); the key holds the snapshot (its folder), the view settings and a hash of this generator."""
    key = hashlib.sha1(f"{root.parent.name}|{root.name}|{args}|{_generator_hash()}".encode()).hexdigest()[:16]
    path = cache_dir("autoexplore", "tasks") / f"{root.name}-{key}.jsonl"
    if path.is_file():
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
        return tuple(Task(**{**r, "root": str(root)}) for r in rows)
    tasks = generate_tasks(str(root), root.name, *args)
    write_jsonl(path, [asdict(t) for t in tasks])
    return tasks


@lru_cache(maxsize=8)
def _builtin_tasks(snapshot: str, view_lines: int, view_chars: int, max_entries: int,
                   max_bytes: int) -> tuple[Task, ...]:
    args = (view_lines, view_chars, max_entries, max_bytes)
    per_repo = {package: _cached_tasks(builtin_repo(package), *args) for package, *_ in BUILTIN_REPOS}
    return balance(_split_builtin(per_repo))


def builtin_tasks(view_lines: int, view_chars: int, max_entries: int, max_bytes: int) -> tuple[Task, ...]:
    """Tasks of all built-in repositories, with splits (``_split_builtin``), balanced (``balance``), each split
    x level in the fair order. Cached per snapshot folder, so another ``$FRUGALFT_CACHE`` builds afresh."""
    return _builtin_tasks(str(snapshot_dir()), view_lines, view_chars, max_entries, max_bytes)


def user_tasks(paths: list[str], view_lines: int, view_chars: int, max_entries: int,
               max_bytes: int) -> list[Task]:
    """Tasks of the user's repositories; of the held-out questions (one in ``HELD_OUT_EVERY``), every other goes to
    the valid split, the rest to the test split. Not cut by
    the balance caps (a small repository could lose most of its questions), only put in the fair order."""
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
        held = sorted(held_out_ids(tasks), key=_hash)
        valid = set(held[1::2])
        out.extend(_with_split(t, "train" if t.task_id not in held else "valid" if t.task_id in valid else "test",
                               False) for t in tasks)
    return [t for group in _by_split_and_level(out).values() for t in fair_order(group)]


def _with_split(t: Task, split: str, unseen: bool) -> Task:
    return replace(t, split=split, unseen_repo=unseen)


def dump_tasks(tasks: list[Task]) -> str:
    """Tasks as JSON lines (for inspection)."""
    return "\n".join(json.dumps(asdict(t), ensure_ascii=False) for t in tasks)
