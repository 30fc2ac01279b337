"""Seeded rollouts without Ray: an episode plays the same whatever batch or process it is played in, and
broadcast weights land exactly in a worker's policy."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from frugalft.distributed.ray_rollout import load_trainable_state, split_evenly, trainable_state
from frugalft.distributed.seeded_rollout import collect_seeded, episode_generator
from frugalft.models import LoraSettings
from frugalft.reflect.rollout import EpisodeSpec
from frugalft.reflect.train import RLConfig, build_players, make_vec

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


CONFIG = RLConfig(policy_model="tiny-test", reflection_model="tiny-test", reflection_tokens=6, num_envs=4,
                  env_kwargs={"horizon": 5}, device="cpu", seed=3)


@pytest.fixture(scope="module")
def players():
    return build_players(CONFIG)


def _specs(first: int, n: int) -> list[EpisodeSpec]:
    tasks = make_vec(CONFIG, "train", 1).envs[0].unwrapped.task_ids("train", 2)[:n]  # full-mode taxi tasks
    return [EpisodeSpec(task_id=t, seed=100 + first + i, episode_id=first + i) for i, t in enumerate(tasks)]


def _key(episodes):
    return [(ep.episode_id, ep.task_id, [(s.prompt_ids, s.labels, s.action, s.reward, s.reflection)
                                         for s in ep.steps]) for ep in episodes]


def test_split_evenly_keeps_order_and_every_item():
    assert split_evenly(list(range(7)), 3) == [[0, 1, 2], [3, 4], [5, 6]]
    assert split_evenly([1], 2) == [[1], []]


def test_episode_generators_are_stable_and_distinct():
    a = torch.rand(3, generator=episode_generator(0, 5))
    assert torch.equal(a, torch.rand(3, generator=episode_generator(0, 5)))
    assert not torch.equal(a, torch.rand(3, generator=episode_generator(0, 6)))
    assert not torch.equal(a, torch.rand(3, generator=episode_generator(1, 5)))


def test_an_episode_does_not_depend_on_its_batch(players):
    specs = _specs(40, 4)
    torch.manual_seed(0)
    together = collect_seeded(make_vec(CONFIG, "train", 4), specs, players, seed=CONFIG.seed)
    torch.manual_seed(123)  # the global RNG plays no part
    halves = [collect_seeded(make_vec(CONFIG, "train", 2), part, players, seed=CONFIG.seed)
              for part in split_evenly(specs, 2)]
    alone = collect_seeded(make_vec(CONFIG, "train", 1), specs[2:3], players, seed=CONFIG.seed)
    assert _key(halves[0] + halves[1]) == _key(together)
    assert _key(alone) == _key(together[2:3])
    assert any(len(ep.steps) > 1 for ep in together)  # several steps, so the streams really advance
    assert all(s.reflection is not None for ep in together for s in ep.steps)
    other_seed = collect_seeded(make_vec(CONFIG, "train", 4), specs, players, seed=CONFIG.seed + 1)
    assert _key(other_seed) != _key(together)


@pytest.mark.parametrize("finetune", ["full", "lora"])
def test_broadcast_weights_reproduce_the_learner(finetune):
    cfg = replace(CONFIG, finetune=finetune, lora=LoraSettings(r=4, alpha=8, dropout=0.0), reflection_model=None,
                  track_kl=False)
    learner, worker = build_players(cfg), build_players(cfg)
    with torch.no_grad():
        for p in learner.policy.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))  # as after some updates
    state = trainable_state(learner.policy)
    assert state and all(not v.requires_grad for v in state.values())
    if finetune == "lora":
        assert all("lora_" in k for k in state)  # only the adapters travel
    prompt = [[464, 3139, 286, 4881, 318]]
    valid = torch.ones((1, worker.policy.n_labels), dtype=torch.bool)
    with torch.no_grad():
        a, _ = learner.policy(prompt, valid)
        before, _ = worker.policy(prompt, valid)
        load_trainable_state(worker.policy, state)
        after, _ = worker.policy(prompt, valid)
    assert not torch.allclose(before, a)
    torch.testing.assert_close(after, a, atol=0, rtol=0)
    with pytest.raises(KeyError, match="lacks"):
        load_trainable_state(worker.policy, {"no.such.weight": torch.zeros(1)})
