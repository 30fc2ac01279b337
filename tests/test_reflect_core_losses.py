"""REINFORCE and PPO losses equal a hand computation on a 2-step episode; replay and accumulation behave."""

from __future__ import annotations

import copy
import math
import random

import pytest
import torch

from frugalft.models import load_model
from frugalft.reflect.policy import Policy
from frugalft.reflect.ppo import exact_kl, gae, ppo_loss
from frugalft.reflect.prompts import LabelAlphabet
from frugalft.reflect.reinforce import (
    SuccessReplay,
    flatten,
    policy_gradient_step,
    reinforce_loss,
    returns_to_go,
)
from frugalft.reflect.rollout import Episode, Step

# A 2-step episode: rewards -0.05 then +0.95 (a Taxi move, then the pickup), log-probs of the two choices.
R1, R2 = -0.05, 0.95
L1, L2 = math.log(0.4), math.log(0.7)


def test_returns_to_go_undiscounted_and_discounted():
    assert returns_to_go([R1, R2]) == pytest.approx([R1 + R2, R2])
    assert returns_to_go([1.0, 2.0, 3.0], gamma=0.5) == pytest.approx([1 + 0.5 * (2 + 0.5 * 3), 2 + 1.5, 3.0])


def test_reinforce_loss_and_gradient_by_hand():
    logprob = torch.tensor([L1, L2], requires_grad=True)
    returns = torch.tensor(returns_to_go([R1, R2]))
    loss = reinforce_loss(logprob, returns)
    assert loss.item() == pytest.approx(-((R1 + R2) * L1 + R2 * L2) / 2)
    loss.backward()
    assert logprob.grad.tolist() == pytest.approx([-(R1 + R2) / 2, -R2 / 2])
    # With a baseline b and an entropy bonus c*H.
    h = torch.tensor([1.2, 0.3])
    got = reinforce_loss(torch.tensor([L1, L2]), returns, baseline=0.5, entropy=h, entropy_coef=0.1)
    assert got.item() == pytest.approx(-((R1 + R2 - 0.5) * L1 + (R2 - 0.5) * L2) / 2 - 0.1 * 0.75)


def test_gae_by_hand():
    v1, v2, gamma, lam = 0.2, 0.6, 0.9, 0.8
    adv, ret = gae([R1, R2], [v1, v2], gamma, lam)
    d2 = R2 + 0.0 - v2  # the episode ends after step 2: no bootstrap
    d1 = R1 + gamma * v2 - v1
    assert adv == pytest.approx([d1 + gamma * lam * d2, d2])
    assert ret == pytest.approx([d1 + gamma * lam * d2 + v1, d2 + v2])
    # lam = 1, gamma = 1: advantages are returns-to-go minus values.
    adv1, _ = gae([R1, R2], [v1, v2], 1.0, 1.0)
    assert adv1 == pytest.approx([R1 + R2 - v1, R2 - v2])


def test_ppo_loss_by_hand_with_one_clipped_ratio():
    old = torch.tensor([L1, L2])
    new = torch.tensor([L1 + 0.5, L2 - 0.01])  # ratio e^0.5 = 1.65 (clipped at 1.1), e^-0.01 (inside)
    adv = torch.tensor([1.0, -2.0])
    value, returns = torch.tensor([0.1, 0.4]), torch.tensor([0.9, 0.95])
    kl = torch.tensor([0.02, 0.04])
    clip, vf, kc = 0.1, 0.5, 0.05
    loss, parts = ppo_loss(new, old, adv, value, returns, kl, clip, vf, kc)
    r1, r2 = math.exp(0.5), math.exp(-0.01)
    s1 = min(r1 * 1.0, 1.1 * 1.0)
    s2 = min(r2 * -2.0, max(min(r2, 1.1), 0.9) * -2.0)
    policy_loss = -(s1 + s2) / 2
    value_loss = 0.5 * ((0.1 - 0.9) ** 2 + (0.4 - 0.95) ** 2) / 2
    assert parts["policy_loss"].item() == pytest.approx(policy_loss)
    assert parts["value_loss"].item() == pytest.approx(value_loss)
    assert loss.item() == pytest.approx(policy_loss + vf * value_loss + kc * 0.03)
    assert parts["clipfrac"].item() == pytest.approx(0.5)


def test_exact_kl_matches_torch_distributions():
    p = torch.log_softmax(torch.tensor([[1.0, 0.5, -1.0, float("-inf")]]), -1)
    q = torch.log_softmax(torch.tensor([[0.2, 0.1, 0.3, float("-inf")]]), -1)
    ref = torch.distributions.kl_divergence(torch.distributions.Categorical(logits=p[:, :3]),
                                            torch.distributions.Categorical(logits=q[:, :3]))
    assert exact_kl(p, q).item() == pytest.approx(ref.item(), abs=1e-6)
    assert exact_kl(p, p).item() == pytest.approx(0.0, abs=1e-7)


