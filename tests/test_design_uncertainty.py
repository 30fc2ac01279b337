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
