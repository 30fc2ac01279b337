"""The label-head policy and the batched reflection decoder."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from frugalft.models import load_model
from frugalft.reflect.decoding import generate
from frugalft.reflect.policy import Policy, collate_left, head_token_ids, score_steps, valid_mask
from frugalft.reflect.prompts import LabelAlphabet
from frugalft.reflect.reflection import ReflectionError, Reflector, check_tokenizer_matches


@pytest.fixture(scope="module")
def lm_tok():
    lm, tok = load_model("tiny-test", device="cpu", seed=1)
    with torch.no_grad():  # a random init is nearly uniform; sharpen it so argmaxes and samples are informative
        for p in lm.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.3)
    return lm, tok


@pytest.fixture(scope="module")
def policy(lm_tok):
    lm, tok = lm_tok
    return Policy(lm, LabelAlphabet().check(tok), tok.pad_token_id)


def _prompts(tok):
    texts = ["# Task:\nGo.\n# Actions:\n0. a\n1. b\n# Action:", "hi", "The map shows a wall to the north # Action:"]
    return [tok.encode(t) for t in texts]


def test_label_head_never_samples_an_invalid_label(policy, lm_tok):
    _, tok = lm_tok
    prompts = _prompts(tok) * 40  # 120 rows: many draws from one forward per temperature
    free = torch.ones((len(prompts), policy.n_labels), dtype=torch.bool)
    with torch.no_grad():
        logits, _ = policy(prompts, free)
    favourite = logits.argmax(-1)
    # Each row offers a few labels and never the label the unrestricted head likes best.
    g = torch.Generator().manual_seed(0)
    rows = []
    for i in range(len(prompts)):
        choices = torch.randperm(policy.n_labels, generator=g)[: 2 + i % 5].tolist()
        rows.append([c for c in choices if c != int(favourite[i])])
    valid = valid_mask(rows, policy.n_labels)
    torch.manual_seed(0)
    for temperature in (0.5, 1.0, 20.0):
        act = policy.act(prompts, valid, temperature=temperature)
        assert valid[torch.arange(len(prompts)), act.label].all()
        if temperature == 20.0:  # hot sampling spreads over the offered labels: many distinct picks
            assert len({(i % 5, int(lb)) for i, lb in enumerate(act.label)}) > 40
    greedy = policy.act(prompts, valid, greedy=True)
    assert valid[torch.arange(len(prompts)), greedy.label].all()
    assert not (greedy.label == favourite).any()


def test_label_distribution_equals_the_lm_restricted_and_renormalised(policy, lm_tok):
    lm, tok = lm_tok
    prompt = _prompts(tok)[0]
    rows = [[3, 17, 200, 251]]
    act = policy.act([prompt], valid_mask(rows, policy.n_labels), temperature=1.0)
    with torch.no_grad():
        full = lm(torch.tensor([prompt])).logits[0, -1]
    label_ids = policy.label_head.label_ids[rows[0]]
    expected = torch.log_softmax(full[label_ids], -1)
    assert torch.allclose(act.logprobs[0, rows[0]], expected, atol=1e-5)
    p = expected.exp()
    assert act.entropy[0].item() == pytest.approx(float(-(p * expected).sum()), abs=1e-5)
    assert torch.isinf(act.logprobs[0, [0, 1, 2]]).all()


def test_logits_do_not_depend_on_left_padding(policy, lm_tok):
    _, tok = lm_tok
    prompts = _prompts(tok)
    valid = torch.ones((len(prompts), policy.n_labels), dtype=torch.bool)
    with torch.no_grad():
        batched, _ = policy(prompts, valid)
        alone = torch.cat([policy([p], valid[:1])[0] for p in prompts])
    assert torch.allclose(batched, alone, atol=1e-4)
    ids, mask, pos = collate_left([[5, 6, 7], [9]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 9]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert pos.tolist() == [[0, 1, 2], [0, 0, 0]]


def test_rescoring_reproduces_the_sampling_logprob(policy, lm_tok):
    _, tok = lm_tok
    prompts = _prompts(tok)
    rows = [[0, 1], [4, 9, 30], [100, 2]]
    torch.manual_seed(1)
    act = policy.act(prompts, valid_mask(rows, policy.n_labels), temperature=0.7)
    actions = [row.index(int(lb)) for row, lb in zip(rows, act.label, strict=True)]
    scores = score_steps(policy, prompts, rows, actions, temperature=0.7)
    assert torch.allclose(scores.logprob.detach(), act.logprob, atol=1e-5)
    assert scores.listed.shape == (3, 3) and torch.isinf(scores.listed[0, 2])


def test_batched_decoder_matches_transformers_generate(lm_tok):
    lm, tok = lm_tok
    prompts = _prompts(tok)
    ids, mask, _ = collate_left(prompts, tok.pad_token_id)
    mine = generate(lm, ids, mask, 6, 0.0, tok.eos_token_id, tok.pad_token_id)
    ref = lm.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False,
                      pad_token_id=tok.pad_token_id)[:, ids.shape[1]:]
    n = mine.shape[1]
    assert torch.equal(mine, ref[:, :n])
    for i, p in enumerate(prompts):  # batching changes nothing
        alone = generate(lm, torch.tensor([p]), torch.ones((1, len(p)), dtype=torch.long), 6, 0.0,
                         tok.eos_token_id, tok.pad_token_id)
        assert alone[0].tolist() == mine[i, : alone.shape[1]].tolist()


def test_reflector_cap_sampling_and_switch(lm_tok):
    lm, tok = lm_tok
    parts = [{"task": "Go.", "map": "T P"}, {"task": "Stay.", "map": "P T"}]
    r = Reflector(lm, tok, max_new_tokens=5, temperature=1.0)
    torch.manual_seed(0)
    a = r.reflect(parts)
    torch.manual_seed(0)
    assert r.reflect(parts) == a  # seeded sampling repeats
    assert all(len(tok.encode(t)) <= 6 for t in a)  # cap (decode/re-encode may merge or split one token)
    assert Reflector(lm, tok, enabled=False).reflect(parts) == [None, None]
    assert Reflector(None, None).reflect(parts) == [None, None]


def test_mismatched_tokenizer_is_a_clear_error(lm_tok):
    _, tok = lm_tok
    small = GPT2LMHeadModel(GPT2Config(vocab_size=1000, n_embd=16, n_layer=1, n_head=2))
    with pytest.raises(ReflectionError, match="50257 tokens but the model embeds only 1000"):
        check_tokenizer_matches(small, tok, "reflection model")
    with pytest.raises(ReflectionError, match="reflection model"):
        Reflector(small, tok)


def test_over_long_prompts_keep_their_end_as_the_warmup_does(policy, lm_tok):
    # A state longer than the model reads (AutoExplore's `cat` of a file of non-ASCII text) is cut from the
    # start, keeping "# Analyze:" / "# Action:" at the end, instead of stopping the run.
    lm, tok = lm_tok
    limit = lm.config.n_positions
    filler = " ".join(["wall"] * limit)
    a = {"task": "Go north.", "last_result": filler + " the end"}
    b = {"task": "Go south, then east.", "last_result": filler + " the end"}  # differs only where it is cut
    r = Reflector(lm, tok, max_new_tokens=4, temperature=0.0)
    ra, rb = r.reflect([a, b])
    assert ra == rb and isinstance(ra, str)

    long_prompt = tok.encode(filler + " # Action:")
    assert len(long_prompt) > limit
    free = torch.ones((1, policy.n_labels), dtype=torch.bool)
    with torch.no_grad():
        cut, _ = policy([long_prompt], free)
        tail, _ = policy([long_prompt[-limit:]], free)
    torch.testing.assert_close(cut, tail)


def _trained_accuracy(policy, batch, steps: int, lr: float) -> float:
    """Train ``policy`` on ``batch(16)`` for ``steps`` AdamW steps; its accuracy on a fresh ``batch(100)``."""
    opt = torch.optim.AdamW(policy.lm.parameters(), lr=lr)
    for _ in range(steps):
        loss = -score_steps(policy, *batch(16)).logprob.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    prompts, labels, targets = batch(100)
    with torch.no_grad():
        best = score_steps(policy, prompts, labels, targets).listed.argmax(-1).tolist()
    return sum(b == t for b, t in zip(best, targets, strict=True)) / len(targets)


# ---- the line head ---------------------------------------------------------------------------------------
def _listed_prompts(tok, alphabet, rng):
    """Policy prompts of frugalft's own format, lists of 2-5 actions under shuffled labels."""
    import random

    from frugalft.reflect.prompts import encode_policy_prompt

    rng = random.Random(rng)
    prompts, labels = [], []
    for i in range(6):
        actions = [f"go to cabinet {k}" for k in rng.sample(range(1, 9), 2 + i % 4)]
        row = alphabet.pick(len(actions), rng)
        prompts.append(encode_policy_prompt(tok, {"task": "find the mug" + " quickly" * i}, actions[0], actions,
                                            alphabet.strings(row)))
        labels.append(row)
    return prompts, labels


