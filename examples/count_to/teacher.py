"""The CountTo teacher: an offline reflection from the environment's privileged state (docs/custom_envs.md).

A config names it outright (``data: {teacher: {kind: "count_to.teacher:CountTeacher"}}``); importing this module
also registers it for the ``count_to`` family, so that ``kind: oracle`` finds it in a program that imports it.
"""

from __future__ import annotations

from frugalft.reflect.teachers import Situation, TeacherConfig, register_teacher


class CountTeacher:
    """Where the counter is, how far the target is, and (after a mistake) what went wrong; never the next move
    unless ``reveal_action``. ``options: {tone: ...}`` is an example of a teacher's own setting."""

    name = "count_to"

    def __init__(self, config: TeacherConfig) -> None:
        self.reveal = config.reveal_action
        self.max_words = config.max_words
        self.prefix = {"plain": "", "coach": "Coach: "}[config.options.get("tone", "plain")]

    def reflect(self, situation: Situation) -> str:
        p = situation.privileged
        out = []
        if situation.mistake is not None:
            what = "went the wrong way" if situation.mistake == "down 1" else "was too small a step"
            out.append(f"Mistake: {situation.mistake} {what}.")
        left = p["left"]
        plan = "take the biggest step" if left > 3 else f"exactly {left} more, no further"
        out.append(f"Counter {p['counter']}, target {p['target']}: {left} to go; {plan}.")
        if self.reveal:
            out.append(f"Next: {situation.oracle_action}.")
        return self.prefix + " ".join(" ".join(out).split()[: self.max_words])


register_teacher("count_to", CountTeacher)