def _episode(eid: int, success: bool, rewards=(R1, R2)) -> Episode:
    steps = [Step(prompt_ids=[1, 2, 3 + k], labels=[0, 1, 2], actions=["a", "b", "c"], action=k % 3,
                  logprob=-1.0, reward=r) for k, r in enumerate(rewards)]
    return Episode(env_index=0, episode_id=eid, task_id=f"t{eid}", level=0, steps=steps, success=success)


def test_success_replay_keeps_successes_fifo_and_round_trips():
    buf = SuccessReplay(capacity=3)
    buf.add([_episode(i, success=i % 2 == 0) for i in range(10)])  # successes 0, 2, 4, 6, 8
    assert [e.episode_id for e in buf.episodes] == [4, 6, 8]
    again = SuccessReplay(capacity=3)
    again.load(buf.state())
    assert [e.to_dict() for e in again.episodes] == [e.to_dict() for e in buf.episodes]
    assert len(buf.sample(2, random.Random(0))) == 2 and len(buf.sample(9, random.Random(0))) == 3
    buf.clear()
    assert len(buf) == 0


def test_gradient_accumulation_equals_one_big_batch():
    """Minibatching is memory only: the update with chunks of 1 equals the update on all steps at once."""
    lm, tok = load_model("tiny-test", device="cpu", seed=0)
    ids = LabelAlphabet(("0", "1", "2")).check(tok)
    a = Policy(lm, ids, tok.pad_token_id)
    b = copy.deepcopy(a)
    lm = copy.deepcopy(lm)  # the weights before the update
    eps = [_episode(0, True), _episode(1, False, rewards=(-0.05, -0.05, -0.5))]
    steps, rets = flatten(eps)
    assert rets == pytest.approx([0.9, 0.95, -0.6, -0.55, -0.5])
    results = []
    for pol, mb in ((a, 32), (b, 1)):
        # SGD: its step is linear in the gradient (Adam's first step is ~lr*sign(g), which hides differences).
        opt = torch.optim.SGD([p for p in pol.parameters() if p.requires_grad], lr=1.0)
        results.append(policy_gradient_step(pol, opt, steps, rets, 1.0, max_grad_norm=1e9, minibatch=mb))
    assert results[0]["loss"] == pytest.approx(results[1]["loss"], rel=1e-5)
    assert results[0]["grad_norm"] == pytest.approx(results[1]["grad_norm"], rel=1e-4)
    moved = 0.0
    for pa, pb, p0 in zip(a.parameters(), b.parameters(), lm.parameters(), strict=True):
        assert torch.allclose(pa, pb, atol=1e-6)
        moved = max(moved, float((pa - p0).detach().abs().max()))
    assert moved > 1e-4  # the step did change the weights


def test_the_update_under_bf16_autocast_is_the_float32_update_to_bf16_precision():
    """``rl.update_autocast``: the same update rule, its matmuls in bf16 (so not bit-equal), the weights float32,
    and the model's attention back to its own implementation afterwards (rollouts run in float32 with it)."""
    from frugalft.models.precision import training_attention
    from frugalft.parallel import SINGLE
    from frugalft.reflect.players import RLConfig
    from frugalft.reflect.train import update_rule

    lm, tok = load_model("tiny-test", device="cpu", seed=0)
    ids = LabelAlphabet(("0", "1", "2")).check(tok)
    before = lm.config._attn_implementation
    assert before != "eager"  # else the switch below would prove nothing
    with training_attention(lm, "bf16"):
        assert lm.config._attn_implementation == "eager"
    with training_attention(lm, "off"):
        assert lm.config._attn_implementation == before
    assert lm.config._attn_implementation == before
    eps = [_episode(0, True), _episode(1, False, rewards=(-0.05, -0.05, -0.5))]
    out = {}
    for choice in ("off", "bf16"):
        pol = Policy(copy.deepcopy(lm), ids, tok.pad_token_id)
        opt = torch.optim.SGD([p for p in pol.parameters() if p.requires_grad], lr=1.0)
        rule = update_rule(RLConfig(update_autocast=choice, replay_capacity=0, max_grad_norm=1e9), None, SINGLE)
        out[choice] = rule(pol, opt, eps, random.Random(0))
        assert pol.lm.config._attn_implementation == before
        assert all(p.dtype == torch.float32 for p in pol.parameters())
    assert out["bf16"]["loss"] != out["off"]["loss"]  # autocast did run
    assert out["bf16"]["loss"] == pytest.approx(out["off"]["loss"], rel=2e-2)
    assert out["bf16"]["grad_norm"] == pytest.approx(out["off"]["grad_norm"], rel=5e-2)
