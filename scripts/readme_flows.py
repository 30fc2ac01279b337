#!/usr/bin/env python3
"""Run every command of README.md's ```bash blocks, in order, in a fresh clone: the README's flows at small size.

    python scripts/readme_flows.py --list                  each command and what this script does with it
    python scripts/readme_flows.py                         run them all in a new clone of HEAD (a temp dir)
    python scripts/readme_flows.py --only merge --with-deps --workdir /tmp/flows   one flow, what it reads first

The commands are read from the README at run time. Each one matches exactly one entry of RULES, which says to
run it as written (RUN), with arguments appended that make it small (SMALL), or not at all and why (SKIP); a
command no entry matches (or several do) is an ERROR, so a new README command cannot go unconsidered.

Commands run one after another with `bash -c` in the clone, so each reads what the earlier ones wrote, with this
interpreter's venv first on PATH and the clone's src/ first on PYTHONPATH (the clone's code, not an editable
install's). The setup prefix of the README's first commands (`python3 -m venv .venv && . .venv/bin/activate
&& bash scripts/setup.sh ...`) is taken off: a fresh venv per run would cost minutes and a network; what
follows it (`frugalft quickstart`) is run.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

# `python3 -m venv .venv && . .venv/bin/activate [&& bash scripts/setup.sh [extras]] [&& REST]`: REST is kept.
SETUP_PREFIX = re.compile(
    r"^python3 -m venv \S+ && \. \S+/bin/activate(?: && bash scripts/setup\.sh(?: [^&]*?)?)?(?: && (?P<rest>.+))?$")


# ------------------------------------------------------------------------------------------------- parsing
@dataclass(frozen=True)
class Command:
    block: int  # 1-based index of its ```bash block
    line: int  # README line where it starts
    text: str  # as written, comments and continuations removed
    run: str  # what is run: ``text`` without the setup prefix


def bash_blocks(markdown: str) -> list[tuple[int, list[str]]]:
    """The ```bash blocks of a markdown text: (line number of the block's first line, its lines)."""
    blocks, current, start = [], None, 0
    for i, line in enumerate(markdown.splitlines(), start=1):
        fence = line.strip()
        if current is None:
            if fence == "```bash":
                current, start = [], i + 1
        elif fence == "```":
            blocks.append((start, current))
            current = None
        else:
            current.append(line)
    return blocks


def strip_comment(line: str, quote: str | None = None) -> tuple[str, str | None]:
    """``line`` without its ``# comment``, as bash reads it: a ``#`` that starts a word outside quotes.
    ``quote`` is the quote still open from the previous line of the same command; returns the one left open."""
    escaped = False
    for i, ch in enumerate(line):
        if escaped:
            escaped = False
        elif quote == "'":
            quote = None if ch == "'" else quote
        elif ch == "\\":
            escaped = True
        elif quote == '"':
            quote = None if ch == '"' else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip(), None
    return (line.rstrip() if quote is None else line), quote


def split_commands(lines: list[str], first_line: int = 1) -> list[tuple[int, str]]:
    """(line number, command) per command of a bash block: comments stripped, blank lines skipped, a line that
    ends in an unescaped backslash joined to the next (as bash does, outside single quotes)."""
    commands, buffer, start, quote = [], "", 0, None
    for i, raw in enumerate(lines, start=first_line):
        opened = quote
        code, quote = strip_comment(raw, quote)
        if not buffer:
            if not code.strip():
                continue
            start = i
        if opened is None:  # a continuation line's indentation only separates words
            code = code.lstrip()
        if (len(code) - len(code.rstrip("\\"))) % 2 == 1 and quote != "'":
            buffer += code[:-1].rstrip() + " " if quote is None else code[:-1]
            continue
        buffer += code
        if quote is None:
            commands.append((start, buffer.strip()))
            buffer = ""
        else:  # a newline inside quotes belongs to the command
            buffer += "\n"
    if buffer.strip():
        commands.append((start, buffer.strip()))
    return commands


def without_setup(command: str) -> str:
    """The command with the README's venv/setup prefix taken off ('' if it is nothing but setup)."""
    m = SETUP_PREFIX.match(command)
    if m is None:
        return command
    return m.group("rest") or ""


def readme_commands(path: Path = README) -> list[Command]:
    commands = []
    for n, (first, lines) in enumerate(bash_blocks(path.read_text(encoding="utf-8")), start=1):
        for line, text in split_commands(lines, first):
            commands.append(Command(n, line, text, without_setup(text)))
    return commands


