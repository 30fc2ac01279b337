"""One CLI vocabulary (frugalft.cli.options): ``-o/--out`` for what a command writes, ``--run-dir`` for run
directories, ``--set`` on every configurable command, ``--version``, and one-line errors for a missing extra
or a CUDA device without CUDA. In-process (typer's CliRunner); no model is loaded."""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest
from typer.main import get_command
from typer.testing import CliRunner

import frugalft
from frugalft.cli.main import _add_subapps, app

# What each command writes: a file or folder (--out), or a run directory it resumes (--run-dir).
WRITES = {
    "select": "--out", "export": "--out", "merge": "--out", "pool build": "--out", "scale greedi": "--out",
    "bench": "--out", "env make-alfworld": "--out", "env stats": "--out",
    "rl data": "--run-dir", "rl warmup": "--run-dir", "rl train": "--run-dir", "rl eval": "--run-dir",
    "rl table": "--run-dir", "quickstart": "--run-dir", "scale rl-train": "--run-dir", "scale sft": "--run-dir",
    "sft": "--run-dir", "curve": "--run-dir",
}
DEPRECATED = {"--json"}  # old spellings kept working beside the vocabulary's (env stats --json = --out)
WRITES_NOTHING = {"models", "generate", "env list", "env play", "scale score",  # scale score: the feature cache
                  "rl compare", "rl times"}  # read run directories, print


@pytest.fixture(scope="module")
def commands() -> dict[str, Any]:
    _add_subapps()
    out = {}

    def walk(group: Any, path: tuple[str, ...]) -> None:  # typer's (vendored) click groups and commands
        for name, cmd in group.commands.items():
            if hasattr(cmd, "commands"):
                walk(cmd, (*path, name))
            else:
                out[" ".join((*path, name))] = cmd

    walk(get_command(app), ())
    return out


def _opts(cmd: Any) -> list[list[str]]:
    return [[*p.opts, *p.secondary_opts] for p in cmd.params if p.param_type_name == "option"]


def _invoke(*args: object, **kwargs):
    _add_subapps()
    return CliRunner().invoke(app, [str(a) for a in args], **kwargs)


def _one_line_error(res) -> str:
    assert res.exit_code == 2, res.output
    text = res.output.strip()
    assert text.startswith("error: ") and "\n" not in text and "Traceback" not in text, text
    return text


def test_out_means_a_written_path_and_run_dir_a_run_directory(commands):
    # -o is always --out, --run-dir has no short flag, and --out always has -o: one meaning per spelling.
    for name, cmd in commands.items():
        for opts in _opts(cmd):
            if "-o" in opts or "--out" in opts:
                assert sorted(set(opts) - DEPRECATED) == ["--out", "-o"], f"{name}: {opts}"
            if "--run-dir" in opts:
                assert opts == ["--run-dir"], f"{name}: {opts}"


def test_every_command_that_writes_names_its_output_one_way(commands):
    for name, cmd in commands.items():
        flags = {o for opts in _opts(cmd) for o in opts}
        has = [f for f in ("--out", "--run-dir") if f in flags]
        if name in WRITES:
            assert has == [WRITES[name]], f"{name}: expected {WRITES[name]}, has {has}"
        else:  # a new command: classify it above (what it writes, and which option names it)
            assert name in WRITES_NOTHING, f"{name} is not classified in WRITES / WRITES_NOTHING (has {has})"
            assert not has, f"{name} writes nothing, yet has {has}"


def test_every_configurable_command_takes_set(commands):
    for name, cmd in commands.items():
        flags = {o for opts in _opts(cmd) for o in opts}
        if "--config" in flags:
            assert {"--set", "-s"} <= flags, name
    select = {o for opts in _opts(commands["select"]) for o in opts}
    assert {"--set", "-s"} <= select


def test_version():
    res = _invoke("--version")
    assert res.exit_code == 0 and res.output.strip() == f"frugalft {frugalft.__version__}"


@pytest.fixture
def pool_file(tmp_path):
    path = tmp_path / "pool.jsonl"
    path.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"prompt {i}"}) + "\n" for i in range(4)))
    return path


def test_select_set_reads_values_as_the_config_does(monkeypatch, pool_file, tmp_path):
    import frugalft.design as design

    seen = []

    def fake_select(pool, strategy, budget, seed=0, params=None, **kwargs):
        seen.append(params)
        raise design.DesignError("stop here")

    monkeypatch.setattr(design, "select_prompts", fake_select)
    args = [pool_file, "-b", 2, "-o", tmp_path / "sel.jsonl"]
    _invoke("select", *args, "--set", "epsilon=1e-4", "-s", "optimizer=knn", "--set", "knn=8")
    assert seen[-1] == {"epsilon": 1e-4, "optimizer": "knn", "knn": 8}
    assert isinstance(seen[-1]["epsilon"], float)
    _invoke("select", *args, "-p", "sigma=0.5", "--param", "max-iter=3")  # the deprecated spelling still works
    assert seen[-1] == {"sigma": 0.5, "max_iter": 3}
    assert "key=value" in _one_line_error(_invoke("select", *args, "--set", "sigma"))


def test_cuda_without_cuda_is_one_line_naming_the_install(monkeypatch, tmp_path):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    # "before any work": no run directory appears, and the error is one line (a model load on a missing CUDA
    # would end in a traceback). load_model is not patched: modules imported meanwhile would keep the fake.
    for args in (["generate", "hello", "--model", "tiny-test", "--device", "cuda"],
                 ["sft", "--set", "device=cuda:1", "--set", "train=x.jsonl", "--run-dir", tmp_path / "sft"],
                 ["rl", "data", "--set", "device=cuda", "--run-dir", tmp_path / "rl"]):
        text = _one_line_error(_invoke(*args))
        assert "pip install torch" in text and "cuda" in text, text
    assert not (tmp_path / "sft").exists() and not (tmp_path / "rl").exists()  # before any work


def test_a_missing_extra_is_one_line_naming_the_install(monkeypatch, pool_file, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails
    for args in (["scale", "greedi", pool_file, "-b", 2, "-o", tmp_path / "sel.jsonl", "--workers", 2],
                 ["scale", "score", pool_file],
                 ["rl", "train", "--run-dir", tmp_path / "rl", "--workers", 2, "--set", "model=tiny-test"],
                 ["rl", "table", "--run-dir", tmp_path / "rl", "--set", "rl.workers=2"]):
        text = _one_line_error(_invoke(*args))
        assert "pip install 'frugalft[ray]'" in text, text
    monkeypatch.setitem(sys.modules, "textworld", None)
    text = _one_line_error(_invoke("rl", "data", "--run-dir", tmp_path / "rl", "--set", "env=TextWorld"))
    assert "pip install 'frugalft[textworld]'" in text
    assert not (tmp_path / "rl").exists() and not (tmp_path / "sel.jsonl").exists()  # before any work
