"""Each uncertainty score from the batched KV-cache loop equals a direct computation from full-sequence logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from frugalft.design.uncertainty import SCORES, score_prompts

PROMPTS = ["hello world", "the cat sat on the", "a", "", "Once upon a time there was a rather long prompt",
           "1 2 3 4"]


@pytest.fixture(scope="module")
def model():
    from frugalft.models import load_model

    lm, tok = load_model("tiny-test", device="cpu", seed=0)
    with torch.no_grad():  # sharpen the random model's distributions so margins and confidences are not ~0
        lm.transformer.ln_f.weight.mul_(40.0)
    return lm, tok


def _direct(lm, tok, prompt, generated):
    """Scores by the definitions, from one unpadded forward pass over prompt + answer, in float64."""
    ids = tok(prompt)["input_ids"] or [tok.eos_token_id]
    with torch.no_grad():
        logits = lm(torch.tensor([ids + generated])).logits[0].double()
    steps = logits[len(ids) - 1: len(ids) - 1 + len(generated)]
    logp = torch.log_softmax(steps, -1)
    p = logp.exp()
    assert logp.argmax(-1).tolist() == generated  # the loop decoded greedily
    ent = -(p * logp).sum(-1)
    top = p.topk(2, -1).values
    margin = top[:, 0] - top[:, 1]
    chosen = logp.max(-1).values
    t = len(generated)
    return {"mean_entropy": ent.mean(), "max_entropy": ent.max(), "least_confidence": 1 - chosen.sum().exp(),
            "least_confidence_norm": 1 - (chosen.sum() / t).exp(), "mean_margin": margin.mean(),
            "min_margin": margin.min(), "length": t}


def test_scores_match_direct_computation(model):
    lm, tok = model
    scores, tokens = score_prompts(lm, tok, PROMPTS, max_new_tokens=7, batch_size=4, chat=False,
                                   return_tokens=True)
    assert set(scores) == set(SCORES)
    for i, prompt in enumerate(PROMPTS):
        ref = _direct(lm, tok, prompt, tokens[i])
        for k in SCORES:
            assert scores[k][i] == pytest.approx(float(ref[k]), rel=1e-4, abs=1e-6), (k, prompt)
    spread = scores["min_margin"]
    assert spread.min() < 0.9 * spread.max()  # the sharpened model is not uniform: the test can fail


def test_batching_does_not_change_scores(model):
    lm, tok = model
    one = score_prompts(lm, tok, PROMPTS, max_new_tokens=5, batch_size=1, chat=False)
    many = score_prompts(lm, tok, PROMPTS, max_new_tokens=5, batch_size=6, chat=False)
    for k in SCORES:
        np.testing.assert_allclose(one[k], many[k], rtol=1e-4, atol=1e-6)


def test_stop_token_ends_the_answer(model):
    lm, tok = model
    _, tokens = score_prompts(lm, tok, ["hello world"], max_new_tokens=6, chat=False, return_tokens=True)
    first = tokens[0][0]
    lm.generation_config.eos_token_id = first  # make the first greedy token an end-of-sequence token
    try:
        scores, toks = score_prompts(lm, tok, ["hello world"], max_new_tokens=6, chat=False, return_tokens=True)
    finally:
        lm.generation_config.eos_token_id = tok.eos_token_id
    assert toks[0] == [first] and scores["length"][0] == 1
    ref = _direct(lm, tok, "hello world", [first])
    assert scores["min_margin"][0] == pytest.approx(float(ref["min_margin"]), rel=1e-4)


def test_bad_cap(model):
    with pytest.raises(ValueError, match="max_new_tokens"):
        score_prompts(*model, ["x"], max_new_tokens=0)


SHARED = ["The quick brown fox jumps over the lazy dog and then", "The quick brown fox jumps over the lazy cat",
          "The quick brown fox jumps over", "The quick brown fox jumps over the lazy dog, twice, and"]


def _check_against_direct(lm, tok, prompts, scores, tokens):
    for i, prompt in enumerate(prompts):
        ref = _direct(lm, tok, prompt, tokens[i])
        for k in SCORES:
            assert scores[k][i] == pytest.approx(float(ref[k]), rel=1e-4, abs=1e-6), (k, prompt)


def test_shared_prefix_and_middle_padding(model):
    """Rows sharing a prefix reuse its cache, with each row's own tokens left-padded after it."""
    from frugalft.design.uncertainty import _shared_prefix

    lm, tok = model
    ids = [tok(p)["input_ids"] for p in SHARED]
    assert _shared_prefix(ids) >= 5 and len({len(s) for s in ids}) == len(ids)  # the path under test is taken
    scores, tokens = score_prompts(lm, tok, SHARED, max_new_tokens=6, batch_size=4, chat=False, return_tokens=True)
    _check_against_direct(lm, tok, SHARED, scores, tokens)


def test_finished_rows_leave_the_batch(model):
    """A stop token mid-batch ends that row only; the rows still decoding keep exact scores."""
    lm, tok = model
    _, free = score_prompts(lm, tok, SHARED, max_new_tokens=6, batch_size=4, chat=False, return_tokens=True)
    # a token that some answer emits early and another never does: their rows end at different steps
    stop = next(t for row in free for t in row[1:3] if any(t not in other for other in free))
    lm.generation_config.eos_token_id = stop
    try:
        scores, toks = score_prompts(lm, tok, SHARED, max_new_tokens=6, batch_size=4, chat=False,
                                     return_tokens=True)
        one = score_prompts(lm, tok, SHARED, max_new_tokens=6, batch_size=1, chat=False)
    finally:
        lm.generation_config.eos_token_id = tok.eos_token_id
    lengths = scores["length"].tolist()
    assert min(lengths) < 6 and max(lengths) == 6  # some rows stopped, others ran to the cap
    for row, full in zip(toks, free, strict=True):
        cut = full.index(stop) + 1 if stop in full else len(full)
        assert row == full[:cut]
    _check_against_direct(lm, tok, SHARED, scores, toks)
    for k in SCORES:
        np.testing.assert_allclose(one[k], scores[k], rtol=1e-4, atol=1e-6)


def test_step_stats_match_definitions_and_survive_minus_inf():
    from frugalft.design.uncertainty import step_stats

    z = torch.randn(3, 50, generator=torch.Generator().manual_seed(0)) * 4
    z[1, 7] = -torch.inf  # a banned token: probability 0, must not turn the entropy into NaN
    z[2, 11] = z[2].max()  # a tie for the top: the margin is 0
    ent, lp1, margin, top = step_stats(z.clone())  # overwrites its argument
    logp = torch.log_softmax(z.double(), -1)
    p = logp.exp()
    ref_ent = -torch.where(p > 0, p * logp, torch.zeros((), dtype=torch.float64)).sum(-1)
    top2 = p.topk(2, -1).values
    torch.testing.assert_close(ent.double(), ref_ent, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(lp1.double(), logp.max(-1).values, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(margin.double(), top2[:, 0] - top2[:, 1], rtol=1e-5, atol=1e-6)
    assert top.tolist() == z.argmax(-1).tolist() and margin[2] == 0