# ---------------------------------------------------------------------------------------- preparing, checking
def _operands(argv: list[str], subcommand: str) -> list[str]:
    """The positional arguments after ``subcommand`` (up to the first option)."""
    rest = argv[argv.index(subcommand) + 1:]
    return rest[:next((i for i, a in enumerate(rest) if a.startswith("-")), len(rest))]


def fill_answers(argv: list[str], cwd: Path) -> str:
    """Play the annotators before `merge`: fill the response column of the exported file with the pool's
    reference answer of each prompt ('ok' where the pool has none), guarded as `export` guards cells."""
    from frugalft.design.annotate import guard_cell, unguard_cell

    pool_path, _, answers_path = (cwd / p for p in _operands(argv, "merge")[:3])
    if answers_path.suffix.lower() not in (".csv", ".tsv"):
        raise ValueError(f"can only fill a .csv or .tsv answers file, not {answers_path.name}")
    references = {}
    with open(pool_path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                references[str(row["id"])] = row.get("response") or "ok"
    delimiter = "\t" if answers_path.suffix.lower() == ".tsv" else ","
    with open(answers_path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        fields, rows = list(reader.fieldnames or []), list(reader)
    for row in rows:
        row["response"] = guard_cell(references.get(unguard_cell(row["id"]), "ok"))
    with open(answers_path, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    return (f"filled the response column of {answers_path.name} ({len(rows)} rows) with the pool's reference "
            "answers, in place of the annotators")


def _option(argv: list[str], *names: str) -> list[str]:
    """Every value given to the option ``names`` (``--set a=1 -s b=2`` -> ['a=1', 'b=2'])."""
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a in names]


def sft_trained_on_merge(argv: list[str], cwd: Path, output: str) -> str | None:
    """`frugalft sft --set train=X` must have trained on X: its run directory's recorded config names it."""
    import yaml

    sets = dict(s.split("=", 1) for s in _option(argv, "--set", "-s"))
    config = yaml.safe_load((cwd / _option(argv, "--config", "-c")[-1]).read_text(encoding="utf-8"))
    run = (_option(argv, "--run-dir") or [sets.get("out", config.get("out", "runs/sft"))])[-1]
    recorded = cwd / run / "config.yaml"
    if not recorded.exists():
        return f"no {recorded.relative_to(cwd)}"
    train = (yaml.safe_load(recorded.read_text(encoding="utf-8")) or {}).get("train")
    if train != sets.get("train"):
        return f"{recorded.relative_to(cwd)} names train={train!r}, not {sets.get('train')!r}"
    return None


def says(text: str) -> Callable[[list[str], Path, str], str | None]:
    """A check that the command's output contains ``text`` (what the README says it prints)."""
    def check(argv: list[str], cwd: Path, output: str) -> str | None:
        return None if text in output else f"the output does not contain {text!r}"
    return check


# ------------------------------------------------------------------------------------------------ decisions
RUN, SMALL, SKIP, ERROR = "RUN", "SMALL", "SKIP", "ERROR"


@dataclass(frozen=True)
class Rule:
    key: str  # a substring that only this README command contains (whitespace runs count as one space)
    decision: str  # RUN, SMALL or SKIP
    extra: str = ""  # SMALL: the arguments appended
    reason: str = ""  # SKIP: why; RUN/SMALL: a note
    needs: tuple[str, ...] = ()  # keys of the earlier commands whose outputs it reads (for --with-deps)
    before: Callable[[list[str], Path], str] | None = None  # prepares its inputs; returns what it did
    check: Callable[[list[str], Path, str], str | None] | None = None  # after success: a problem, or None


def _sets(*overrides: str) -> str:
    return " ".join(f"--set {shlex.quote(o)}" for o in overrides)


# One seed, a few tasks, a few dozen warm-up steps, a few RL iterations, a few test tasks (quickstart too). The
# same overrides on `rl data`, `warmup`, `train` and the taxi_cpu table, so that each reuses the stages the
# previous one made (a changed config is refused on resume).
RL_SMALL = _sets("seeds=[0]", "data.tasks_per_level=6", "warmup.reflection_steps=20", "warmup.policy_steps=20",
                 "warmup.eval_every=10", "warmup.val_max_examples=32", "warmup.val_generate=4",
                 "warmup.checkpoint_every=10", "rl.iterations=4", "rl.num_envs=2", "rl.checkpoint_interval=2",
                 "eval.max_tasks=4", "eval.num_envs=4")
TAXI_CPU = "src/frugalft/configs/rl/taxi_cpu.yaml"
POOL = "frugalft pool build"
SELECT = "--strategy facility-location"
EXPORT = "frugalft export"
MERGE = "frugalft merge"

RULES: tuple[Rule, ...] = (
    # Two commands (setup prefix taken off) and the GPU setup
    Rule("frugalft quickstart", SMALL, RL_SMALL),
    Rule("python -m pytest", SKIP, reason="the test suite: run on its own (tests/test_readme_flows.py checks this table)"),
    Rule("python3 -m venv", SKIP, reason="venv setup: this script runs in the current venv"),
    Rule("download.pytorch.org/whl/cu", SKIP, reason="the CUDA build of PyTorch: a GPU machine and a download"),
    Rule("bash scripts/setup.sh", SKIP, reason="setup: this script runs in the current venv"),
    # Models
    Rule("frugalft models", RUN),
    Rule("generate --model smollm2-135m", RUN, reason="checks the README's 'Paris'", check=says("Paris")),
    Rule("meta-llama/Llama-3.2-1B", SKIP, reason="a gated hub download"),
    # Environments
    Rule("frugalft env list", RUN),
    Rule("frugalft env play", SKIP, reason="interactive: a person types the actions"),
    Rule("frugalft env stats AutoExplore", RUN),
    Rule("frugalft env make-alfworld", RUN, reason="~2 s as written (needs the alfworld extra)"),
    # Reflect-RL
    Rule(f"rl data -c {TAXI_CPU}", SMALL, RL_SMALL),
    Rule(f"rl warmup -c {TAXI_CPU}", SMALL, RL_SMALL, needs=(f"rl data -c {TAXI_CPU}",)),
    Rule(f"rl train -c {TAXI_CPU}", SMALL, RL_SMALL, needs=(f"rl warmup -c {TAXI_CPU}",)),
    Rule(f"rl table -c {TAXI_CPU}", SMALL, RL_SMALL, reason="its own run directory: every stage again, small"),
    Rule("rl table -c src/frugalft/configs/rl/taxi_full_cpu.yaml", SMALL,
         RL_SMALL + " " + _sets("extra_seeds={}", "eval.extra={}"),
         reason="without the 300-start 'paper' evaluation and the extra seeds"),
    Rule("rl table -c src/frugalft/configs/rl/taxi_full_noreflect_cpu.yaml", SMALL,
         RL_SMALL + " " + _sets("eval.extra={}"), reason="without the 300-start 'paper' evaluation"),
    Rule("rl compare runs/rl-table/taxi-full runs/rl-table/taxi-full-noreflect", RUN,
         reason="the two small tables' seed 0, paired",
         needs=("rl table -c src/frugalft/configs/rl/taxi_full_cpu.yaml",
                "rl table -c src/frugalft/configs/rl/taxi_full_noreflect_cpu.yaml")),
    Rule("rl table -c src/frugalft/configs/rl/taxi_full_ablations_cpu.yaml", SMALL,
         RL_SMALL + " " + _sets("eval.extra={}"), reason="without the 300-start 'paper' evaluation"),
    Rule("rl table -c src/frugalft/configs/rl/taxi_full_reflection_cpu.yaml", SMALL,
         RL_SMALL + " " + _sets("eval.extra={}"), reason="without the 300-start 'paper' evaluation"),
    Rule("examples/count_to/config.yaml", RUN, reason="~2 min: a user's own environment and teacher"),
    # Label-efficient SFT
    Rule(POOL, SMALL, "--size 1000 --eval-per-task 4"),
    Rule(SELECT, SMALL, "--budget 40", needs=(POOL,)),
    Rule("--strategy min-margin", SKIP, reason="~90 min on 2 cores (SmolLM2 scores every pool prompt)"),
    Rule(EXPORT, RUN, needs=(SELECT,)),
    Rule(MERGE, RUN, reason="after filling the response column with the pool's references", needs=(EXPORT,),
         before=fill_answers),
    Rule("frugalft sft -c src/frugalft/configs/sft/tiny.yaml", SMALL,
         _sets("max_steps=5", "eval_every=0", "save_every=0", "eval_max=16"),
         reason="checks that its run directory's config names the merged file", needs=(MERGE,),
         check=sft_trained_on_merge),
    Rule("frugalft curve -c src/frugalft/configs/curve/cpu.yaml", SMALL,
         _sets("pool_subsample=200", "budgets=[16,32]", "seeds=[0]", "eval_per_task=1", "sft.epochs=1",
               "max_new_tokens=8"), needs=(POOL,)),
    # Scale out
    Rule("--workers 4", SKIP, reason="Ray rollout workers"),
    Rule("$(which frugalft) rl train", SKIP, reason="4 GPUs (accelerate --multi_gpu)"),
    Rule("frugalft scale score", SKIP, reason="8 Ray workers"),
    Rule("frugalft scale greedi", SKIP, reason="8 Ray workers"),
    Rule("$(which frugalft) sft -c", SKIP, reason="4 GPUs (accelerate --multi_gpu)"),
)


@dataclass(frozen=True)
class Decision:
    command: Command
    decision: str  # RUN, SMALL, SKIP or ERROR
    line: str  # the command line run ('' for SKIP and ERROR)
    note: str  # SKIP/ERROR: why; otherwise the rule's note
    rule: Rule | None


def _normal(text: str) -> str:
    return " ".join(text.split())


def decide(command: Command, rules: tuple[Rule, ...] = RULES) -> Decision:
    # A setup-only command is matched as written, anything else without its setup prefix.
    text = _normal(command.run or command.text)
    hits = [r for r in rules if _normal(r.key) in text]
    if len(hits) != 1:
        why = ("no entry of RULES matches it" if not hits else
               f"several entries of RULES match it: {', '.join(repr(r.key) for r in hits)}")
        return Decision(command, ERROR, "", why, None)
    rule = hits[0]
    if rule.decision == SKIP:
        return Decision(command, SKIP, "", rule.reason, rule)
    line = command.run if rule.decision == RUN else f"{command.run} {rule.extra}"
    return Decision(command, rule.decision, line, rule.reason, rule)


def unused_rules(decisions: list[Decision], rules: tuple[Rule, ...] = RULES) -> list[Rule]:
    """Entries no README command matches: stale, once a command has left the README."""
    used = {id(d.rule) for d in decisions if d.rule is not None}
    return [r for r in rules if id(r) not in used]


def selected(decisions: list[Decision], only: list[str], with_deps: bool) -> list[Decision]:
    """The decisions to act on: all, or those whose command contains one of ``only`` (and, ``with_deps``, the
    commands they read from, transitively), in README order."""
    if not only:
        return decisions
    chosen = {i for i, d in enumerate(decisions) if any(_normal(s) in _normal(d.command.text) for s in only)}
    while with_deps:
        needed = {_normal(k) for i in chosen if decisions[i].rule for k in decisions[i].rule.needs}
        more = {i for i, d in enumerate(decisions) if d.rule and _normal(d.rule.key) in needed} - chosen
        if not more:
            break
        chosen |= more
    return [d for i, d in enumerate(decisions) if i in chosen]


# -------------------------------------------------------------------------------------------------- running
def clone(workdir: Path) -> None:
    """A clone of this repository's HEAD in ``workdir`` (reused if it is one already: --only on a later step)."""
    if (workdir / ".git").exists():
        print(f"reusing the clone in {workdir}")
        return
    workdir.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(workdir)], check=True)
    head = subprocess.run(["git", "-C", str(workdir), "rev-parse", "--short", "HEAD"], check=True,
                          capture_output=True, text=True).stdout.strip()
    print(f"cloned {ROOT} at {head} into {workdir}")


