"""The Reflect-RL learner under ``accelerate launch`` with 2 CPU processes (gloo): each process plays half of
the batch and scores half of its steps, gradients are summed over processes, and the one update equals the
single-process update on the same episodes. Only process 0 writes the run directory."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from frugalft.config import dump_yaml
from frugalft.parallel import SINGLE, share
from frugalft.reflect.train import RLConfig, train
from two_processes import launch_two_cpu_processes

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

# One iteration of 4 episodes (seed 5: 1, 2, 4 and 1 steps). REINFORCE: one optimizer step accumulated over
# minibatches of 3 steps, whose boundaries differ between 1 and 2 processes (the sum must not depend on them).
# PPO: one epoch, one minibatch = one optimizer step, its steps split over the processes.
CONFIG = RLConfig(policy_model="tiny-test", reflection_model="tiny-test", reflection_tokens=4, iterations=1,
                  num_envs=4, env_kwargs={"horizon": 4}, levels=[0], max_tasks_per_level=8, minibatch=3, lr=1e-3,
                  ppo_epochs=1, checkpoint_interval=100, device="cpu", seed=5)


def test_shares_cover_every_item_once_in_order():
    assert [list(share(7, r, 3)) for r in range(3)] == [[0, 1, 2], [3, 4], [5, 6]]
    assert [list(share(1, r, 2)) for r in range(2)] == [[0], []]
    assert SINGLE.mine([1, 2, 3]) == [1, 2, 3] and SINGLE.gather([4]) == [4] and SINGLE.sum([1.5]) == [1.5]


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    latest = (run / "checkpoints" / "LATEST").read_text().strip()
    return load_file(str(run / "checkpoints" / latest / "model.safetensors"))


@pytest.mark.slow  # ~30-50 s each: the launcher and two processes each import torch and transformers
@pytest.mark.parametrize("algorithm", ["reinforce", "ppo"])
def test_two_process_learner_matches_one_process_update(tmp_path, algorithm):
    cfg = replace(CONFIG, algorithm=algorithm, minibatch=3 if algorithm == "reinforce" else 64)
    yaml = tmp_path / "rl.yaml"
    yaml.write_text(dump_yaml(cfg))
    stdout = launch_two_cpu_processes(
        ["frugalft.cli.main", "scale", "rl-train", "-c", str(yaml), "--workers", "0", "--run-dir", str(tmp_path / "two")],
        lambda: train(cfg, tmp_path / "one", resume=False))
    assert "2 learner process(es)" in stdout

    one, two = _rows(tmp_path / "one"), _rows(tmp_path / "two")
    assert len(two) == 1  # only process 0 logged
    assert one[0]["processes"] == 1 and two[0]["processes"] == 2
    for k in ("return", "success", "episode_length", "episodes"):  # the same episodes, gathered from 2 halves
        assert two[0][k] == one[0][k], k
    assert one[0]["episode_length"] == 2.0  # 8 steps: both processes play and score several
    assert two[0]["loss"] == pytest.approx(one[0]["loss"], abs=1e-6)
    # The gradient before clipping: Adam's step barely depends on the gradient's scale, this norm does (a
    # missing all-reduce or a wrong 1/N weighting changes it).
    assert two[0]["grad_norm"] == pytest.approx(one[0]["grad_norm"], rel=1e-5)

    from frugalft.models import load_model

    w0 = load_model("tiny-test", device="cpu", seed=cfg.seed)[0].state_dict()
    w1, w2 = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    assert w1.keys() == w2.keys() and set(w1) <= set(w0)
    update = sum(float(((w1[k] - w0[k]).double() ** 2).sum()) for k in w1) ** 0.5
    diff = sum(float(((w2[k] - w1[k]).double() ** 2).sum()) for k in w1) ** 0.5
    assert update > 0.1  # the step moved the weights (lr 1e-3 on each of many elements)
    # One Adam step from the same gradient, summed in another order: Adam divides by |g|, so float noise in
    # a near-zero gradient element moves that element by up to a few % of lr; the step as a whole agrees.
    assert diff / update < 1e-4
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], atol=5e-5, rtol=0, msg=k)
