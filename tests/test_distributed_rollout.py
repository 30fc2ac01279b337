"""Seeded rollouts without Ray: an episode plays the same whatever batch, environment slot or process it is
played in (the rollout of ``frugalft rl train``, a Ray worker's and a learner process's share are one
function), and broadcast weights land exactly in a worker's policy."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from frugalft.distributed.ray_rollout import split_evenly
from frugalft.models import LoraSettings
from frugalft.reflect.backends import load_trainable_state, trainable_state
from frugalft.reflect.rollout import EpisodeSpec, episode_generator
from frugalft.reflect.train import RLConfig, build_players, make_vec, play

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


CONFIG = RLConfig(policy_model="tiny-test", reflection_model="tiny-test", reflection_tokens=6, num_envs=4,
                  env_kwargs={"horizon": 5}, device="cpu", seed=3)


@pytest.fixture(scope="module")
def players():
    return build_players(CONFIG)


def _specs(first: int, n: int) -> list[EpisodeSpec]:
    tasks = make_vec(CONFIG, "train", 1).envs[0].unwrapped.task_ids("train", 2)[:n]  # full-mode taxi tasks
    return [EpisodeSpec(task_id=t, seed=100 + first + i, episode_id=first + i) for i, t in enumerate(tasks)]


def _play(vec, specs, players, seed):
    return play(players, replace(CONFIG, seed=seed), vec, specs)


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
    together = _play(make_vec(CONFIG, "train", 4), specs, players, seed=CONFIG.seed)
    torch.manual_seed(123)  # the global RNG plays no part
    halves = [_play(make_vec(CONFIG, "train", 2), part, players, seed=CONFIG.seed)
              for part in split_evenly(specs, 2)]
    alone = _play(make_vec(CONFIG, "train", 1), specs[2:3], players, seed=CONFIG.seed)
    # 4 episodes on 3 environments: the first to finish hands its slot to episode 4 mid-batch.
    refilled = _play(make_vec(CONFIG, "train", 3), specs, players, seed=CONFIG.seed)
    assert _key(halves[0] + halves[1]) == _key(together)
    assert _key(alone) == _key(together[2:3])
    assert _key(refilled) == _key(together)
    assert any(len(ep.steps) > 1 for ep in together)  # several steps, so the streams really advance
    assert all(s.reflection is not None for ep in together for s in ep.steps)
    other_seed = _play(make_vec(CONFIG, "train", 4), specs, players, seed=CONFIG.seed + 1)
    assert _key(other_seed) != _key(together)


def test_with_the_static_decoder_an_episode_does_not_depend_on_its_batch_either(players):
    # The static decoder (frugalft.reflect.decoding; the default on CUDA) draws one key per row per reflection
    # from the episode's generator and its token uniforms from a counter-based hash of that key.
    static = build_players(replace(CONFIG, reflection_decoder="static"))
    assert static.reflector.decoder == "static" and players.reflector.decoder == "loop"  # auto on CPU: loop
    specs = _specs(40, 4)
    together = _play(make_vec(CONFIG, "train", 4), specs, static, seed=CONFIG.seed)
    halves = [_play(make_vec(CONFIG, "train", 2), part, static, seed=CONFIG.seed)
              for part in split_evenly(specs, 2)]
    refilled = _play(make_vec(CONFIG, "train", 3), specs, static, seed=CONFIG.seed)
    assert _key(halves[0] + halves[1]) == _key(together) == _key(refilled)
    assert all(s.reflection is not None for ep in together for s in ep.steps)


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


def test_only_the_scale_out_layer_builds_ray_workers():
    # reflect does not import frugalft.distributed: its make_backend plays in this process, and asks for a
    # pool for ``workers: N``; the scale-out layer's make_backend chooses (no Ray started for ``workers: 0``).
    from frugalft.distributed import ray_rollout
    from frugalft.reflect import backends

    with pytest.raises(ValueError, match="ray_rollout.make_backend"):
        backends.make_backend(replace(CONFIG, workers=2))
    for make in (backends.make_backend, ray_rollout.make_backend):
        backend = make(CONFIG)
        assert isinstance(backend, backends.InProcessBackend) and backend.workers == 0
        backend.close()


def test_rl_train_command_sets_workers_and_ray_address(monkeypatch, tmp_path):
    import importlib

    from typer.testing import CliRunner

    from frugalft.cli import rl as rl_cli
    from frugalft.cli.rl import app
    from frugalft.distributed import ray_rollout

    rl_train = importlib.import_module("frugalft.reflect.train")  # the module (the package re-exports train)
    seen, made = [], []

    class FakeBackend:  # the command builds the backend (Ray pool) and hands it to train, then closes it
        workers = 0
        closed = False

        def __init__(self, cfg, dp=None):
            made.append(self)

        def close(self):
            self.closed = True

    monkeypatch.setattr(ray_rollout, "make_backend", FakeBackend)
    monkeypatch.setattr(rl_cli, "require", lambda *a, **k: None)  # no Ray needed: no actor starts
    monkeypatch.setattr(rl_train, "train", lambda cfg, out, resume=True, backend=None: seen.append(
        (cfg, out, backend)) or {"checkpoint": None})
    args = ["train", "--method", "rl", "--run-dir", str(tmp_path), "--set", "model=tiny-test"]
    res = CliRunner().invoke(app, [*args, "--workers", "3", "--ray-address", "ray://head:10001"])
    assert res.exit_code == 0, res.output
    cfg, out, backend = seen[-1]
    assert (cfg.workers, cfg.ray_address, cfg.policy_model) == (3, "ray://head:10001", "tiny-test")
    assert out == tmp_path / "seed-0" / "rl" / "rl"
    assert backend is made[-1] and backend.closed
    res = CliRunner().invoke(app, [*args, "--set", "rl.workers=2"])  # the config's value when no flag
    assert res.exit_code == 0 and seen[-1][0].workers == 2 and seen[-1][0].ray_address is None
    assert CliRunner().invoke(app, [*args, "--workers", "-1"]).exit_code == 2
