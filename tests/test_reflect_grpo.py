"""GRPO: group-relative advantages by hand, grouped episode specs, the table method, and an exact resume."""

from __future__ import annotations

import json
import math

import pytest
import torch

from frugalft.reflect.grpo import group_advantages, grpo_advantages, step_group_advantages
from frugalft.reflect.rollout import Episode, Step
from frugalft.reflect.table import METHODS, PLAN, TITLES, ExperimentConfig, rl_config_for
from frugalft.reflect.train import RLConfig, episode_specs, group_episode_specs, train

pytestmark = pytest.mark.usefixtures("one_thread")

# Two pickup starts where the taxi is on the passenger (1 step) and two one move away (2 steps).
EASY = ["pickup-002", "pickup-084", "pickup-021", "pickup-022"]
EPS = 1e-6


# ---- advantages by hand ----------------------------------------------------------------------------------
def test_group_advantages_by_hand():
    returns = [1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0]
    ids = [0, 0, 0, 0, 1, 1, 1, 1]
    # Group 0: mean 0.5, population std sqrt(4 * 0.25 / 4) = 0.5 (divisor n, not n-1): +-0.5 / (0.5 + 1e-6).
    # Group 1: all returns equal -> exactly 0 (no 0/0).
    a = 0.5 / (0.5 + EPS)
    assert group_advantages(returns, ids, normalize_std=True) == pytest.approx([a, -a, -a, a, 0, 0, 0, 0], abs=1e-12)
    assert group_advantages(returns, ids, normalize_std=False) == [0.5, -0.5, -0.5, 0.5, 0.0, 0.0, 0.0, 0.0]
    assert group_advantages(returns, ids)[4:] == [0.0] * 4  # exact zeros, not 1e-17 / 1e-6
    # Identical non-representable floats still give exact zeros; a lone member too.
    assert group_advantages([0.1, 0.1, 0.1, 7.0], [3, 3, 3, 9]) == [0.0, 0.0, 0.0, 0.0]
    # Groups need not be contiguous: the same numbers interleaved.
    inter = group_advantages([1.0, 2.0, 0.0, 2.0, 0.0, 2.0, 1.0, 2.0], [0, 1, 0, 1, 0, 1, 0, 1])
    assert inter == pytest.approx([a, 0, -a, 0, -a, 0, a, 0], abs=1e-12)
    assert not any(math.isnan(x) for x in inter)
    with pytest.raises(ValueError, match="3 returns but 2 group ids"):
        group_advantages([1.0, 2.0, 3.0], [0, 0])


def test_step_level_advantages_by_hand():
    # One group of three episodes: rewards [0, 1], [0, 0, 0], [-1] -> returns-to-go [1, 1], [0, 0, 0], [-1].
    rtg = [[1.0, 1.0], [0.0, 0.0, 0.0], [-1.0]]
    # Step 0: values 1, 0, -1 (mean 0, population std sqrt(2/3)); step 1: 1, 0 (mean 0.5, std 0.5);
    # step 2: only the second episode got there -> 0.
    s0 = 1.0 / (math.sqrt(2 / 3) + EPS)
    s1 = 0.5 / (0.5 + EPS)
    got = step_group_advantages(rtg, [0, 0, 0], normalize_std=True)
    assert [len(r) for r in got] == [2, 3, 1]
    assert got[0] == pytest.approx([s0, s1]) and got[1] == pytest.approx([0.0, -s1, 0.0])
    assert got[2] == pytest.approx([-s0])
    assert step_group_advantages(rtg, [0, 0, 0], normalize_std=False) == [[1.0, 0.5], [0.0, -0.5, 0.0], [-1.0]]


def _episode(eid: int, task: str, rewards: list[float]) -> Episode:
    steps = [Step(prompt_ids=[1, 2], labels=[0, 1], actions=["a", "b"], action=0, logprob=-0.7, reward=r)
             for r in rewards]
    return Episode(env_index=0, episode_id=eid, task_id=task, level=0, steps=steps, success=sum(rewards) > 0)


