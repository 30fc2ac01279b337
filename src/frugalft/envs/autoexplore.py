"""AutoExplore: answer a question about a repository by walking its files and naming the one that answers it.

Commands (SPEC A.4): ``cd <dir>``, ``cd ..`` (not at the root), ``cat <file>`` (a truncated view; a file
already read is not offered again), ``id <file>`` (the answer; ends the episode). Reward: -1 per step, plus
+15 for a correct ``id``, -15 for a wrong one or for running out of steps (unscaled, as in the paper).
Observation sections: task, directory, entries, history, last result. Every file access goes through
``frugalft.envs.sandbox.Sandbox``: nothing outside the repository root is ever listed or read.

Tasks come from ``frugalft.envs.repo_tasks`` (built-in repositories, or ``repos=[paths]``); levels are the
depth of the answer file (0: at most one folder down, 1: two, 2: deeper). Built-in tasks come from a pinned
snapshot shipped with frugalft (the same on every machine) and are balanced: no answer file name holds more
than 10% of a split x level, no question kind more than 35%, and ``task_ids(split, level)`` interleaves kinds
and repositories, so its first tasks are a fair sample. ``hide_prob`` hides each entry that is not on the
way to the answer with that probability (training split only: an augmentation).
"""

from __future__ import annotations

from typing import Any

from frugalft.envs.base import TextEnv
from frugalft.envs.repo_tasks import Task, builtin_tasks, cat_view, user_tasks, visible_text
from frugalft.envs.sandbox import Sandbox

STEP_REWARD = -1.0
CORRECT = 15.0
WRONG = -15.0
INSTRUCTIONS = ("Find the file that answers the question: move with `cd`, read with `cat`, and answer with "
                "`id <file>` in the file's folder.")


