"""scripts/readme_flows.py: every README bash command has a decision, and commands are split as bash splits them.

Nothing is run: the README is parsed and the decisions table consulted (scripts/readme_flows.py runs them)."""

from __future__ import annotations

import importlib.util
import re
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("readme_flows", ROOT / "scripts" / "readme_flows.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


flows = _load()


def test_every_readme_command_has_a_decision():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    fences = len(re.findall(r"^```bash[ \t]*$", readme, flags=re.M))
    commands = flows.readme_commands(ROOT / "README.md")
    assert fences >= 1 and len(flows.bash_blocks(readme)) == fences
    assert {c.block for c in commands} == set(range(1, fences + 1))  # no block lost, none without a command
    decisions = [flows.decide(c) for c in commands]
    errors = [f"README:{d.command.line}: {d.command.text} ({d.note})" for d in decisions if d.decision == "ERROR"]
    assert not errors, "add these to RULES in scripts/readme_flows.py:\n" + "\n".join(errors)
    stale = [r.key for r in flows.unused_rules(decisions)]
    assert not stale, f"RULES entries no README command matches (remove them): {stale}"
    assert all(d.line for d in decisions if d.decision in ("RUN", "SMALL"))
    assert all(d.note for d in decisions if d.decision == "SKIP")


def test_continuation_and_comments_split_as_bash_does():
    block = [
        "# a whole-line comment",
        "",
        "frugalft select pool.jsonl --budget 5 \\",
        "    --set 'note=a # b' --out sel.jsonl   # an inline comment",
        "echo a#b \"c # d\"  # it's a comment, its quote does not count",
        "frugalft export x \\\\",  # an escaped backslash: no continuation
    ]
    assert flows.split_commands(block, first_line=10) == [
        (12, "frugalft select pool.jsonl --budget 5 --set 'note=a # b' --out sel.jsonl"),
        (14, 'echo a#b "c # d"'),
        (15, "frugalft export x \\\\"),
    ]


def test_setup_prefix_taken_off_and_unknown_commands_are_errors():
    venv = "python3 -m venv .venv && . .venv/bin/activate"
    assert flows.without_setup(f"{venv} && bash scripts/setup.sh test && python -m pytest -q") == "python -m pytest -q"
    assert flows.without_setup(f"{venv} && bash scripts/setup.sh && frugalft quickstart") == "frugalft quickstart"
    assert flows.without_setup(venv) == ""
    unknown = flows.Command(1, 1, "frugalft something-new", "frugalft something-new")
    assert flows.decide(unknown).decision == "ERROR"
    rules = (flows.Rule("frugalft a", "RUN"), flows.Rule("a b", "SKIP", reason="x"))
    assert "several" in flows.decide(flows.Command(1, 1, "frugalft a b", "frugalft a b"), rules).note


def test_with_deps_pulls_in_what_merge_reads():
    decisions = [flows.decide(c) for c in flows.readme_commands(ROOT / "README.md")]
    picked = [d.command.text for d in flows.selected(decisions, ["frugalft merge"], with_deps=True)]
    assert [t.split()[1] for t in picked] == ["pool", "select", "export", "merge"]


def test_answers_filled_and_sft_run_checked(tmp_path):
    (tmp_path / "pool.jsonl").write_text('{"id": "a", "prompt": "p", "response": "-1"}\n{"id": "b", "prompt": "q"}\n')
    (tmp_path / "ann.csv").write_text("id,rank,task,prompt,response\na,1,t,p,\nb,2,t,q,\n")
    flows.fill_answers(shlex.split("frugalft merge pool.jsonl sel.jsonl ann.csv --out train.jsonl"), tmp_path)
    # as `export` guards cells: a leading '-' gets a "'", which `merge` takes off again
    assert (tmp_path / "ann.csv").read_text().splitlines()[1:] == ["a,1,t,p,'-1", "b,2,t,q,ok"]

    (tmp_path / "sft.yaml").write_text("out: runs/s\ntrain: pool.jsonl\n")
    argv = shlex.split("frugalft sft -c sft.yaml --set train=train.jsonl")
    assert "no runs/s/config.yaml" in flows.sft_trained_on_merge(argv, tmp_path, "")
    (tmp_path / "runs" / "s").mkdir(parents=True)
    (tmp_path / "runs" / "s" / "config.yaml").write_text("train: pool.jsonl\n")
    assert "train='pool.jsonl'" in flows.sft_trained_on_merge(argv, tmp_path, "")
    (tmp_path / "runs" / "s" / "config.yaml").write_text("train: train.jsonl\n")
    assert flows.sft_trained_on_merge(argv, tmp_path, "") is None