def test_line_head_is_the_last_state_against_each_listed_lines_end(lm_tok):
    from frugalft.reflect.policy import trunk_hidden_positions

    lm, tok = lm_tok
    alphabet = LabelAlphabet(shuffle=True)
    ids = head_token_ids(tok, "line")
    nl = ids["line_end_id"]
    policy = Policy(lm, alphabet.check(tok), tok.pad_token_id, head="line", **ids)
    prompts, labels = _listed_prompts(tok, alphabet, 0)
    with torch.no_grad():
        logits, _ = policy(prompts, valid_mask(labels, len(alphabet)), 2.0, labels)
        for p, row, got in zip(prompts, labels, logits, strict=True):
            # Computed another way: the prompt alone (no padding), its line ends found from its text.
            t = torch.tensor([p])
            states = trunk_hidden_positions(lm, t, torch.ones_like(t), torch.arange(len(p))[None])[0]
            text_lines = tok.decode(p).split("\n")
            first = text_lines.index("# Actions:") + 1
            assert [line.split(". ")[0] for line in text_lines[first:first + len(row)]] == alphabet.strings(row)
            ends = [j for j, x in enumerate(p) if x == nl][first:first + len(row)]  # text line k ends at break k
            want = states[ends] @ states[-1] / states.shape[-1] ** 0.5 / 2.0
            assert torch.allclose(got[row], want, atol=1e-4)
            assert torch.isinf(got).sum() == len(alphabet) - len(row)  # -inf off the list
    # rescoring stored steps reads the same numbers
    scores = score_steps(policy, prompts, labels, [0] * len(prompts), temperature=2.0)
    assert torch.allclose(scores.listed[:, 0], torch.log_softmax(logits, -1)[range(len(prompts)), [r[0] for r in labels]])