def test_batch_advantages_episode_and_step_modes():
    eps = [_episode(0, "t0", [0.0, 1.0]), _episode(1, "t0", [0.0, 0.0, 0.0]),
           _episode(2, "t1", [-1.0]), _episode(3, "t1", [-1.0])]
    # Episode mode: group t0 returns 1, 0 -> +-s; every step of an episode gets it. Group t1: equal -> 0.
    s = 0.5 / (0.5 + EPS)
    steps, adv, groups = grpo_advantages(eps, group_size=2)
    assert len(steps) == 7 and groups == [0, 0, 0, 0, 0, 1, 1]
    assert adv == pytest.approx([s, s, -s, -s, -s, 0.0, 0.0])
    # Step mode, mean only: step 0: 1 vs 0; step 1: 1 vs 0; step 2: one episode -> 0.
    _, adv, _ = grpo_advantages(eps, 2, normalize_std=False, advantage="step")
    assert adv == [0.5, 0.5, -0.5, -0.5, 0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="mixes tasks"):
        grpo_advantages([eps[0], eps[2]], 2)
    with pytest.raises(ValueError, match="group_size=3"):
        grpo_advantages(eps, 3)


def test_grpo_update_kl_penalty_and_groups_without_signal():
    from frugalft.models import load_model
    from frugalft.reflect.grpo import GRPOSettings, grpo_update
    from frugalft.reflect.policy import Policy, score_steps
    from frugalft.reflect.prompts import LabelAlphabet

    lm, tok = load_model("tiny-test", device="cpu", seed=0)
    policy = Policy(lm, LabelAlphabet(("0", "1", "2")).check(tok), tok.pad_token_id)
    opt = torch.optim.SGD([p for p in policy.parameters() if p.requires_grad], lr=0.0)  # measure, do not move
    same = [_episode(0, "t0", [1.0]), _episode(1, "t0", [1.0])]
    out = grpo_update(policy, opt, same, GRPOSettings(group_size=2, kl_coef=0.0))
    assert out["loss"] == 0.0 and out["grad_norm"] == 0.0 and out["zero_adv_groups"] == 1.0
    with pytest.raises(ValueError, match="ref_logprobs"):
        grpo_update(policy, opt, same, GRPOSettings(group_size=2, kl_coef=0.1))
    # The penalty is the exact KL over the listed actions to the recorded reference (here: uniform over 2).
    for ep in same:
        for st in ep.steps:
            st.ref_logprobs = [math.log(0.5), math.log(0.5)]
    st = same[0].steps[0]
    p = score_steps(policy, [st.prompt_ids], [st.labels], [st.action]).listed.exp()[0].tolist()
    kl = sum(q * math.log(q / 0.5) for q in p)
    assert kl > 0
    out = grpo_update(policy, opt, same, GRPOSettings(group_size=2, kl_coef=0.1))
    assert out["kl_penalty"] == pytest.approx(kl, rel=1e-5) and out["loss"] == pytest.approx(0.1 * kl, rel=1e-5)


# ---- episode specs ---------------------------------------------------------------------------------------
def test_group_episode_specs_share_a_task_and_resume_exactly():
    tasks = [f"t{i}" for i in range(5)]
    specs = group_episode_specs(tasks, seed=3, group=0, offset=0, n_groups=3, group_size=4, first_id=10)
    assert [s.episode_id for s in specs] == list(range(10, 22))
    groups = [specs[i: i + 4] for i in range(0, 12, 4)]
    assert all(len({s.task_id for s in g}) == 1 for g in groups)  # one task per group
    # The groups' tasks are the next tasks of the seeded order plain episode specs use: distinct within a pass.
    assert [g[0].task_id for g in groups] == [s.task_id for s in episode_specs(tasks, 3, 0, 0, 3, 0)]
    assert len({s.seed for s in specs}) == 12  # every play of a task has its own reset seed (and sampling)
    # Iteration by iteration (offsets in groups, ids from the episode counter) == all at once: resume holds.
    split = (group_episode_specs(tasks, 3, 0, 0, 2, 4, 10) + group_episode_specs(tasks, 3, 0, 2, 1, 4, 18))
    assert split == specs


