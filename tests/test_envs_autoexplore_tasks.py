"""AutoExplore's built-in tasks: the pinned snapshot (the same tasks on every machine, safe extraction, the
builder) and the balance (file-name share cap, kind cap, a fair order of the first tasks)."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import tarfile
from collections import Counter
from pathlib import Path

import pytest

from frugalft.envs.autoexplore import AutoExplore
from frugalft.envs.repo_tasks import (
    MAX_FILE_SHARE,
    MAX_KIND_SHARE,
    MIN_FILES,
    SNAPSHOT_FORMAT,
    SNAPSHOT_MANIFEST,
    builtin_tasks,
    extract_snapshot,
    file_name,
    kind_cap,
)

DEFAULTS = (40, 1600, 60, 65536)  # AutoExplore's view_lines, view_chars, max_entries, max_bytes
# The built-in task list at the defaults, as recorded: a change of the snapshot or of the generator changes it
# (update these, the counts below and docs/environments.md together).
N_TASKS = 355
TASKS_SHA = "bcf326ecd1f87736"
# (split, level) -> kind -> tasks, at the defaults (docs/environments.md shows the same table)
COUNTS: dict[tuple[str, int], dict[str, int]] = {
    ("train", 0): {"class": 28, "docstring": 16, "function_name": 37, "metadata": 6, "module": 17},
    ("train", 1): {"class": 21, "docstring": 16, "function_name": 33, "heading": 2, "module": 20},
    ("train", 2): {"class": 4, "docstring": 3, "function_name": 1, "module": 2},
    ("valid", 0): {"class": 12, "config_key": 3, "docstring": 4, "function_name": 7, "metadata": 1, "module": 5},
    ("valid", 1): {"class": 3, "docstring": 3, "function_name": 3, "heading": 1, "module": 3},
    ("valid", 2): {"class": 2, "function_name": 2, "heading": 1},
    ("test", 0): {"class": 18, "docstring": 10, "function_name": 12, "metadata": 3, "module": 7},
    ("test", 1): {"class": 13, "docstring": 9, "function_name": 14, "module": 3},
    ("test", 2): {"class": 3, "docstring": 1, "function_name": 4, "module": 2},
}
# The deepest level has too few answer files for a valid split of MIN_FILES beside test's and train's: it is the
# one group the file-name cap cannot bind (5 tasks; the cap of one task per name still holds).
SMALL = {("valid", 2)}

@pytest.fixture(scope="module")
def env() -> AutoExplore:
    return AutoExplore(split="test")


def groups(env: AutoExplore) -> dict[tuple[str, int], list]:
    return {(split, level): [env.tasks[i] for i in env.task_ids(split, level)]
            for split in ("train", "valid", "test") for level in env.levels}


def fingerprint(tasks) -> tuple[list[tuple], str]:
    rows = [(t.task_id, t.question, t.path, t.evidence, t.split, t.level, t.unseen_repo) for t in tasks]
    return rows, hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]


# ---- the pinned snapshot ----------------------------------------------------------------------------------
def test_two_fresh_builds_give_the_same_tasks_without_the_installed_packages(tmp_path, monkeypatch):
    import importlib.metadata

    def no_metadata(*args, **kwargs):
        raise AssertionError("built-in tasks must not read installed packages")

    monkeypatch.setattr(importlib.metadata, "distribution", no_metadata)
    monkeypatch.setattr(importlib.metadata, "version", no_metadata)
    builds = []
    for name in ("machine-a", "machine-b"):
        monkeypatch.setenv("FRUGALFT_CACHE", str(tmp_path / name))
        tasks = builtin_tasks(*DEFAULTS)  # cached per snapshot folder: a new cache dir extracts and generates
        assert all(Path(t.root).is_relative_to(tmp_path / name) for t in tasks)
        # extracted once, by a rename: one folder, no temporary left over
        assert len(list((tmp_path / name / "autoexplore" / "snapshot").iterdir())) == 1
        builds.append(fingerprint(tasks))
    assert builds[0] == builds[1]
    rows, sha = builds[0]
    assert (len(rows), sha) == (N_TASKS, TASKS_SHA)


def _archive(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]],
             manifest: dict | None = None) -> Path:
    """A tar.xz with a manifest listing the (name, bytes) members under the root "r", then the members."""
    files = {m[0][2:]: hashlib.sha256(m[1]).hexdigest() for m in members
             if isinstance(m, tuple) and m[0].startswith("r/")}
    manifest = manifest or {"format": SNAPSHOT_FORMAT, "repos": [{"package": "p", "root": "r", "files": files}]}
    with tarfile.open(path, "w:xz") as tar:
        data = json.dumps(manifest).encode()
        info = tarfile.TarInfo(SNAPSHOT_MANIFEST)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        for m in members:
            if isinstance(m, tuple):
                info = tarfile.TarInfo(m[0])
                info.size = len(m[1])
                tar.addfile(info, io.BytesIO(m[1]))
            else:
                tar.addfile(m)
    return path


def _link(name: str, target: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def test_extraction_refuses_hostile_members(tmp_path):
    ok = _archive(tmp_path / "ok.tar.xz", [("r/a.py", b"x = 1\n"), ("r/sub/b.md", b"# B\n")])
    manifest = extract_snapshot(ok, tmp_path / "ok")
    assert manifest["repos"][0]["root"] == "r"
    assert (tmp_path / "ok" / "r" / "sub" / "b.md").read_bytes() == b"# B\n"
    path, link = "not a plain relative path", "not a regular file"
    hostile = {  # case: (members, the refusal)
        "parent": ([("r/../../evil.txt", b"evil")], path),
        "absolute": ([(str(tmp_path / "evil.txt"), b"evil")], path),
        "dot": ([("r/./evil.txt", b"evil")], path),
        "symlink": ([_link("r/evil.txt", "/etc/passwd", tarfile.SYMTYPE)], link),
        "hardlink": ([_link("r/evil.txt", "/etc/passwd", tarfile.LNKTYPE)], link),
        "folder entry": ([_link("r/sub", "", tarfile.DIRTYPE)], link),
        "unlisted": ([("r/a.py", b"x = 1\n"), ("r/evil.txt", b"evil")], "not in the manifest"),
    }

    def manifest(root: str = "r", **files: str) -> dict:
        return {"format": SNAPSHOT_FORMAT, "repos": [{"package": "p", "root": root, "files": files}]}

    for case, (members, refusal) in hostile.items():
        listed = manifest(**{"a.py": hashlib.sha256(b"x = 1\n").hexdigest()}) if case == "unlisted" else None
        with pytest.raises(ValueError, match=refusal):
            extract_snapshot(_archive(tmp_path / f"{case}.tar.xz", members, listed), tmp_path / f"out-{case}")
    with pytest.raises(ValueError, match="sha256"):  # a file changed after the manifest was made
        extract_snapshot(_archive(tmp_path / "tampered.tar.xz", [("r/a.py", b"x = 1\n")],
                                  manifest(**{"a.py": "0" * 64})), tmp_path / "t")
    with pytest.raises(ValueError, match="root"):  # the manifest cannot point a repository outside
        extract_snapshot(_archive(tmp_path / "root.tar.xz", [], manifest("..")), tmp_path / "e")
    assert not list(tmp_path.rglob("evil.txt")) and not (tmp_path.parent / "evil.txt").exists()


def _builder():
    path = Path(__file__).resolve().parent.parent / "scripts" / "build_autoexplore_snapshot.py"
    spec = importlib.util.spec_from_file_location("build_autoexplore_snapshot", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_builder_keeps_text_files_is_deterministic_and_checks_versions(tmp_path, monkeypatch):
    build = _builder()
    pkg = tmp_path / "pkg"
    (pkg / "__pycache__").mkdir(parents=True)
    (pkg / "sub").mkdir()
    (pkg / "__init__.py").write_text('"""A package."""\n')
    (pkg / "sub" / "notes.md").write_text("# Notes\n")
    (pkg / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\x00pyc")
    (pkg / "fast.so").write_bytes(b"\x7fELF")
    (pkg / "blob.dat").write_bytes(b"a\x00b")  # binary: `cat` never shows it
    (pkg / "link.py").symlink_to(pkg / "__init__.py")
    files = build.package_files(pkg)
    assert list(files) == ["__init__.py", "sub/notes.md"]
    members = {f"r/{k}": v for k, v in files.items()}
    manifest = {"format": SNAPSHOT_FORMAT, "repos": [{"package": "pkg", "root": "r", "files": {
        k: hashlib.sha256(v).hexdigest() for k, v in files.items()}}]}
    build.write_archive(tmp_path / "a.tar.xz", manifest, members)
    build.write_archive(tmp_path / "b.tar.xz", manifest, members)
    assert (tmp_path / "a.tar.xz").read_bytes() == (tmp_path / "b.tar.xz").read_bytes()
    assert extract_snapshot(tmp_path / "a.tar.xz", tmp_path / "out") == manifest
    # an installed version other than the pinned one is refused unless asked for
    monkeypatch.setattr(build, "BUILTIN_REPOS", [("packaging", "packaging", "0.0.1", "test")])
    with pytest.raises(SystemExit, match="not the pinned 0.0.1"):
        build.collect(allow_other_versions=False)
    manifest, _ = build.collect(allow_other_versions=True)
    assert manifest["repos"][0]["version"] != "0.0.1"


# ---- balance ----------------------------------------------------------------------------------------------
def test_no_answer_file_holds_more_than_the_cap(env):
    for (split, level), tasks in groups(env).items():
        n = len(tasks)
        assert n >= MIN_FILES or (split, level) in SMALL, (split, level, n)  # enough tasks for the cap to hold
        name, most = Counter(file_name(t) for t in tasks).most_common(1)[0]
        assert most <= max(1, MAX_FILE_SHARE * n), (split, level, name, most, n)
        assert sum(t.kind == "metadata" for t in tasks) <= MAX_FILE_SHARE * n  # always PKG-INFO


def test_a_constant_id_policy_fails_the_test_split(env):
    """`id <name>` at the start of every level-0 test task (the root offers only `id PKG-INFO`): a constant
    action succeeds at most on the tasks whose answer is that root file."""
    ids = env.task_ids("test", 0)
    offered = Counter()
    for tid in ids:
        _, info = env.reset(options={"task_id": tid})
        offered.update(a for a in info["actions"] if a.startswith("id "))
    assert offered and set(offered) == {"id PKG-INFO"}
    for action in offered:
        wins = 0
        for tid in ids:
            env.reset(options={"task_id": tid})
            _, _, _, _, info = env.step(action)
            wins += info["success"]
        assert wins / len(ids) <= MAX_FILE_SHARE, (action, wins, len(ids))


def test_kinds_are_balanced_and_the_first_tasks_are_mixed(env):
    found = {}
    for (split, level), tasks in groups(env).items():
        kinds = Counter(t.kind for t in tasks)
        found[(split, level)] = dict(sorted(kinds.items()))
        assert max(kinds.values()) <= kind_cap(len(tasks)) <= MAX_KIND_SHARE * len(tasks) + 1
        assert len(kinds) >= 4 or (split, level) in SMALL, (split, level, kinds)
    assert found == COUNTS
    # evaluation takes the first max_tasks of a level: each kind and repository near its share there
    for level in env.levels:
        tasks = [env.tasks[i] for i in env.task_ids("test", level)]
        for k in (k for k in (6, 12, 24) if k < len(tasks)):
            first = tasks[:k]
            for attr in ("kind", "repo"):
                share = Counter(getattr(t, attr) for t in tasks)
                got = Counter(getattr(t, attr) for t in first)
                off = {v: got[v] - k * c / len(tasks) for v, c in share.items()}
                assert max(map(abs, off.values())) <= 1.5, (level, k, attr, off)
