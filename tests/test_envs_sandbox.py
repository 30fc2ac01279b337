"""The AutoExplore sandbox: it never lists, reads or writes anything outside the repository root."""

from __future__ import annotations

import os
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
        if os.path.realpath(path) == locked:
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
    touched = []
    real_open, real_listdir = os.open, os.listdir
    monkeypatch.setattr(os, "open", lambda p, *a, **k: touched.append(os.path.realpath(p)) or real_open(p, *a, **k))
    monkeypatch.setattr(os, "listdir", lambda p=".": touched.append(os.path.realpath(p)) or real_listdir(p))
    before = snapshot(repo.parent)
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
    assert snapshot(repo.parent) == before
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


def test_tasks_of_a_user_repo(repo):
    tasks = generate_tasks(str(repo), "repo", 40, 1600, 60, MAX_BYTES)
    by_path = {}
    for t in tasks:
        by_path.setdefault(t.path, []).append(t.kind)
    assert sorted(by_path["pkg/models.py"]) == ["class", "module"]
    assert by_path["pkg/deep/guide.md"] == ["heading"] and by_path["settings.json"] == ["config_key"]
    assert {t.path: t.level for t in tasks}["pkg/deep/guide.md"] == 1
    assert not any(t.path.startswith("link_inside") for t in tasks)  # one answer path per file