def environment(workdir: Path) -> dict[str, str]:
    env = dict(os.environ)
    # This interpreter's venv, activated or not; the clone's package ahead of an editable install of ROOT.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(workdir / "src"), env.get("PYTHONPATH", "")] if p)
    return env


@dataclass
class Outcome:
    decision: Decision
    status: str  # ok, FAILED, TIMEOUT, skipped, ERROR
    seconds: float = 0.0
    rc: int | None = None


def run_one(d: Decision, workdir: Path, env: dict[str, str], log: Path, timeout: float) -> Outcome:
    argv = shlex.split(d.line)
    if d.rule and d.rule.before:
        try:
            print(f"    before: {d.rule.before(argv, workdir)}")
        except (OSError, ValueError, KeyError) as e:  # e.g. an earlier command failed to write its input
            print(f"    FAILED before running: {type(e).__name__}: {e}")
            return Outcome(d, "FAILED")
    started = time.monotonic()
    with open(log, "w", encoding="utf-8") as out:
        # Its own session: a timeout ends the command's whole process group (rl table --jobs starts children).
        proc = subprocess.Popen(["bash", "-c", d.line], cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            rc = None
    seconds = time.monotonic() - started
    output = log.read_text(encoding="utf-8", errors="replace")
    problem = None
    if rc == 0 and d.rule and d.rule.check:
        try:
            problem = d.rule.check(argv, workdir, output)
        except (OSError, ValueError, KeyError) as e:
            problem = f"{type(e).__name__}: {e}"
    status = "TIMEOUT" if rc is None else "FAILED" if rc != 0 or problem else "ok"
    print(f"    {status}: exit {rc}, {seconds:.1f} s{f' ({problem})' if problem else ''}")
    if status != "ok":
        for line in output.splitlines()[-20:]:
            print(f"    | {line}")
        print(f"    (the whole output: {log})")
    return Outcome(d, status, seconds, rc)


def run_all(decisions: list[Decision], workdir: Path, timeout: float) -> list[Outcome]:
    clone(workdir)
    env = environment(workdir)
    logs = workdir / ".readme_flows"
    logs.mkdir(exist_ok=True)
    outcomes = []
    for n, d in enumerate(decisions, start=1):
        where = f"[{n}/{len(decisions)}] README:{d.command.line}"
        if d.decision in (SKIP, ERROR):
            print(f"{where} {d.decision}: {d.command.text}\n    {d.note}")
            outcomes.append(Outcome(d, "skipped" if d.decision == SKIP else ERROR))
            continue
        print(f"{where} {d.decision}: {d.line}", flush=True)
        outcomes.append(run_one(d, workdir, env, logs / f"line-{d.command.line:03d}.log", timeout))
    return outcomes


def summary(outcomes: list[Outcome]) -> str:
    rows = [f"{'line':>5}  {'decision':8}  {'status':8}  {'seconds':>8}  command"]
    for o in outcomes:
        seconds = f"{o.seconds:.1f}" if o.status not in ("skipped", ERROR) else "-"
        text = o.decision.command.text
        rows.append(f"{o.decision.command.line:>5}  {o.decision.decision:8}  {o.status:8}  {seconds:>8}  "
                    f"{text if len(text) <= 80 else text[:77] + '...'}")
    total = sum(o.seconds for o in outcomes)
    rows.append(f"total {total:.0f} s over {sum(o.status not in ('skipped', ERROR) for o in outcomes)} commands run")
    return "\n".join(rows)


def listing(decisions: list[Decision]) -> str:
    rows = []
    for d in decisions:
        rows.append(f"README:{d.command.line} (block {d.command.block})  {d.decision}")
        rows.append(f"    {d.command.text}")
        if d.decision in (RUN, SMALL) and d.line != d.command.text:
            rows.append(f"    runs: {d.line}")
        if d.note:
            rows.append(f"    {'why' if d.decision in (SKIP, ERROR) else 'note'}: {d.note}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--list", action="store_true", help="print each command and its decision; run nothing")
    parser.add_argument("--only", action="append", default=[], metavar="SUBSTR",
                        help="run only the commands containing SUBSTR (repeatable)")
    parser.add_argument("--with-deps", action="store_true",
                        help="with --only: also the earlier commands whose outputs they read")
    parser.add_argument("--workdir", type=Path, help="where to clone (default: a new temp dir); an existing "
                                                     "clone is reused")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per command (default 3600)")
    parser.add_argument("--readme", type=Path, default=README, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    decisions = [decide(c) for c in readme_commands(args.readme)]
    stale = unused_rules(decisions)
    chosen = selected(decisions, args.only, args.with_deps)
    if args.list:
        print(listing(chosen))
        for rule in stale:
            print(f"note: no README command matches the RULES entry {rule.key!r}")
        return int(any(d.decision == ERROR for d in chosen))
    if not chosen:
        print(f"no README command contains {' or '.join(map(repr, args.only))}")
        return 2
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="readme-flows-"))
    outcomes = run_all(chosen, workdir.resolve(), args.timeout)
    print()
    print(summary(outcomes))
    print(f"clone and logs: {workdir}")
    return int(any(o.status in ("FAILED", "TIMEOUT", ERROR) for o in outcomes))


if __name__ == "__main__":
    sys.exit(main())