def test_line_head_needs_labels_and_a_policy_prompt(lm_tok):
    from frugalft.reflect.policy import head_token_ids

    lm, tok = lm_tok
    alphabet = LabelAlphabet()
    policy = Policy(lm, alphabet.check(tok), tok.pad_token_id, head="line", **head_token_ids(tok, "line"))
    valid = valid_mask([[0, 1, 2]], len(alphabet))
    with pytest.raises(ValueError, match="labels in list order"):
        policy([tok.encode("# Actions:\n0. a\n1. b\n2. c\n# Action:")], valid)
    with pytest.raises(ValueError, match="3 actions"):
        policy([tok.encode("no list here # Action:")], valid, labels=[[0, 1, 2]])
    for head in ("line", "text"):
        with pytest.raises(ValueError, match="line_end_id"):
            Policy(lm, alphabet.check(tok), tok.pad_token_id, head=head)
    with pytest.raises(ValueError, match="unknown policy head"):
        Policy(lm, alphabet.check(tok), tok.pad_token_id, head="pointer")


def test_list_token_ids_refuse_a_tokenizer_that_merges_line_breaks():
    from frugalft.reflect.prompts import build_policy_prompt, list_token_ids

    class MergesBreaks:  # "\n#" one token, as a BPE with that merge would make it
        def encode(self, text, add_special_tokens=False):
            out, i = [], 0
            while i < len(text):
                merged = text.startswith("\n#", i)
                out.append(1 if merged else ord(text[i]) + 2)
                i += 2 if merged else 1
            return out

    with pytest.raises(ValueError, match="line break"):
        list_token_ids(MergesBreaks())
    with pytest.raises(ValueError, match="one line each"):
        build_policy_prompt({"task": "t"}, None, ["go\nnorth"], ["0"])


