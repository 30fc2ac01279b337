"""Teachers write the reflections of the warm-up data (SPEC A.1): a short analysis of the situation and a plan.

Two teachers share one interface, ``teacher.reflect(situation) -> str``:

- ``OracleTeacher`` writes from the environment's privileged state (``env.unwrapped.privileged()``) and its
  oracle action: offline, free, deterministic. Like the paper's GPT-4 teacher it is told (by default) not to
  name the next action outright, only to point the way; ``reveal_action=True`` lifts that.
- ``OpenAITeacher`` asks any OpenAI-compatible chat-completions endpoint, with a timeout, retries with
  exponential backoff, and a response cache on disk keyed by the request, so a rerun after a failure pays
  only for what was not yet answered.

Other environments bring their own teacher (docs/custom_envs.md): ``register_teacher(family, factory)`` from any
module makes the oracle teacher (``kind: oracle``) write for that environment family with the factory's teacher;
or a config names one outright, ``teacher: {kind: "mypkg.teachers:MyTeacher", options: {...}}``. Either way the
factory is called with the ``TeacherConfig`` and returns an object with ``name`` and ``reflect(situation)``.

A ``Situation`` carries what a teacher may see. When ``mistake`` is set, the agent has just taken that wrong
action (negative example generation) and the teacher writes the *corrective* reflection: why the move was a
mistake and how to recover.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from frugalft.atomic import write_json
from frugalft.cache import cache_dir


class TeacherError(RuntimeError):
    pass


@dataclass
class Situation:
    env: str  # the environment family (frugalft.envs.family_of): "taxi", "autoexplore", or a custom env's
    observation: str  # the rendered state (without the action list)
    actions: list[str]  # the valid actions now
    privileged: dict[str, Any]  # env.unwrapped.privileged() now
    oracle_action: str  # env.unwrapped.oracle_action() now
    mistake: str | None = None  # the wrong action just taken, for a corrective reflection
    before: dict[str, Any] | None = None  # privileged() before the mistake


class Teacher(Protocol):
    name: str

    def reflect(self, situation: Situation) -> str: ...


@dataclass
class TeacherConfig:
    # oracle: offline from privileged state (built in for taxi and autoexplore, or the teacher registered for the
    # env family); openai: a chat endpoint; "module:Factory": a teacher of your own, called with this config
    kind: str = "oracle"
    reveal_action: bool = False  # may the reflection name the next action? The paper's teacher was told not to
    max_words: int = 80  # the paper asked for at most 50-100 words
    brief: bool = False  # oracle only: terse reflections (~25 words), cheap for a tiny model to learn and generate
    # openai only:
    base_url: str = "https://api.openai.com/v1"  # any OpenAI-compatible server (vLLM, llama.cpp, Ollama, ...)
    model: str = "gpt-4o-mini"  # model name sent to the endpoint
    api_key_env: str = "OPENAI_API_KEY"  # the key is read from this environment variable, never from a file
    timeout_s: float = 60.0  # per request
    max_retries: int = 5  # attempts after the first one, on timeouts, connection errors, 429 and 5xx
    backoff_s: float = 1.0  # wait before the first retry; doubles each retry
    temperature: float = 0.0  # 0 keeps the cache meaningful (same request, same answer)
    max_tokens: int = 200  # cap on the answer's tokens
    cache: str | None = None  # response cache folder; None = $FRUGALFT_CACHE/teacher
    options: dict[str, Any] = field(default_factory=dict)  # a custom or registered teacher's own settings

    def __post_init__(self) -> None:
        if self.kind not in ("oracle", "openai") and ":" not in self.kind:
            raise ValueError(f"teacher.kind {self.kind!r}: valid are oracle, openai, or an import path "
                             "'module:Factory' of your own teacher")


TeacherFactory = Callable[[TeacherConfig], Teacher]
# Environment family -> the factory of its offline teacher: a callable, or an import path "module:attribute"
# loaded at first use (so registering costs no import).
_REGISTRY: dict[str, TeacherFactory | str] = {}
_BUILT_IN = ("taxi", "autoexplore")


def register_teacher(family: str, factory: TeacherFactory | str) -> None:
    """Make ``kind: oracle`` write for environment ``family`` (``frugalft.envs.family_of``) with
    ``factory(config)``: a callable taking the ``TeacherConfig`` (a class taking it works), or its import path
    ``"module:attribute"``. Call it from any module imported before the data is generated (the environment's own
    module works: the data stage imports it before it makes the teacher); a later registration of the same
    family replaces the earlier one, and a registered family overrides the built-in one."""
    _REGISTRY[family] = factory


def teacher_families() -> list[str]:
    """The families ``kind: oracle`` writes for: the built-in ones, then the registered ones."""
    return [*_BUILT_IN, *sorted(f for f in _REGISTRY if f not in _BUILT_IN)]


# The text games' oracle teachers, by import path (loaded at first use).
register_teacher("textworld", "frugalft.reflect.game_teachers:TextWorldTeacher")
register_teacher("alfworld", "frugalft.reflect.game_teachers:ALFWorldTeacher")


def _factory(path_or_factory: TeacherFactory | str, what: str) -> TeacherFactory:
    if not isinstance(path_or_factory, str):
        return path_or_factory
    from frugalft.envs import import_object  # call time only: teachers load without gymnasium

    try:
        factory = import_object(path_or_factory, what)
    except ValueError as e:
        raise TeacherError(str(e)) from None
    if not callable(factory):
        raise TeacherError(f"{what}: {path_or_factory!r} is not callable")
    return factory


def make_teacher(config: TeacherConfig, family: str | None = None) -> Teacher:
    """The teacher a config names. With ``family`` (the environment family it will write for), a missing oracle
    teacher for it is an error now, before any episode is played, rather than at the first reflection."""
    if config.kind == "oracle":
        teacher = OracleTeacher(reveal_action=config.reveal_action, max_words=config.max_words, brief=config.brief,
                                config=config)
        if family is not None:
            teacher.teacher_for(family)
        return teacher
    if config.kind == "openai":
        return OpenAITeacher(config)
    if ":" in config.kind:
        return _factory(config.kind, "teacher.kind")(config)
    raise TeacherError(f"unknown teacher kind {config.kind!r}; valid: oracle, openai, or 'module:Factory'")


# ----------------------------------------------------------------------------------------------------------
# The oracle teacher


def _cap_words(text: str, max_words: int) -> str:
    words = text.split()
    return text if len(words) <= max_words else " ".join(words[:max_words])


@dataclass
class OracleTeacher:
    """Writes for taxi and autoexplore itself, and hands any other family to the teacher registered for it."""

    reveal_action: bool = False
    max_words: int = 80
    brief: bool = False
    config: TeacherConfig | None = None  # what a registered family's factory gets (None: these three settings)
    name: str = field(default="oracle", init=False)
    _family_teachers: dict[str, Teacher] = field(default_factory=dict, init=False, repr=False)

    def teacher_for(self, family: str) -> Teacher | None:
        """The registered teacher of ``family`` (made once), None for a built-in family; a TeacherError naming
        the ways to add one when there is neither."""
        if family in self._family_teachers:
            return self._family_teachers[family]
        if family not in _REGISTRY:
            if family in _BUILT_IN:
                return None
            known = ", ".join(teacher_families()[len(_BUILT_IN):])
            raise TeacherError(
                f"no teacher for environment family {family!r}: the oracle teacher knows taxi and autoexplore"
                + (f" and the registered {known}" if known else "")
                + f". Name one in the config (data.teacher.kind='module:Factory'), register one with "
                f"frugalft.reflect.teachers.register_teacher({family!r}, factory), or use kind 'openai' "
                "(docs/custom_envs.md)")
        config = self.config or TeacherConfig(reveal_action=self.reveal_action, max_words=self.max_words,
                                              brief=self.brief)
        teacher = _factory(_REGISTRY[family], f"the teacher registered for {family!r}")(config)
        self._family_teachers[family] = teacher
        return teacher

    def reflect(self, situation: Situation) -> str:
        registered = self.teacher_for(situation.env)
        if registered is not None:
            return registered.reflect(situation)
        writers = {"taxi": _taxi_reflection, "autoexplore": _explore_reflection}
        if self.brief:
            writers = {"taxi": _taxi_brief, "autoexplore": _explore_brief}
        return _cap_words(writers[situation.env](situation, self.reveal_action), self.max_words)


def _taxi_reflection(s: Situation, reveal: bool) -> str:
    p = s.privileged
    taxi = tuple(p["taxi"])
    aboard = bool(p["passenger_aboard"])
    if aboard:
        goal_kind, goal_name, goal = "destination", p["destination_name"], tuple(p["destination"])
    else:
        goal_kind, goal_name, goal = "passenger", p["passenger_at"], tuple(p["passenger"])
    sentences: list[str] = []
    if s.mistake is not None:
        sentences.append(_taxi_mistake(s, goal_kind))
    where = f"The taxi is at row {taxi[0]}, column {taxi[1]}"
    if aboard:
        sentences.append(f"{where} with the passenger aboard; the destination {goal_name} is at row {goal[0]}, "
                         f"column {goal[1]}.")
    else:
        sentences.append(f"{where}; the passenger waits at {goal_name} (row {goal[0]}, column {goal[1]}).")
    blocked = list(p.get("blocked_moves", []))
    if blocked:
        sentences.append(f"Walls block {' and '.join(blocked)} here: that move would crash and end the episode.")
    else:
        sentences.append("No wall blocks the taxi here.")
    oracle = s.oracle_action
    if oracle in ("pickup", "dropoff"):
        what = "drop the passenger off" if aboard else "pick the passenger up"
        sentences.append(f"The taxi is on the {goal_kind}, so it is time to {what}.")
        if reveal:
            sentences.append(f"Best move: {oracle}.")
        return " ".join(sentences)
    dr, dc = goal[0] - taxi[0], goal[1] - taxi[1]
    wants = [w for w, d in (("south", dr > 0), ("north", dr < 0), ("east", dc > 0), ("west", dc < 0)) if d]
    dist = p.get("distance")
    if wants:
        sentences.append(f"The {goal_kind} is {' and '.join(wants)} of the taxi, {dist} steps away."
                         if dist is not None else f"The {goal_kind} is {' and '.join(wants)} of the taxi.")
    sentences.append("A pickup or dropoff here would waste the move and crash.")
    if oracle not in wants:
        sentences.append("A wall stands in the direct way, so the taxi must go around it.")
    sentences.append(f"Best move: {oracle}." if reveal else "Take the shortest open path, never into a wall.")
    return " ".join(sentences)


def _taxi_brief(s: Situation, reveal: bool) -> str:
    """The same facts in about 25 words: where things are, which moves crash, which way to go."""
    p = s.privileged
    aboard = bool(p["passenger_aboard"])
    goal_kind = "destination" if aboard else "passenger"
    goal = tuple(p["destination"] if aboard else p["passenger"])
    taxi = tuple(p["taxi"])
    out = []
    if s.mistake is not None:
        out.append(f"Mistake: {s.mistake} led away; go back.")
    out.append(f"Taxi {taxi[0]},{taxi[1]}; {goal_kind} {goal[0]},{goal[1]}.")
    blocked = list(p.get("blocked_moves", []))
    out.append(f"Walls: {' '.join(blocked)}." if blocked else "No walls.")
    if s.oracle_action in ("pickup", "dropoff"):
        out.append("Arrived: " + ("drop off." if aboard else "pick up."))
    else:
        dr, dc = goal[0] - taxi[0], goal[1] - taxi[1]
        wants = [w for w, d in (("south", dr > 0), ("north", dr < 0), ("east", dc > 0), ("west", dc < 0)) if d]
        out.append(f"Go {' '.join(wants)}, {p.get('distance')} steps." if wants else "")
        if s.oracle_action not in wants:
            out.append("Go around the wall.")
    if reveal:
        out.append(f"Next: {s.oracle_action}.")
    return " ".join(o for o in out if o)


def _taxi_mistake(s: Situation, goal_kind: str) -> str:
    before = s.before or {}
    d0, d1 = before.get("distance"), s.privileged.get("distance")
    if before.get("passenger_aboard") and not s.privileged.get("passenger_aboard"):
        return (f"The last move, {s.mistake}, let the passenger out away from the destination; "
                "they must be picked up again.")
    if d0 is not None and d1 is not None and d1 > d0:
        return (f"The last move, {s.mistake}, was a mistake: it took the taxi away from the {goal_kind} "
                f"({d1} steps now instead of {d0}). Recover by heading back.")
    return f"The last move, {s.mistake}, was a mistake: it did not bring the taxi closer to the {goal_kind}."


def _short(text: str, limit: int = 60) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _explore_reflection(s: Situation, reveal: bool) -> str:
    p = s.privileged
    evidence = _short(p.get("evidence", ""))
    file = p["answer"].split("/")[-1]
    sentences: list[str] = []
    if s.mistake is not None:
        sentences.append(_explore_mistake(s, evidence))
    last = p.get("last_cat")
    if last and s.mistake is None:
        if p.get("last_cat_showed_evidence"):
            sentences.append(f"The file just read, {last.split('/')[-1]}, shows \"{evidence}\": it answers the "
                             "question.")
        elif last != p["answer"]:
            sentences.append(f"The file just read, {last.split('/')[-1]}, does not show \"{evidence}\": it is "
                             "not the answer.")
    oracle = s.oracle_action
    if oracle.startswith("id "):
        sentences.append(f"The answer is {file} in this folder; name it now." if reveal else
                         "The answer is found; name that file now.")
    elif p.get("in_answer_folder") and p.get("search"):
        sentences.append(f"The answer is one of the files in this folder; read the next one, {oracle[4:]}." if reveal
                         else "The answer is one of the files in this folder; read them in order until one shows it.")
    elif p.get("in_answer_folder"):
        sentences.append(f"The answer is here: read {file} to confirm." if reveal else
                         "The answer is one of the files in this folder; read the one whose name fits the question.")
    elif p.get("answer_under_cwd"):
        sentences.append(f"The answer lies deeper, inside {p.get('next_dir')}." if reveal else
                         "The answer lies deeper; enter the subfolder whose name fits the question.")
    else:
        sentences.append("The answer is not under this folder; go back up.")
    return " ".join(sentences)


def _explore_brief(s: Situation, reveal: bool) -> str:
    p = s.privileged
    out = []
    if s.mistake is not None:
        out.append(f"Mistake: {s.mistake} was wrong.")
    if p.get("last_cat") and s.mistake is None:
        out.append("Last file answers it." if p.get("last_cat_showed_evidence") else "Last file is not it.")
    oracle = s.oracle_action
    if oracle.startswith("id "):
        out.append("Found: answer now.")
    elif p.get("in_answer_folder"):
        out.append("Answer is in this folder; read the next file." if p.get("search") else
                   "Answer is in this folder; read it.")
    elif p.get("answer_under_cwd"):
        out.append("Answer is deeper; go down.")
    else:
        out.append("Answer is elsewhere; go up.")
    if reveal:
        out.append(f"Next: {oracle}.")
    return " ".join(out)


def _explore_mistake(s: Situation, evidence: str) -> str:
    mistake = s.mistake or ""
    if mistake.startswith("cat "):
        return (f"Reading {mistake[4:]} was a mistake: it does not show \"{evidence}\", so it cannot answer "
                "the question.")
    if mistake == "cd ..":
        return "Going up was a mistake: the answer was below the previous folder; go back down."
    if mistake.startswith("cd "):
        return f"Entering {mistake[3:]} was a mistake: the answer is not under it; go back up."
    return f"{mistake} was a mistake."


# ----------------------------------------------------------------------------------------------------------
# The OpenAI-compatible teacher

_SYSTEM = (
    "You coach an agent that plays a text environment one action at a time. You see the current state and "
    "hidden facts the agent cannot see. Write a short reflection in the agent's own voice: what the situation "
    "is, what matters now, and a plan for the next few steps. At most {max_words} words. {reveal}"
)
_NO_REVEAL = "Never name the exact next action; point the way instead, so the agent must still decide."
_REVEAL = "You may name the best next action."
_USER = "State:\n{observation}\n\nValid actions: {actions}\n\nHidden facts: {facts}\nBest next action (hidden): {oracle}"
_USER_MISTAKE = "\n\nThe agent has just taken the wrong action `{mistake}`. Explain why it was a mistake and how to recover."


class OpenAITeacher:
    """Reflections from an OpenAI-compatible ``/chat/completions`` endpoint, cached on disk by request."""

    name = "openai"
    resumable = True  # answered requests are on disk: a rerun after a failure pays only for the rest

    def __init__(self, config: TeacherConfig):
        self.config = config
        self.cache = Path(config.cache) if config.cache else cache_dir("teacher")
        self.requests_sent = 0  # HTTP requests actually made (cache hits excluded), for logs and tests

    def messages(self, s: Situation) -> list[dict[str, str]]:
        system = _SYSTEM.format(max_words=self.config.max_words,
                                reveal=_REVEAL if self.config.reveal_action else _NO_REVEAL)
        user = _USER.format(observation=s.observation, actions=", ".join(s.actions),
                            facts=json.dumps(s.privileged, sort_keys=True, default=str), oracle=s.oracle_action)
        if s.mistake is not None:
            user += _USER_MISTAKE.format(mistake=s.mistake)
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    def reflect(self, situation: Situation) -> str:
        body = {"model": self.config.model, "messages": self.messages(situation),
                "temperature": self.config.temperature, "max_tokens": self.config.max_tokens}
        return _cap_words(self.complete(body).strip(), self.config.max_words)

    def complete(self, body: dict[str, Any]) -> str:
        url = self.config.base_url.rstrip("/") + "/chat/completions"
        # Keyed by the request body (model, messages, sampling), not the host: the same model served elsewhere
        # gives the same answers.
        key = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        cached = self.cache / f"{key}.json"
        if cached.exists():
            return json.loads(cached.read_text(encoding="utf-8"))["content"]
        content = self._post(url, body, key)
        write_json(cached, {"content": content, "request": body})
        return content

    def _post(self, url: str, body: dict[str, Any], key: str) -> str:
        headers = {"Content-Type": "application/json"}
        api_key = os.environ.get(self.config.api_key_env)
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        data = json.dumps(body).encode()
        wait = self.config.backoff_s
        errors: list[str] = []
        for attempt in range(self.config.max_retries + 1):
            if attempt:
                time.sleep(wait)
                wait *= 2
            self.requests_sent += 1
            try:
                req = urllib.request.Request(url, data=data, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=self.config.timeout_s) as resp:
                    payload = json.loads(resp.read().decode("utf-8"))
                return payload["choices"][0]["message"]["content"]
            except urllib.error.HTTPError as e:
                errors.append(f"HTTP {e.code}")
                if e.code not in (408, 429) and e.code < 500:  # the request itself is wrong: retrying won't help
                    break
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
                reason = getattr(e, "reason", e)
                errors.append(f"timeout after {self.config.timeout_s}s" if isinstance(reason, TimeoutError)
                              or "timed out" in str(reason) else f"connection error: {reason}")
            except (KeyError, IndexError, json.JSONDecodeError) as e:
                errors.append(f"malformed response ({type(e).__name__}: {e})")
        raise TeacherError(
            f"teacher request {key[:12]} to {url} (model {body.get('model')!r}) failed after "
            f"{len(errors)} attempt(s): {'; '.join(errors)}"
        )
