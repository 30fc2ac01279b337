"""A custom environment's teacher (docs/custom_envs.md): registered for its family from another module, or named
by import path in the config; a family without one fails before any episode, and a failing teacher's message
promises a resumed rerun only where the teacher caches its answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from frugalft.config import load_config
from frugalft.reflect import teachers
from frugalft.reflect.teachers import Situation, TeacherConfig, TeacherError, make_teacher, register_teacher
from frugalft.reflect.warmup_data import DataConfig, env_family, generate

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
COUNT_TO = "count_to.count_env:CountTo"


@pytest.fixture(autouse=True)
def examples_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.setattr(teachers, "_REGISTRY", {})  # registrations made here stay here


class Echo:
    """The smallest teacher: the config it was made with, and the situation's facts."""

    name = "echo"

    def __init__(self, config: TeacherConfig) -> None:
        self.config = config

    def reflect(self, situation: Situation) -> str:
        return f"{self.config.options.get('word', 'left')} {situation.privileged['left']}"


class Flaky(Echo):
    """Fails at its third reflection, as a teacher with a bug would."""

    calls = 0

    def reflect(self, situation: Situation) -> str:
        Flaky.calls += 1
        if Flaky.calls == 3:
            raise TeacherError("flaky teacher broke")
        return super().reflect(situation)


def _config(**teacher) -> DataConfig:
    return DataConfig(env=COUNT_TO, levels=[0], tasks_per_level=2, negatives_per_episode=1,
                      teacher=TeacherConfig(**teacher))


def test_registered_teacher_writes_for_its_family_under_kind_oracle(tmp_path):
    assert env_family(COUNT_TO) == "count_to"
    register_teacher("count_to", Echo)
    counts = generate(_config(options={"word": "to go:"}), tmp_path, log=lambda *a: None)
    rows = [json.loads(line) for line in (tmp_path / "reflection.jsonl").read_text().splitlines()]
    assert counts["tasks"] == 2 and counts["corrective_steps"] > 0 and counts["teacher"] == "oracle"
    assert all(r["reflection"].startswith("to go: ") for r in rows)
    # Registered by import path: loaded at first use; the built-in families still write themselves.
    register_teacher("count_to", "count_to.teacher:CountTeacher")
    teacher = make_teacher(TeacherConfig(max_words=4), "count_to")
    text = teacher.reflect(Situation("count_to", "", ["up 1"], {"counter": 1, "target": 9, "left": 8}, "up 3"))
    assert text == "Counter 1, target 9:"  # the config's max_words reached the registered teacher
    assert teachers.teacher_families() == ["taxi", "autoexplore", "count_to"]


def test_config_names_a_teacher_by_import_path_with_its_options(tmp_path):
    cfg = load_config(DataConfig, None, [f"env={COUNT_TO}", "levels=[1]", "tasks_per_level=1",
                                         "teacher.kind=count_to.teacher:CountTeacher", "teacher.reveal_action=true",
                                         "teacher.options={tone: coach}"])
    counts = generate(cfg, tmp_path, log=lambda *a: None)
    rows = [json.loads(line) for line in (tmp_path / "policy.jsonl").read_text().splitlines()]
    assert counts["teacher"] == "count_to"
    assert all(r["reflection"].startswith("Coach: ") and r["reflection"].endswith(f"Next: {r['target']}.")
               for r in rows)
    assert any(r["kind"] == "corrective" and r["reflection"].startswith("Coach: Mistake: ") for r in rows)


def test_a_family_without_a_teacher_fails_before_playing_and_says_how_to_add_one(tmp_path):
    with pytest.raises(TeacherError) as err:
        generate(_config(), tmp_path, log=lambda *a: None)
    msg = str(err.value)
    assert "no teacher for environment family 'count_to'" in msg and "register_teacher('count_to'" in msg
    assert "module:Factory" in msg and "rerun" not in msg
    assert not (tmp_path / "partial.jsonl").exists()
    with pytest.raises(ValueError, match="teacher.kind 'gpt': valid are oracle, openai, or an import path"):
        TeacherConfig(kind="gpt")
    with pytest.raises(TeacherError, match="has no attribute 'Nope'"):
        make_teacher(TeacherConfig(kind="count_to.teacher:Nope"))


def test_a_failing_teacher_without_a_cache_does_not_promise_a_resumed_rerun(tmp_path):
    Flaky.calls = 0
    with pytest.raises(TeacherError) as err:
        generate(_config(kind=f"{__name__}:Flaky"), tmp_path, log=lambda *a: None)
    msg = str(err.value)
    assert msg.startswith("flaky teacher broke. The 2 steps generated before it are in")
    assert "a rerun starts over once the teacher is fixed" in msg and "resumes" not in msg
    assert len((tmp_path / "partial.jsonl").read_text().splitlines()) == 2
