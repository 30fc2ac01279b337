"""The RL loop: curriculum bookkeeping, exact resume, clear errors, and a learning check on DangerousTaxi."""

from __future__ import annotations

import json
import math

import pytest
import torch

from frugalft.checkpoint import save_checkpoint
from frugalft.models import LabelError, load_model
from frugalft.reflect.evaluate import evaluate
from frugalft.reflect.reflection import ReflectionError
from frugalft.reflect.train import (
    RLConfig,
    build_players,
    curriculum_position,
    episode_specs,
    level_budgets,
    train,
)

# Two pickup starts where the taxi is on the passenger (1 step) and two one move away (2 steps).
EASY = ["pickup-002", "pickup-084", "pickup-021", "pickup-022"]


def test_level_budgets_are_proportional_and_sum_up():
    assert level_budgets([142, 142, 142], 10) == [4, 3, 3]
    assert level_budgets([10, 30], 8) == [2, 6]
    assert sum(level_budgets([7, 11, 13], 101)) == 101
    budgets = [2, 3]
    assert [curriculum_position(budgets, i) for i in range(5)] == [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2)]


def test_episode_specs_cover_each_task_once_per_pass_and_repeat():
    tasks = [f"t{i}" for i in range(5)]
    first = episode_specs(tasks, seed=3, group=0, offset=0, n=5, first_id=0)
    assert sorted(s.task_id for s in first) == tasks
    assert [s.episode_id for s in first] == [0, 1, 2, 3, 4]
    # Asking for episodes 2..6 in one call or in two gives the same episodes.
    whole = episode_specs(tasks, 3, 0, 2, 5, 2)
    split = episode_specs(tasks, 3, 0, 2, 2, 2) + episode_specs(tasks, 3, 0, 4, 3, 4)
    assert whole == split
    assert episode_specs(tasks, 4, 0, 0, 5, 0) != first  # the seed changes the order


def _cfg(**kw) -> RLConfig:
    base = dict(policy_model="tiny-test", reflection_model="tiny-test", reflection_tokens=4, iterations=4,
                num_envs=2, task_ids=EASY, checkpoint_interval=2, lr=1e-3, device="cpu", seed=5)
    return RLConfig(**{**base, **kw})


def _rows(path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "time" and not k.endswith("_s")}  # no timings
            for line in path.read_text().splitlines()]


@pytest.mark.parametrize("algorithm", ["reinforce", "ppo"])
def test_killed_run_resumes_without_repeating_or_losing_episodes(tmp_path, algorithm):
    # REINFORCE runs a two-level curriculum (budgets 2 + 2: the resume lands on the level boundary, where the
    # success buffer must be emptied as in the straight run); PPO a fixed task set.
    extra = dict(task_ids=None, levels=[0, 1], max_tasks_per_level=3) if algorithm == "reinforce" else {}
    cfg = _cfg(algorithm=algorithm, ppo_epochs=1, **extra)
    straight = train(cfg, tmp_path / "straight")
    # Killed after 3 iterations (the last checkpoint is at 2), then resumed to the end.
    train(cfg, tmp_path / "killed", stop_after=3)
    assert len(_rows(tmp_path / "killed" / "metrics.jsonl")) == 3
    resumed = train(cfg, tmp_path / "killed")
    a, b = _rows(tmp_path / "straight" / "metrics.jsonl"), _rows(tmp_path / "killed" / "metrics.jsonl")
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    assert [r["episodes"] for r in b] == [2, 4, 6, 8]
    assert [r["level"] for r in b] == ([0, 0, 1, 1] if algorithm == "reinforce" else [-1] * 4)
    for ra, rb in zip(a, b, strict=True):
        assert ra == pytest.approx(rb, rel=1e-4, abs=1e-6)
    assert straight["return"] == pytest.approx(resumed["return"])
    from safetensors.torch import load_file

    sa = load_file(f"{straight['checkpoint']}/model.safetensors")
    sb = load_file(f"{resumed['checkpoint']}/model.safetensors")
    assert all(torch.allclose(sa[k], sb[k], atol=1e-5) for k in sa)
    meta = json.loads((tmp_path / "killed" / "checkpoints" / "step-00000004" / "meta.json").read_text())
    assert meta["counters"]["episodes"] == 8
    # a finished run keeps only its last checkpoint (what a rerun reloads); the killed run kept step 2 too
    for run in ("straight", "killed"):
        assert [p.name for p in (tmp_path / run / "checkpoints").glob("step-*")] == ["step-00000004"]


@pytest.mark.parametrize("head", ["line", "text"])
def test_rl_runs_with_the_list_heads_reference_and_value_head(tmp_path, head):
    # PPO (value head, clipped ratio, the reference's KL) with a reflection model: every path that scores
    # prompts passes each row's labels. The rollout's log-probs are the update's: before the first update the
    # policy is its reference, so the KL of the first iteration is 0 and no ratio is clipped.
    cfg = _cfg(algorithm="ppo", ppo_epochs=1, iterations=2, policy_head=head, track_kl=True)
    train(cfg, tmp_path / "run")
    first = _rows(tmp_path / "run" / "metrics.jsonl")[0]
    assert first["kl"] == pytest.approx(0.0, abs=1e-5)
    assert first["clipfrac"] == 0.0
    assert all(math.isfinite(first[k]) for k in ("loss", "policy_loss", "value_loss", "entropy"))


def test_bad_labels_and_mismatched_reflection_checkpoint_are_clear_errors(tmp_path):
    with pytest.raises(LabelError, match="not a single token"):
        build_players(_cfg(labels=["0", "1", "two words"]))
    # A reflection checkpoint trained on tiny-test (64 wide) cannot be applied to tiny (128 wide).
    lm, _ = load_model("tiny-test", device="cpu")
    save_checkpoint(tmp_path / "refl", 1, lm)
    with pytest.raises(ReflectionError, match="does not fit 'tiny'"):
        build_players(_cfg(reflection_model="tiny", reflection_init=str(tmp_path / "refl")))
    with pytest.raises(FileNotFoundError):
        build_players(_cfg(policy_init=str(tmp_path / "missing")))


def test_short_rl_run_raises_success_on_a_fixed_taxi_set(tmp_path):
    """The authors' algorithm (REINFORCE + success replay), no reflection, 12 iterations of 8 episodes."""
    cfg = RLConfig(policy_model="tiny-test", iterations=12, num_envs=8, task_ids=EASY, lr=1e-3, track_kl=False,
                   checkpoint_interval=100, device="cpu", seed=0)
    players = build_players(cfg)
    before = evaluate(players, cfg, tasks=EASY, repeats=8, diagnostic=False)
    train(cfg, tmp_path / "run", players=players)
    after = evaluate(players, cfg, tasks=EASY, repeats=8, diagnostic=False)
    assert before.success < 0.2  # a random init crashes into walls or picks up nowhere
    assert after.success >= before.success + 0.25
    assert after.ret > before.ret + 0.3
