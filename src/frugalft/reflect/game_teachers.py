"""Offline teachers for the text games: TextWorld (``textworld``) and ALFWorld (``alfworld``) families.

Like the built-in oracle teachers (``frugalft.reflect.teachers``) they write short reflections from the
environment's privileged state and the engine's winning plan (``policy_commands``): what the goal is, what has
been done, where the object probably is, what to do next in general terms. By default they point the way without
naming the exact next command (the paper's teacher was told not to); ``reveal_action=True`` adds it. With
``Situation.mistake`` set they write the corrective reflection: why that command was a mistake (judged by how
the remaining plan changed) and how to recover. ``brief=True``: about 25 words.

Registered for their families in ``frugalft.reflect.teachers`` (``register_teacher``), so ``kind: oracle``
writes for ``--set env=TextWorld`` and ``--set env=ALFWorld``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from frugalft.reflect.teachers import Situation, TeacherConfig, TeacherError


def _cap(text: str, max_words: int) -> str:
    words = text.split()
    return text if len(words) <= max_words else " ".join(words[:max_words])


def _short(text: str, limit: int = 90) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def _plan(p: dict[str, Any]) -> list[str]:
    return list(p.get("policy_commands") or [])


def _steps(n: int) -> str:
    return f"{n} step" + ("" if n == 1 else "s")


def _plan_change(s: Situation) -> tuple[int | None, int | None]:
    """(plan length before the mistake, after it); None where unknown."""
    before = _plan(s.before) if s.before else None
    return (len(before) if before is not None else None), len(_plan(s.privileged))


# ---- TextWorld ---------------------------------------------------------------------------------------------
_DIRECTIONS = ("north", "south", "east", "west", "up", "down")


def _tw_hint(command: str) -> str:
    """The next command in general terms: where to head or what to do with which thing, not the command."""
    words = command.split()
    verb, rest = (words[0], " ".join(words[1:])) if words else ("", "")
    if verb == "go" and rest in _DIRECTIONS:
        return f"The way to the goal leads out of this room, {rest}ward."
    if verb == "take":
        thing = rest.split(" from ")[0]
        return f"The {thing} is within reach: get hold of it."
    if verb == "open":
        return f"The {rest} is closed and stands in the way: it needs opening."
    if verb == "unlock":
        door, _, key = rest.partition(" with ")
        return f"The {door} is locked; the {key} you carry fits it." if key else f"The {door} is locked."
    if verb in ("put", "insert"):
        m = re.match(r"(.+?) (on|into|in) (.+)", rest)
        return f"The {m.group(1)} belongs {m.group(2)} the {m.group(3)}: place it there." if m else f"Place the {rest}."
    if verb in ("cook", "slice", "dice", "chop", "eat", "drink"):
        return f"The {rest.split(' with ')[0]} still needs preparing ({verb})."
    return f"Next, deal with the {rest}." if rest else "One more action finishes it."


def _tw_goal(p: dict[str, Any], limit: int = 110) -> str:
    """The objective, or when it is long (TextWorld's chatty intros narrate the whole route) its sentence about
    the final step's object."""
    text = " ".join(str(p.get("objective") or "").split())
    if len(text) <= limit:
        return text
    sentences = [x.strip() for x in re.split(r"(?<=[.!?])\s+", text) if x.strip()]
    final = (list(p.get("walkthrough") or []) or _plan(p) or [""])[-1].split()
    noun = final[-1] if len(final) > 1 else ""
    about = [x for x in sentences if noun and re.search(rf"\b{re.escape(noun)}\b", x, re.I)]
    goal = about[-1] if about else sentences[-1] if sentences else text
    goal = re.sub(r"^(and then|then|after that|following that|finally|lastly|next|once that's done)\W*", "", goal,
                  flags=re.I)
    return _short(goal[:1].upper() + goal[1:], limit)


def textworld_reflection(s: Situation, reveal: bool) -> str:
    p = s.privileged
    plan = _plan(p)
    out: list[str] = []
    if s.mistake is not None:
        out.append(_tw_mistake(s))
    goal = _tw_goal(p)
    out.append(f"Goal: {goal}" if goal else "No goal is stated: explore to find what scores points.")
    score, top = p.get("score", 0), p.get("max_score", 0)
    room = p.get("room")
    where = f"I am in the {room}" if room else "I am here"
    out.append(f"{where}, with {score:g} of {top:g} points so far." if top else f"{where}.")
    if p.get("won"):
        out.append("The goal is reached.")
        return " ".join(out)
    if plan:
        out.append(f"The goal is {_steps(len(plan))} away.")
        out.append(_tw_hint(plan[0]))
    else:
        out.append("No way to win is left from here.")
    if reveal and plan:
        out.append(f"Best move: {plan[0]}.")
    return " ".join(out)


def textworld_brief(s: Situation, reveal: bool) -> str:
    p = s.privileged
    plan = _plan(p)
    out = []
    if s.mistake is not None:
        out.append(f"Mistake: {s.mistake} led astray; go back." if _worse(s) else f"Mistake: {s.mistake} wasted a step.")
    out.append(f"Score {p.get('score', 0):g}/{p.get('max_score', 0):g}.")
    if plan:
        out.append(f"{_steps(len(plan))} left. {_tw_hint(plan[0])}")
    if reveal and plan:
        out.append(f"Next: {plan[0]}.")
    return " ".join(out)


def _worse(s: Situation) -> bool:
    n0, n1 = _plan_change(s)
    return n0 is not None and n1 > n0


def _tw_mistake(s: Situation) -> str:
    n0, n1 = _plan_change(s)
    if n0 is not None and n1 > n0:
        return (f"The last move, {s.mistake}, was a mistake: it led away from the goal ({_steps(n1)} to go now, "
                f"{n0} before). Recover by undoing it.")
    return f"The last move, {s.mistake}, was a mistake: it did not bring the goal any closer."


# ---- ALFWorld ----------------------------------------------------------------------------------------------
def _where(recep: str, closed: bool) -> str:
    return f"in {recep}" + (", which is closed" if closed else "")


def _alf_hint(p: dict[str, Any], command: str) -> str:
    """The next step in general terms."""
    obj, recep = p.get("goal_object") or "object", p.get("goal_receptacle") or "receptacle"
    verb = command.split(" ", 1)[0]
    if verb == "go":
        if p.get("holding_goal_object"):
            return f"Carry it to a {recep}."
        if p.get("holding"):
            return "Find a place to set down what you hold."
        return f"Go where the {obj} is."
    if verb == "open":
        return (f"Open the {recep} to put the {obj} in." if p.get("holding_goal_object")
                else f"Open it: the {obj} is inside.")
    if verb == "take":
        return f"Pick up the {obj}." if command.split(" ")[1] == obj else "Pick that up to clear your hands."
    if verb == "move":
        return (f"Put the {obj} in the {p.get('at') or recep}." if p.get("holding_goal_object")
                else "Set down what you hold.")
    if verb == "close":
        return "Close it."
    return "Look around."


def _alf_search_state(p: dict[str, Any], brief: bool) -> str:
    """Where the search stands (oracle="search"), from what the player has seen only: no hidden locations."""
    obj, recep = p.get("goal_object") or "object", p.get("goal_receptacle") or "receptacle"
    at, closed = p.get("at"), set(p.get("closed_receptacles") or [])
    if p.get("holding_goal_object"):
        goals = list(p.get("goal_receptacles") or [])
        target = at if at in goals else (goals[0] if goals else f"a {recep}")
        if at == target:
            return f"Holding the {obj} at {at}" + (", closed: open it." if at in closed else ": put it here.")
        return f"I hold the {obj}; it goes {_where(target, target in closed)}."
    if p.get("holding"):
        return f"I hold {', '.join(p['holding'])}, which the task does not need: set it down."
    if p.get("seen_here"):
        return f"A {obj} is right here at {at}: take it."
    left = list(p.get("search_left") or [])
    if at in left and at in closed:
        return f"The {at} is closed and may hold a {obj}: look inside."
    if not left:
        return f"Every place that can hold a {obj} has been searched."
    shown = left[:2] if brief else left[:3]
    more = f" and {len(left) - len(shown)} more" if len(left) > len(shown) else ""
    return f"No {obj} seen yet. Not searched: {', '.join(shown)}{more}."


def _alf_search_mistake(s: Situation) -> str:
    p, before = s.privileged, s.before or {}
    obj = p.get("goal_object") or "object"
    m = s.mistake or ""
    if m.startswith("take "):
        return f"Taking {m[5:].split(' from ')[0]} was a mistake: it is not the {obj}."
    if m.startswith("move ") and before.get("holding_goal_object"):
        return f"Putting the {obj} down there was a mistake: it does not go there."
    if m.startswith("go to "):
        place = m[6:]
        why = ("was searched already" if place in set(before.get("searched") or []) else
               f"cannot hold a {obj}" if place not in set(before.get("search_left") or []) else "was not the way")
        return f"Going to {place} was a mistake: it {why}."
    return f"The last action, {m}, was a mistake: it did not move the task forward."


def alfworld_search_reflection(s: Situation, reveal: bool, brief: bool = False) -> str:
    """For the search expert: the goal, what was seen and what is left to search; nothing the player has not
    seen (the planner's plan knows where the object is, a player in a new room cannot)."""
    p = s.privileged
    obj, recep = p.get("goal_object") or "object", p.get("goal_receptacle") or "receptacle"
    out: list[str] = []
    if s.mistake is not None:
        out.append(_alf_search_mistake(s))
    out.append(f"Goal: {obj} to {recep}." if brief else f"The task is to put a {obj} in a {recep}.")
    if p.get("won"):
        out.append("Done.")
        return " ".join(out)
    out.append(_alf_search_state(p, brief))
    if reveal and p.get("oracle_action"):
        out.append(f"Next: {p['oracle_action']}.")
    return " ".join(out)


def alfworld_reflection(s: Situation, reveal: bool) -> str:
    p = s.privileged
    if "goal_object" not in p:  # a TextWorld game laid out like ALFWorld's data
        return textworld_reflection(s, reveal)
    if p.get("oracle") == "search":
        return alfworld_search_reflection(s, reveal)
    obj, recep = p.get("goal_object") or "object", p.get("goal_receptacle") or "receptacle"
    plan = _plan(p)
    out: list[str] = []
    if s.mistake is not None:
        out.append(_alf_mistake(s))
    out.append(f"The task is to put a {obj} in a {recep}.")
    if p.get("won"):
        out.append("Done: the task is complete.")
        return " ".join(out)
    holding = list(p.get("holding") or [])
    searched = set(p.get("searched") or [])
    closed = set(p.get("closed_goal_receptacles") or [])
    if p.get("holding_goal_object"):
        goals = list(p.get("goal_receptacles") or [])
        at = p.get("at")
        if at in goals:
            out.append(f"I hold the {obj} and stand at {at}" + (", still closed." if at in closed else "."))
        else:
            target = goals[0] if goals else f"a {recep}"
            out.append(f"I hold the {obj}; next it goes {_where(target, target in closed)}.")
    else:
        if holding:
            out.append(f"I hold {', '.join(holding)}, which the task does not need: my hands must be free.")
        # The object the plan fetches; "probably" until the agent has looked there itself.
        fetch = next((c.split(" from ")[1] for c in plan if c.startswith("take ") and " from " in c), None)
        targets = p.get("target_locations") or {}
        spot = fetch or (sorted(targets.values())[0] if targets else None)
        if spot:
            sure = spot in searched
            out.append(f"A {obj} is {'' if sure else 'probably '}"
                       f"{_where(spot, spot in set(p.get('closed_receptacles') or []))}.")
        elif not targets:
            out.append(f"No {obj} is left to fetch.")
        if searched and not s.mistake:
            out.append(f"Already looked in: {', '.join(sorted(searched)[:4])}.")
    if plan:
        out.append(f"{_steps(len(plan))} {'remains' if len(plan) == 1 else 'remain'}. {_alf_hint(p, plan[0])}")
    else:
        out.append("No plan wins from here.")
    if reveal and plan:
        out.append(f"Best action: {plan[0]}.")
    return " ".join(out)


def alfworld_brief(s: Situation, reveal: bool) -> str:
    p = s.privileged
    if "goal_object" not in p:
        return textworld_brief(s, reveal)
    if p.get("oracle") == "search":
        return alfworld_search_reflection(s, reveal, brief=True)
    obj, recep = p.get("goal_object") or "object", p.get("goal_receptacle") or "receptacle"
    plan = _plan(p)
    out = []
    if s.mistake is not None:
        out.append(f"Mistake: {s.mistake} wasted steps.")
    out.append(f"Goal: {obj} to {recep}.")
    if p.get("holding_goal_object"):
        out.append(f"Holding the {obj}.")
    else:
        fetch = next((c.split(" from ")[1] for c in plan if c.startswith("take ") and " from " in c), None)
        if fetch:
            out.append(f"{obj.capitalize()} {'at' if fetch in set(p.get('searched') or []) else 'likely at'} {fetch}.")
    if plan:
        out.append(f"{_steps(len(plan))} left. {_alf_hint(p, plan[0])}")
    if reveal and plan:
        out.append(f"Next: {plan[0]}.")
    return " ".join(out)


def _alf_mistake(s: Situation) -> str:
    p, before = s.privileged, s.before or {}
    obj = p.get("goal_object") or "object"
    m = s.mistake or ""
    n0, n1 = _plan_change(s)
    cost = f" ({_steps(n1)} to go now, {n0} before)" if n0 is not None and n1 > n0 - 1 else ""
    if m.startswith("take "):
        thing = m[5:].split(" from ")[0]
        return (f"Taking {thing} was a mistake: it is not the {obj}, and it must be set down again before the "
                f"{obj} can be carried{cost}.")
    if m.startswith("move ") and before.get("holding_goal_object"):
        return f"Putting the {obj} down there was a mistake: it is not where the task wants it; take it back{cost}."
    if m.startswith("go to "):
        return f"Going to {m[6:]} was a mistake: nothing needed is there{cost}."
    if m.startswith(("open ", "close ")):
        return f"{m.split(' ', 1)[0].capitalize()}ing {m.split(' ', 1)[1]} was a mistake: it does not help the task{cost}."
    if m.split(" ", 1)[0] in ("look", "inventory", "examine", "help"):
        return f"The last action, {m}, was a mistake: it only shows what is known and wastes a step{cost}."
    return f"The last action, {m}, was a mistake: it did not move the task forward{cost}."


# ---- the teachers ------------------------------------------------------------------------------------------
@dataclass
class _GameTeacher:
    config: TeacherConfig | None = None
    name: str = field(default="oracle", init=False)
    writers: tuple = field(default=(), init=False, repr=False)  # (full, brief)

    def reflect(self, situation: Situation) -> str:
        c = self.config or TeacherConfig()
        if not situation.privileged:
            raise TeacherError(f"the {type(self).__name__} needs the environment's privileged state")
        full, brief = self.writers
        writer = brief if c.brief else full
        return _cap(writer(situation, c.reveal_action), c.max_words)


@dataclass
class TextWorldTeacher(_GameTeacher):
    """Oracle reflections for TextWorld games (family ``textworld``)."""

    def __post_init__(self) -> None:
        self.writers = (textworld_reflection, textworld_brief)


@dataclass
class ALFWorldTeacher(_GameTeacher):
    """Oracle reflections for ALFWorld games (family ``alfworld``)."""

    def __post_init__(self) -> None:
        self.writers = (alfworld_reflection, alfworld_brief)