def test_num_envs_must_be_a_multiple_of_group_size(tmp_path):
    with pytest.raises(ValueError, match="num_envs=6 is not a multiple of group_size=4"):
        RLConfig(algorithm="grpo", num_envs=6, group_size=4)
    with pytest.raises(ValueError, match="group_size >= 2"):
        RLConfig(algorithm="grpo", num_envs=4, group_size=1)
    RLConfig(algorithm="reinforce", num_envs=6, group_size=4)  # only GRPO groups
    cfg = RLConfig(num_envs=6)
    cfg.algorithm = "grpo"  # set after construction (as the table does): train checks before loading anything
    with pytest.raises(ValueError, match="num_envs=6 is not a multiple of group_size=4"):
        train(cfg, tmp_path / "run")


def test_table_method_is_opt_in_and_uses_the_reflect_warm_up(tmp_path):
    assert "reflect_rl_grpo" not in METHODS and "reflect_rl_grpo" not in ExperimentConfig().methods
    assert TITLES["reflect_rl_grpo"] == "Reflect-RL, GRPO" and PLAN["reflect_rl_grpo"] == PLAN["reflect_rl"]
    exp = ExperimentConfig(methods=["reflect_rl", "reflect_rl_grpo"], rl=RLConfig(num_envs=8))
    base = rl_config_for(exp, tmp_path, 0, "reflect_rl")
    grpo = rl_config_for(exp, tmp_path, 0, "reflect_rl_grpo")
    assert base.algorithm == "reinforce" and grpo.algorithm == "grpo"
    assert (grpo.policy_init, grpo.reflection_init) == (base.policy_init, base.reflection_init)
    assert {**vars(grpo), "algorithm": "reinforce"} == vars(base)  # everything else is the config's
    with pytest.raises(ValueError, match="num_envs=6 is not a multiple of group_size=4"):
        rl_config_for(ExperimentConfig(methods=["reflect_rl_grpo"], rl=RLConfig(num_envs=6)), tmp_path, 0,
                      "reflect_rl_grpo")


# ---- a run, killed and resumed ---------------------------------------------------------------------------
def _rows(path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "time" and not k.endswith("_s")}  # no timings
            for line in path.read_text().splitlines()]


def test_grpo_run_resumes_exactly(tmp_path):
    # 2 groups of 2 plays per iteration, the KL penalty on (track_kl off: kl_coef alone makes the reference).
    cfg = RLConfig(algorithm="grpo", group_size=2, num_envs=4, kl_coef=0.05, track_kl=False,
                   policy_model="tiny-test", reflection_model="tiny-test", reflection_tokens=4, iterations=2,
                   task_ids=EASY, checkpoint_interval=1, lr=1e-3, device="cpu", seed=5)
    seen: dict[str, list] = {"straight": [], "resumed": []}

    def record(name):
        return lambda it, episodes: seen[name].append((it, [(e.episode_id, e.task_id, e.ret) for e in episodes]))

    straight = train(cfg, tmp_path / "straight", on_episodes=record("straight"))
    train(cfg, tmp_path / "killed", stop_after=1, on_episodes=record("resumed"))
    assert len(_rows(tmp_path / "killed" / "metrics.jsonl")) == 1
    resumed = train(cfg, tmp_path / "killed", on_episodes=record("resumed"))
    assert seen["straight"] == seen["resumed"]  # the same episodes, none repeated or lost
    for it, eps in seen["straight"]:
        assert [e[0] for e in eps] == list(range(4 * it, 4 * it + 4))
        assert eps[0][1] == eps[1][1] and eps[2][1] == eps[3][1]  # a group plays one task
    a, b = _rows(tmp_path / "straight" / "metrics.jsonl"), _rows(tmp_path / "killed" / "metrics.jsonl")
    assert [r["step"] for r in b] == [1, 2] and [r["episodes"] for r in b] == [4, 8]
    for ra, rb in zip(a, b, strict=True):
        assert ra == pytest.approx(rb, rel=1e-4, abs=1e-6)
        assert {"adv_std", "zero_adv_groups", "kl_penalty"} <= set(ra)
        assert "replay_loss" not in ra and "value_loss" not in ra
    assert straight["return"] == pytest.approx(resumed["return"])
    from safetensors.torch import load_file

    sa = load_file(f"{straight['checkpoint']}/model.safetensors")
    sb = load_file(f"{resumed['checkpoint']}/model.safetensors")
    assert all(torch.allclose(sa[k], sb[k], atol=1e-5) for k in sa)
    assert all(torch.isfinite(v).all() for v in sa.values())