def test_line_head_learns_which_line_to_pick_under_shuffled_labels():
    """One line of five says "open", the others "look"; labels and order shuffled. The line head learns to pick
    it from scratch in 40 steps (a wrong line-to-label mapping would leave it at chance, 0.2)."""
    import random

    from frugalft.models import load_model
    from frugalft.reflect.prompts import encode_policy_prompt

    torch.manual_seed(0)
    _, tok = load_model("tiny-env", device="cpu", seed=0)
    lm = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=1, n_head=2, n_positions=128))
    alphabet = LabelAlphabet(shuffle=True)
    policy = Policy(lm, alphabet.check(tok), tok.pad_token_id, head="line", **head_token_ids(tok, "line"))
    rng = random.Random(0)

    def batch(n):
        prompts, labels, targets = [], [], []
        for _ in range(n):
            target, row = rng.randrange(5), alphabet.pick(5, rng)
            actions = ["open drawer 1" if k == target else f"look at shelf {k}" for k in range(5)]
            prompts.append(encode_policy_prompt(tok, {"task": "open it"}, None, actions, alphabet.strings(row)))
            labels.append(row)
            targets.append(target)
        return prompts, labels, targets

    assert _trained_accuracy(policy, batch, steps=40, lr=1e-2) > 0.95


# ---- the text head ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["tiny-test", "tiny-env"])
def test_text_head_is_each_actions_likelihood_after_the_prompt(model):
    """Against another computation: each (prompt + action line) sequence alone through the whole LM, no padding,
    no cache, the action's tokens tokenised from its text."""
    lm, tok = load_model(model, device="cpu", seed=3)
    lm.eval()
    alphabet = LabelAlphabet(shuffle=True)
    policy = Policy(lm, alphabet.check(tok), tok.pad_token_id, head="text", **head_token_ids(tok, "text"))
    prompts, labels = _listed_prompts(tok, alphabet, 1)
    with torch.no_grad():
        logits, _ = policy(prompts, valid_mask(labels, len(alphabet)), 0.5, labels)
        for p, row, got in zip(prompts, labels, logits, strict=True):
            text = tok.decode(p)
            actions = [line.split(". ", 1)[1] for line in text.split("\n") if line.startswith(
                tuple(f"{lb}. " for lb in alphabet.strings(row)))]
            assert len(actions) == len(row)
            want = []
            for action in actions:
                cont = tok.encode(" " + action + "\n", add_special_tokens=False)
                logp = torch.log_softmax(lm(torch.tensor([p + cont])).logits[0].float(), -1)
                want.append(sum(float(logp[len(p) - 1 + t, c]) for t, c in enumerate(cont)) / 0.5)
            assert torch.allclose(got[row], torch.tensor(want), atol=1e-3)
            assert torch.isinf(got).sum() == len(alphabet) - len(row)
        alone, _ = policy(prompts[:1], valid_mask(labels[:1], len(alphabet)), 0.5, labels[:1])
        assert torch.allclose(alone[0][labels[0]], logits[0][labels[0]], atol=1e-4)  # not the batch's padding
    scores = score_steps(policy, prompts, labels, [1] * len(prompts))  # rescoring: the same numbers, with grads
    assert scores.logprob.requires_grad
    assert torch.allclose(scores.listed[:, 1], torch.log_softmax(logits * 0.5, -1)[range(len(prompts)),
                                                                                   [r[1] for r in labels]], atol=1e-4)


def test_text_head_learns_to_copy_the_name_its_reflection_wrote():
    """The reflection names one of four listed places (single-token names), the target is that action. A
    2-layer model from scratch learns it with the text head (the label and line heads stay at chance on this
    task for 3,000 steps: docs/results.md, ALFWorld)."""
    import random

    from frugalft.reflect.prompts import encode_policy_prompt

    torch.manual_seed(0)
    _, tok = load_model("tiny-env", device="cpu", seed=0)
    lm = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=64, n_layer=2, n_head=4, n_positions=128))
    alphabet = LabelAlphabet()
    policy = Policy(lm, alphabet.check(tok), tok.pad_token_id, head="text", **head_token_ids(tok, "text"))
    places = [w[1:] for w in sorted(tok.get_vocab()) if w.startswith("Ġ") and w[1:].isalpha() and len(w) >= 5][:16]
    rng = random.Random(0)

    def batch(n):
        prompts, labels, targets = [], [], []
        for _ in range(n):
            listed, target = rng.sample(places, 4), rng.randrange(4)
            prompts.append(encode_policy_prompt(tok, {}, f"go to {listed[target]}", [f"go to {p}" for p in listed],
                                                alphabet.strings(range(4))))
            labels.append(list(range(4)))
            targets.append(target)
        return prompts, labels, targets

    assert _trained_accuracy(policy, batch, steps=150, lr=1e-3) > 0.9  # chance: 0.25
