"""The AutoExplore sandbox: it never lists, reads or writes anything outside the repository root."""

from __future__ import annotations

import copy
import gc
import os
import pickle
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from frugalft.envs import InvalidActionError
from frugalft.envs.autoexplore import AutoExplore
from frugalft.envs.repo_tasks import cat_view, generate_tasks
from frugalft.envs.sandbox import Sandbox, SandboxError

MAX_BYTES = 4096


@pytest.fixture()
def repo(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("TOP SECRET\n")
    root = tmp_path / "repo"
    (root / "pkg" / "deep").mkdir(parents=True)
    (root / "pkg" / "models.py").write_text('"""Model classes for the little test package."""\n\n'
                                            "class Widget:\n    pass\n")
    (root / "pkg" / "deep" / "guide.md").write_text("# Installing the gadget\n\nRun it.\n")
    (root / "settings.json").write_text('{\n  "retry_limit": 3\n}\n')
    (root / "link_etc").symlink_to("/etc")
    (root / "link_parent").symlink_to("..")
    (root / "link_outside_file").symlink_to(outside / "secret.txt")
    (root / "link_up_relative").symlink_to("../outside")
    (root / "link_inside").symlink_to("pkg")  # stays inside: allowed
    (root / "dangling").symlink_to("does-not-exist")
    for name in ("...", "..a", ". .", "..\\..", "-rf"):
        (root / name).write_text(f"I am {name}\n")
    (root / "huge.txt").write_text("abcdefghij\n" * 200_000)  # 2.2 MB
    (root / "blob.bin").write_bytes(bytes(range(256)) * 4)
    (root / "latin1.txt").write_bytes("caf\xe9 cr\xe8me\n".encode("latin-1"))
    (root / "locked.txt").write_text("you cannot read me\n")
    os.mkfifo(root / "pipe")  # reading a FIFO would block forever
    return root


def where(path: str | int, dir_fd: int | None = None) -> str:
    """The absolute path that an ``os.open(path, dir_fd=...)`` (or a listing of an fd) reaches, for spies."""
    if isinstance(path, int):
        return os.readlink(f"/proc/self/fd/{path}")
    base = os.readlink(f"/proc/self/fd/{dir_fd}") if dir_fd is not None else os.getcwd()
    return os.path.normpath(os.path.join(base, path))  # one name, opened with O_NOFOLLOW: not followed


def snapshot(path: Path) -> dict:
    return {str(p): (p.lstat().st_mode, p.lstat().st_size, p.lstat().st_mtime_ns)
            for p in sorted(path.rglob("*"), key=str) if "link_" not in p.name}


def test_listing_hides_escapes_and_special_files(repo):
    box = Sandbox(repo, max_bytes=MAX_BYTES)
    listing = box.listdir("")
    assert listing.dirs == ["link_inside", "pkg"]
    assert listing.files == ["-rf", ". .", "...", "..\\..", "..a", "blob.bin", "huge.txt", "latin1.txt",
                             "locked.txt", "settings.json"]
    assert box.listdir("link_inside").files == ["models.py"]


@pytest.mark.parametrize("path", ["/etc/passwd", "/", "..", "../outside/secret.txt", "pkg/../../outside",
                                  "pkg/..", "./pkg", "pkg//models.py", "link_etc", "link_etc/passwd",
                                  "link_parent", "link_parent/outside/secret.txt", "link_outside_file",
                                  "link_up_relative/secret.txt", "bad\x00name", "pkg/\nx"])
def test_escapes_are_refused(repo, path):
    box = Sandbox(repo)
    with pytest.raises(SandboxError):
        box.read(path)
    with pytest.raises(SandboxError):
        box.listdir(path)


def test_dotted_names_are_ordinary_files(repo):
    box = Sandbox(repo)
    assert box.read("...").text == "I am ...\n"
    assert box.read("..a").text == "I am ..a\n"
    assert box.read(["..\\.."]).text == "I am ..\\..\n"
    with pytest.raises(SandboxError):
        box.read(["pkg", ".."])  # as a component sequence too


def test_byte_cap_binary_non_utf8_fifo(repo):
    box = Sandbox(repo, max_bytes=MAX_BYTES)
    big = box.read("huge.txt")
    assert big.bytes_read == MAX_BYTES and big.size == 2_200_000
    view = cat_view(big, 40, 1600)
    assert view.splitlines()[:40] == ["abcdefghij"] * 40 and "truncated: the file has 2200000 bytes" in view
    blob = box.read("blob.bin")
    assert blob.binary and cat_view(blob, 40, 1600) == "(binary file, 1024 bytes; not shown)"
    latin = box.read("latin1.txt")
    assert not latin.utf8 and latin.text == "caf\ufffd cr\ufffdme\n" and "not valid UTF-8" in cat_view(latin, 40, 99)
    with pytest.raises(SandboxError, match="regular file"):
        box.read("pipe")


def test_multibyte_character_cut_by_the_cap_is_not_an_encoding_error(tmp_path):
    (tmp_path / "u.txt").write_text("é" * 100)  # 200 bytes; a cap of 51 cuts a character in half
    fv = Sandbox(tmp_path, max_bytes=51).read("u.txt")
    assert fv.utf8 and fv.text == "é" * 25


def test_unreadable_file(repo, monkeypatch):
    box = Sandbox(repo)
    real_open = os.open
    locked = os.path.realpath(repo / "locked.txt")

    def deny(path, *args, **kwargs):
        if where(path, kwargs.get("dir_fd")) == locked:
            raise PermissionError(13, "Permission denied")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", deny)
    fv = box.read("locked.txt")
    assert fv.error == "cannot read this file (Permission denied)"
    assert cat_view(fv, 40, 1600) == "(cannot read this file (Permission denied))"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_by_mode(repo):
    (repo / "locked.txt").chmod(0)
    assert "Permission denied" in Sandbox(repo).read("locked.txt").error


def test_env_on_user_repo_never_touches_outside_and_writes_nothing(repo, monkeypatch):
    root = os.path.realpath(repo)
    before = snapshot(repo.parent)  # before the spies: pathlib's own scandir is not the sandbox's
    touched = []
    real_open, real_listdir, real_scandir = os.open, os.listdir, os.scandir
    monkeypatch.setattr(os, "open", lambda p, *a, **k: touched.append(where(p, k.get("dir_fd"))) or real_open(p, *a, **k))
    monkeypatch.setattr(os, "listdir", lambda p=".": touched.append(where(p)) or real_listdir(p))
    monkeypatch.setattr(os, "scandir", lambda p=".": touched.append(where(p)) or real_scandir(p))
    env = AutoExplore(repos=[str(repo)], split="train", max_bytes=MAX_BYTES)
    questions = {t.question for t in env.tasks.values()}
    assert "Which file defines the class `Widget`?" in questions
    assert 'Which document has a section titled "Installing the gadget"?' in questions
    assert "Which configuration file sets the key `retry_limit`?" in questions
    rng = np.random.default_rng(0)
    seen_actions = set()
    for episode in range(40):
        _, info = env.reset(seed=episode, options={"task_id": sorted(env.tasks)[episode % len(env.tasks)]})
        while info["actions"]:
            seen_actions.update(info["actions"])
            _, _, _, _, info = env.step(info["actions"][int(rng.integers(len(info["actions"])))])
    assert not any("link_etc" in a or "link_parent" in a or "pipe" in a or "secret" in a for a in seen_actions)
    assert "cd link_inside" in seen_actions and "cat huge.txt" in seen_actions
    assert touched and all(p == root or p.startswith(root + os.sep) for p in touched), \
        [p for p in touched if not p.startswith(root)]
    for bad in ("cat /etc/passwd", "cd ..", "cd link_etc", "cat ../outside/secret.txt", "id link_outside_file"):
        env.reset(seed=0)
        _, r, _, _, info = env.step(bad)  # the default: a costly invalid choice that opens nothing
        assert r == -1.0 and "Invalid choice" in info["parts"]["last_result"]
    assert all(p == root or p.startswith(root + os.sep) for p in touched)
    strict = AutoExplore(repos=[str(repo)], split="train", max_bytes=MAX_BYTES, invalid_action="raise")
    for bad in ("cat /etc/passwd", "cd link_etc"):
        strict.reset(seed=0)
        with pytest.raises(InvalidActionError):
            strict.step(bad)
    monkeypatch.undo()
    assert snapshot(repo.parent) == before


def test_tasks_of_a_user_repo(repo):
    tasks = generate_tasks(str(repo), "repo", 40, 1600, 60, MAX_BYTES)
    by_path = {}
    for t in tasks:
        by_path.setdefault(t.path, []).append(t.kind)
    assert sorted(by_path["pkg/models.py"]) == ["class", "module"]
    assert by_path["pkg/deep/guide.md"] == ["heading"] and by_path["settings.json"] == ["config_key"]
    assert {t.path: t.level for t in tasks}["pkg/deep/guide.md"] == 1
    assert not any(t.path.startswith("link_inside") for t in tasks)  # one answer path per file


# ---- symlinks and `..` ----------------------------------------------------------------------------------
def test_symlinks_are_followed_only_within_the_root(repo):
    root = os.path.realpath(repo)
    (repo / "pkg" / "up").symlink_to("..")  # back to the root: inside
    (repo / "abs_inside").symlink_to(Path(root) / "pkg")  # absolute, below the root's real path: inside
    (repo / "chain").symlink_to("link_inside/deep")  # a link through a link
    (repo / "pkg" / "deep" / "esc").symlink_to("../../../outside")  # up past the root
    (repo / "pkg" / "deep" / "via_etc").symlink_to("../../link_etc/passwd")  # in, then through a link out
    (repo / "out_and_in").symlink_to(f"../{repo.name}/pkg")  # leaves the root, even if to come back
    (repo / "loop_a").symlink_to("loop_b")
    (repo / "loop_b").symlink_to("loop_a")
    box = Sandbox(repo)
    assert box.listdir("pkg/up").files == box.listdir("").files
    assert box.read("pkg/up/pkg/up/settings.json").text.startswith("{")
    assert box.resolve("pkg/up") == root and box.resolve("chain") == os.path.join(root, "pkg", "deep")
    assert box.resolve(["abs_inside", "models.py"]) == os.path.join(root, "pkg", "models.py")
    assert box.read("chain/guide.md").text.startswith("# Installing")
    assert box.is_symlink("chain") and box.is_symlink("pkg/up") and not box.is_symlink("pkg")
    listing = box.listdir("")
    assert {"abs_inside", "chain"} <= set(listing.dirs)
    assert not {"out_and_in", "loop_a", "loop_b"} & set(listing.dirs + listing.files)
    assert "esc" not in box.listdir("pkg/deep").dirs and box.listdir("pkg/deep").files == ["guide.md"]
    for bad in ("pkg/deep/esc", "pkg/deep/esc/secret.txt", "pkg/deep/via_etc", "out_and_in", "out_and_in/models.py"):
        with pytest.raises(SandboxError, match="outside"):
            box.read(bad)
        with pytest.raises(SandboxError):
            box.listdir(bad)
        with pytest.raises(SandboxError):
            box.resolve(bad)
    assert "symbolic links" in box.read("loop_a").error
    with pytest.raises(SandboxError):
        box.listdir("loop_a")


@pytest.mark.parametrize("parts", [[".."], ["pkg", ".."], ["pkg", "..", "..", "outside", "secret.txt"],
                                   ["pkg/../../outside"], ["", "etc"], ["."], ["pkg", "", "models.py"],
                                   ["pkg", "deep", "..", "..", "..", "outside"], "pkg/deep/../../../outside"])
def test_dotdot_and_empty_components_are_refused(repo, parts):
    box = Sandbox(repo)
    for op in (box.read, box.listdir, box.resolve, box.is_symlink):
        with pytest.raises(SandboxError, match="refused"):
            op(parts)


def test_every_lookup_is_one_name_below_a_held_folder(repo, monkeypatch):
    """No path is handed to the kernel to resolve: one name per call, relative to a descriptor, not followed."""
    box = Sandbox(repo)
    calls = []
    real_open, real_stat, real_scandir = os.open, os.stat, os.scandir
    monkeypatch.setattr(os, "open", lambda p, flags, *a, **k: calls.append(("open", p, flags, k)) or
                        real_open(p, flags, *a, **k))
    monkeypatch.setattr(os, "stat", lambda p, *a, **k: calls.append(("stat", p, 0, k)) or real_stat(p, *a, **k))
    monkeypatch.setattr(os, "scandir", lambda p=".": calls.append(("scandir", p, 0, {})) or real_scandir(p))
    for rel in ("", "pkg", "link_inside", "link_inside/deep"):
        box.listdir(rel)
    for rel in ("settings.json", "link_inside/models.py", "pkg/deep/guide.md", "locked.txt"):
        assert not box.read(rel).error
    for rel in ("link_etc/passwd", "link_parent/outside/secret.txt", "link_up_relative/secret.txt"):
        with pytest.raises(SandboxError):
            box.read(rel)
    assert calls
    for kind, p, flags, k in calls:
        if kind == "scandir":
            assert isinstance(p, int)
            continue
        assert isinstance(k.get("dir_fd"), int) and "/" not in p and p != "..", (kind, p, k)
        if kind == "stat":
            assert k.get("follow_symlinks") is False
        else:
            assert p == "." or flags & os.O_NOFOLLOW, (p, flags)


def test_copies_and_pickles_reopen_the_root(repo):
    box = Sandbox(repo)
    copies = [pickle.loads(pickle.dumps(box)), copy.copy(box), copy.deepcopy(box)]
    box.close()
    box.close()  # idempotent
    for c in copies:
        assert c.read("settings.json").text.startswith("{") and c.root == os.path.realpath(repo)
    del copies
    gc.collect()  # closing each copy's descriptor once, not another's


# ---- a tree that changes during the episode ----------------------------------------------------------------
SECRET = "TOP SECRET"


def race(sandbox_cls: type, base: Path, max_ops: int = 20_000, max_seconds: float = 3.0) -> dict[str, int]:
    """A thread keeps swapping ``root/sub`` for a symlink out of the root (absolute and relative, in turn)
    while this thread lists and reads below ``sub``; counts what was seen. ``escapes`` must stay 0."""
    outside, root, spare = base / "outside", base / "root", base / "spare"
    for d in (outside / "inner", root / "sub" / "inner", spare):
        d.mkdir(parents=True)
    for d in (outside, outside / "inner"):
        (d / "data.txt").write_text(f"{SECRET}\n")
        (d / "only_outside.txt").write_text(f"{SECRET}\n")
    for d in (root / "sub", root / "sub" / "inner"):
        (d / "data.txt").write_text("inside\n")
    (spare / "abs").symlink_to(outside)
    (spare / "rel").symlink_to("../outside")  # relative to root/, where it is swapped in
    sub, bak = root / "sub", root / "sub.bak"
    stop, errors, counts = threading.Event(), [], dict.fromkeys(
        ("ops", "swaps", "escapes", "inside", "refused", "read_errors", "crashes"), 0)

    def swapper() -> None:
        try:
            while not stop.is_set():
                link = spare / ("abs", "rel")[counts["swaps"] % 2]
                os.rename(sub, bak)  # sub: missing
                os.rename(link, sub)  # sub: a symlink out of the root
                os.rename(sub, link)  # sub: missing
                os.rename(bak, sub)  # sub: the folder again
                counts["swaps"] += 1
        except BaseException as e:  # surfaced by the test, not lost in the thread
            errors.append(e)

    box = sandbox_cls(root, max_bytes=MAX_BYTES)
    ops = [("read", "sub/data.txt"), ("list", "sub"), ("read", "sub/inner/data.txt"), ("list", "sub/inner")]
    thread = threading.Thread(target=swapper, daemon=True)
    thread.start()
    deadline = time.monotonic() + max_seconds
    try:
        while counts["ops"] < max_ops and time.monotonic() < deadline:
            kind, rel = ops[counts["ops"] % len(ops)]
            counts["ops"] += 1
            try:
                if kind == "read":
                    fv = box.read(rel)
                    seen, ok = fv.text, fv.text == "inside\n"
                    counts["read_errors"] += bool(fv.error)
                else:
                    listing = box.listdir(rel)
                    seen, ok = " ".join(listing.dirs + listing.files), "data.txt" in listing.files
            except ValueError:  # SandboxError (subclass of ValueError in the old module too): refused
                counts["refused"] += 1
                continue
            except OSError:  # a lookup that failed uncaught (the old sandbox's realpath could)
                counts["crashes"] += 1
                continue
            counts["escapes"] += SECRET in seen or "only_outside" in seen
            counts["inside"] += ok
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive() and not errors, errors
    assert sub.is_dir() and not sub.is_symlink()  # the swapper left the tree as it found it
    return counts


def test_a_folder_swapped_for_a_symlink_never_leads_out(tmp_path):
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # hand the GIL over often: more interleavings of the two threads
    try:
        counts = race(Sandbox, tmp_path)
    finally:
        sys.setswitchinterval(interval)
    print(counts)
    assert counts["escapes"] == 0, counts  # on every interleaving: each lookup is one name below a held fd
    assert counts["crashes"] == 0, counts  # a lookup spoiled by a swap is a refusal or a message, not OSError
    assert counts["swaps"] > 0 and counts["inside"] > 0, counts  # the race did happen, reads did succeed
