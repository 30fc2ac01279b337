"""Ray on a local 2-CPU cluster (one ``ray.init`` for the module): sharded pool scoring equals the
single-process path; ``frugalft rl train``'s loop on a pool of 2 rollout workers gives the ``workers: 0``
iterations; a killed worker is replaced with no episode lost or duplicated.

Scoring runs first: the rollout actors hold both CPUs while they live.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

ray = pytest.importorskip("ray")

from frugalft.design import pool_from_rows  # noqa: E402
from frugalft.distributed.ray_rollout import RolloutPool, make_backend  # noqa: E402
from frugalft.reflect.train import RLConfig, build_players, train  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    # No runtime_env: workers Ray prestarts at init then serve the tasks and actors (they inherit this
    # process's environment, HF_HUB_OFFLINE included; Ray sets OMP_NUM_THREADS to each task's CPUs).
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield
    ray.shutdown()


# ---- pool scoring ----------------------------------------------------------------------------------------
def _pool():
    words = ["apple", "river", "quantum", "violin", "desert", "matrix", "harbor", "pixel", "glacier", "lantern"]
    rows = [{"id": f"p{i}", "prompt": f"Tell me about the {w} and why it matters" + " really" * (i % 4)}
            for i, w in enumerate(words)]
    return pool_from_rows(rows, "test-pool")


def test_sharded_scoring_equals_unsharded_and_fills_the_same_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FRUGALFT_CACHE", str(tmp_path))
    from frugalft.design.features import embeddings
    from frugalft.design.uncertainty import SCORES, pool_uncertainty
    from frugalft.distributed.ray_scoring import distributed_embeddings, distributed_uncertainty, shard_bounds

    pool = _pool()
    assert shard_bounds(10, 3) == [(0, 4), (4, 7), (7, 10)]
    ref_unc = pool_uncertainty(pool, "tiny-test", max_new_tokens=4, batch_size=4, cache=False, device="cpu")
    ref_emb = embeddings(pool, "lm", model="tiny-test", cache=False, batch_size=4, device="cpu")

    unc = distributed_uncertainty(pool, "tiny-test", workers=2, max_new_tokens=4, batch_size=4, device="cpu")
    emb = distributed_embeddings(pool, "lm", model="tiny-test", workers=2, batch_size=4, device="cpu")
    for k in SCORES:
        np.testing.assert_allclose(unc[k], ref_unc[k], rtol=1e-5, atol=1e-6, err_msg=k)
    assert unc["length"].tolist() == ref_unc["length"].tolist()  # same greedy answers, token for token
    np.testing.assert_allclose(emb, ref_emb, rtol=1e-5, atol=1e-6)

    # The single-process functions now read what the shards wrote (no model is loaded again).
    import frugalft.models

    monkeypatch.setattr(frugalft.models, "load_model", lambda *a, **k: pytest.fail("recomputed instead of cached"))
    cached = pool_uncertainty(pool, "tiny-test", max_new_tokens=4, batch_size=4, cache=True)
    assert all(np.array_equal(cached[k], unc[k]) for k in SCORES)
    assert np.array_equal(embeddings(pool, "lm", model="tiny-test", cache=True), emb)


# ---- Reflect-RL rollouts -----------------------------------------------------------------------------------
CONFIG = RLConfig(policy_model="tiny-test", reflection_model="tiny-test", reflection_tokens=4, iterations=2,
                  num_envs=4, env_kwargs={"horizon": 4}, levels=[0], max_tasks_per_level=8, checkpoint_interval=100,
                  device="cpu")


def _run(tmp, workers, backend=None):
    players = build_players(CONFIG)
    batches = []
    cfg = replace(CONFIG, workers=workers)
    own = backend is None and workers > 0  # the caller builds the Ray pool (as the CLI does) and closes it
    backend = make_backend(cfg) if own else backend
    try:
        out = train(cfg, tmp, resume=False, players=players, backend=backend,
                    on_episodes=lambda it, eps: batches.append(eps))
    finally:
        if own:
            backend.close()
    rows = [json.loads(line) for line in (tmp / "metrics.jsonl").read_text().splitlines()]
    return out, batches, players.policy.state_dict(), rows


def _trajectories(batches):
    return [[(ep.episode_id, ep.task_id, [(s.prompt_ids, s.labels, s.action, s.reward, s.reflection)
                                          for s in ep.steps], ep.success) for ep in b] for b in batches]


def test_workers_zero_is_the_plain_loop(single_process, tmp_path):
    # ``train`` without a backend and ``workers: 0`` plays in this process: no Ray actor, every episode once.
    _, batches, _, rows = single_process
    assert [[ep.episode_id for ep in b] for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert all(r["rollout_workers"] == 0 and r["processes"] == 1 for r in rows)


@pytest.fixture(scope="module")
def single_process(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("rl-single"), workers=0)


def _cpus_free() -> float:
    import time

    for _ in range(50):  # a killed actor's CPU comes back asynchronously
        if ray.available_resources().get("CPU", 0) == 2:
            break
        time.sleep(0.1)
    return ray.available_resources().get("CPU", 0)


@pytest.mark.slow  # ~20-30 s: two fresh actor processes import torch and build their models
def test_two_ray_workers_give_the_single_process_iterations(single_process, tmp_path):
    # ``workers: 2``: ``make_backend`` starts two rollout actors on the local cluster, ``train`` plays on them.
    # The learner broadcasts its weights every iteration, so iteration 2's episodes (played by the workers
    # with the weights after update 1) match only if the broadcast and the update are right too.
    out1, batches1, weights1, rows1 = single_process
    out2, batches2, weights2, rows2 = _run(tmp_path, workers=2)
    assert _cpus_free() == 2  # the run's actors are gone
    assert len(batches2) == 2 and [len(b) for b in batches2] == [4, 4]
    assert _trajectories(batches2) == _trajectories(batches1)  # same episodes, token ids, actions, rewards
    for b1, b2 in zip(batches1, batches2, strict=True):
        lp1 = [s.logprob for ep in b1 for s in ep.steps]
        lp2 = [s.logprob for ep in b2 for s in ep.steps]
        np.testing.assert_allclose(lp2, lp1, atol=1e-5)
    for k in weights1:  # same update on the same ordered steps
        torch.testing.assert_close(weights2[k], weights1[k], atol=1e-6, rtol=0, msg=k)
    for r1, r2 in zip(rows1, rows2, strict=True):
        assert r2["rollout_workers"] == 2 and r1["rollout_workers"] == 0
        for k in ("return", "success", "episode_length", "episodes"):
            assert r2[k] == r1[k], k
        assert r2["loss"] == pytest.approx(r1["loss"], abs=1e-6)


@pytest.mark.slow  # ~30 s: two actors, then a replacement, start from scratch
def test_killed_worker_is_replaced_and_its_episodes_rerun_once(single_process, tmp_path):
    _, batches1, weights1, rows1 = single_process
    killed, replaced = [], []

    def kill_worker_1(iteration, p):
        if iteration == 1:  # mid-iteration: both shares are in flight
            killed.append(p.actors[1])
            ray.kill(p.actors[1])
            replaced.append(p)

    # The caller makes the backend (as the CLI does) and closes it; ``train`` only plays on it.
    pool = make_backend(replace(CONFIG, workers=2))
    assert isinstance(pool, RolloutPool)
    pool.on_dispatch = kill_worker_1
    try:
        _, batches2, weights2, rows2 = _run(tmp_path, workers=2, backend=pool)
    finally:
        pool.close()
    assert _cpus_free() == 2
    assert killed and replaced[0].total_restarts == 1
    assert [r["worker_restarts"] for r in rows2] == [0, 1]
    assert [r["rerun_episodes"] for r in rows2] == [0, 2]  # worker 1's share: episodes 6 and 7
    ids = [ep.episode_id for b in batches2 for ep in b]
    assert ids == list(range(8))  # nothing lost, nothing twice
    assert _trajectories(batches2) == _trajectories(batches1)
    for k in weights1:
        torch.testing.assert_close(weights2[k], weights1[k], atol=1e-6, rtol=0, msg=k)
    log = (tmp_path / "run.log").read_text()
    assert "rollout worker 1 died" in log and "re-running its 2 episodes (ids 6..7)" in log