class AutoExplore(TextEnv):
    section_titles = {"task": "Task", "directory": "Current directory", "entries": "Entries",
                      "history": "History", "last_result": "Last result"}
    invalid_penalty = STEP_REWARD  # an unlisted command wastes a step and changes nothing
    timeout_penalty = WRONG

    def __init__(self, split: str = "train", level: int | None = None, horizon: int = 15,
                 invalid_action: str = "penalize", repos: list[str] | None = None, hide_prob: float = 0.0,
                 view_lines: int = 40, view_chars: int = 1600, max_bytes: int = 65536, max_entries: int = 60,
                 oracle_reads: bool = True, oracle_search: bool = False, test_tasks: str = "all",
                 render_mode: str | None = None) -> None:
        """
        repos: folders to build tasks from instead of the built-in repositories.
        hide_prob: chance of hiding each entry that is not on the way to the answer (training split only).
        view_lines, view_chars: what `cat` shows of a file (the first lines, at most this many characters).
        max_bytes: cap on the bytes read from one file.
        max_entries: cap on the entries listed per folder (answers always lie within it).
        oracle_reads: the oracle `cat`s the answer file before naming it (one step more than the shortest).
        oracle_search: in the answer's folder the oracle reads the files in listed order until one shows the
            answer, then names it: a search a policy can copy from what it sees, where the direct oracle's
            straight line to the answer file shows a name-to-file mapping only knowledge of the repository
            gives. It walks to the folder as the direct oracle does, and fails when the answer is listed too
            far down for the horizon.
        test_tasks: "all", "unseen_repos" (repositories with no training task) or "held_out" (new questions
            about training repositories): which part of the valid and test splits to use.
        """
        if not 0.0 <= hide_prob < 1.0:
            raise ValueError(f"hide_prob must be in [0, 1), got {hide_prob}")
        if test_tasks not in ("all", "unseen_repos", "held_out"):
            raise ValueError(f"test_tasks must be 'all', 'unseen_repos' or 'held_out', got {test_tasks!r}")
        super().__init__(split=split, level=level, horizon=horizon, invalid_action=invalid_action,
                         max_actions=2 * max_entries + 1, render_mode=render_mode)
        self.repos = list(repos) if repos else None
        self.hide_prob = hide_prob if split == "train" else 0.0
        self.view = (view_lines, view_chars)
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.oracle_reads = oracle_reads
        self.oracle_search = oracle_search
        self.test_tasks = test_tasks
        args = (view_lines, view_chars, max_entries, max_bytes)
        tasks = user_tasks(self.repos, *args) if self.repos else builtin_tasks(*args)
        # an answer must be reachable: cd into each folder, cat, id
        self.tasks = {t.task_id: t for t in tasks if t.depth + 1 + oracle_reads <= horizon}
        self._sandboxes: dict[str, Sandbox] = {}
        self._check_level(level)
        self.task: Task | None = None
        self.cwd: tuple[str, ...] = ()
        self.read: set[tuple[str, ...]] = set()
        self.hidden: dict[tuple[str, ...], set[str]] = {}
        self.last_cat: tuple[str, ...] | None = None
        self._listing: tuple[list[str], list[str], int, str] = ([], [], 0, "")
        self._moves: dict[str, tuple[str, str]] = {}

    @property
    def levels(self) -> list[int]:
        return [0, 1, 2]

    def _all_tasks(self) -> dict[str, dict[str, int]]:
        keep = {"all": lambda t: True, "unseen_repos": lambda t: t.unseen_repo,
                "held_out": lambda t: not t.unseen_repo}[self.test_tasks]
        return {"train": {i: t.level for i, t in self.tasks.items() if t.split == "train"},
                **{sp: {i: t.level for i, t in self.tasks.items() if t.split == sp and keep(t)}
                   for sp in ("valid", "test")}}

    def repos_of(self, split: str) -> set[str]:
        """Names of the repositories with tasks in ``split``."""
        return {self.tasks[i].repo for i in self.task_ids(split)}

    # ---- state ------------------------------------------------------------------------------------------
    @property
    def target(self) -> tuple[str, ...]:
        return tuple(self.task.path.split("/"))

    def _sandbox(self) -> Sandbox:
        root = self.task.root
        if root not in self._sandboxes:
            self._sandboxes[root] = Sandbox(root, max_bytes=self.max_bytes)
        return self._sandboxes[root]

    def _start(self, task_id: str) -> None:
        self.task = self.tasks[task_id]
        self.cwd = ()
        self.read = set()
        self.hidden = {}
        self.last_cat = None
        self._enter()

    def _enter(self) -> None:
        """List the current folder (hiding unrelated entries the first time, if augmenting)."""
        listing = self._sandbox().listdir(self.cwd)
        entries = [(n, True) for n in listing.dirs] + [(n, False) for n in listing.files]
        more = max(0, len(entries) - self.max_entries)
        entries = entries[: self.max_entries]
        if self.cwd not in self.hidden:
            hide = set()
            if self.hide_prob > 0:
                for name, _ in entries:
                    related = self.target[: len(self.cwd) + 1] == (*self.cwd, name)
                    if not related and self.np_random.random() < self.hide_prob:
                        hide.add(name)
            self.hidden[self.cwd] = hide
        hide = self.hidden[self.cwd]
        dirs = [n for n, is_dir in entries if is_dir and n not in hide]
        files = [n for n, is_dir in entries if not is_dir and n not in hide]
        self._listing = (dirs, files, more, listing.error)
        moves: dict[str, tuple[str, str]] = {}
        if self.cwd:
            moves["cd .."] = ("cd", "..")
        for d in dirs:
            moves[f"cd {d}"] = ("cd", d)
        for f in files:
            if (*self.cwd, f) not in self.read:
                moves[f"cat {f}"] = ("cat", f)
        for f in files:
            moves[f"id {f}"] = ("id", f)
        self._moves = moves

    def _actions(self) -> list[str]:
        return list(self._moves)

    def _apply(self, action: str) -> tuple[float, bool, bool, str]:
        verb, name = self._moves[action]
        self.last_cat = None
        if verb == "id":
            correct = (*self.cwd, name) == self.target
            if correct:
                return STEP_REWARD + CORRECT, True, True, f"id {name}: correct, this file answers the question."
            return STEP_REWARD + WRONG, True, False, f"id {name}: wrong, this file does not answer the question."
        if verb == "cd":
            self.cwd = self.cwd[:-1] if name == ".." else (*self.cwd, name)
            self._enter()
            return STEP_REWARD, False, False, f"Moved to {self.directory_text()}."
        path = (*self.cwd, name)
        self.read.add(path)
        self.last_cat = path
        fv = self._sandbox().read(path)
        self._enter()  # the file is no longer offered for `cat`
        return STEP_REWARD, False, False, f"cat {name}:\n{cat_view(fv, *self.view)}"

    def directory_text(self) -> str:
        return "/".join(self.cwd) + "/" if self.cwd else "(repository root)"

    def _parts(self) -> dict[str, str]:
        dirs, files, more, error = self._listing
        lines = [f"{d}/" for d in dirs] + files
        if more:
            lines.append(f"... and {more} more entries not shown")
        if error:
            lines.append(f"({error})")
        return {
            "task": f"{self.task.question}\n{INSTRUCTIONS}",
            "directory": self.directory_text(),
            "entries": "\n".join(lines) or "(empty)",
            "history": self.history_text(),
            "last_result": self.last_result or "(start)",
        }

    # ---- teacher's view --------------------------------------------------------------------------------
    def oracle_action(self) -> str:
        folder, file = self.target[:-1], self.target[-1]
        if self.cwd != folder[: len(self.cwd)]:
            return "cd .."
        if len(self.cwd) < len(folder):
            return f"cd {folder[len(self.cwd)]}"
        if self.oracle_search and self.target not in self.read:
            unread = [f for f in self._listing[1] if (*self.cwd, f) not in self.read]
            return f"cat {unread[0]}"  # the answer is listed and unread, so there is one
        if self.oracle_reads and self.target not in self.read:
            return f"cat {file}"
        return f"id {file}"

    def privileged(self) -> dict[str, Any]:
        folder = self.target[:-1]
        under = self.cwd == folder[: len(self.cwd)]
        if not under:
            next_dir = ".."
        elif len(self.cwd) < len(folder):
            next_dir = folder[len(self.cwd)]
        else:
            next_dir = None  # already in the answer's folder
        shown = False
        if self.last_cat == self.target:
            text, _ = visible_text(self._sandbox().read(self.target), *self.view)
            shown = self.task.evidence in text
        return {
            "answer": self.task.path,
            "kind": self.task.kind,
            "question": self.task.question,
            "evidence": self.task.evidence,
            "repo": self.task.repo,
            "depth": self.task.depth,
            "answer_under_cwd": under,
            "in_answer_folder": self.cwd == folder,
            "next_dir": next_dir,
            "last_cat_showed_evidence": shown,
            "last_cat": "/".join(self.last_cat) if self.last_cat else None,
            "search": self.oracle_search,
        }
