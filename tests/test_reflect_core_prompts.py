"""Reflect-RL prompts, label alphabet and token encodings are exact."""

from __future__ import annotations

import random

import pytest

from frugalft.models import LabelError
from frugalft.models.tiny import gpt2_tokenizer
from frugalft.reflect.prompts import (
    DEFAULT_LABELS,
    LabelAlphabet,
    build_policy_prompt,
    build_reflection_prompt,
    encode_policy_example,
    encode_reflection_example,
)

PARTS = {"task": "Pick up the passenger.", "map": "+---+\n|T P|\n+---+", "last_result": "(start)"}
STATE = "# Task:\nPick up the passenger.\n# Map:\n+---+\n|T P|\n+---+\n# Last result:\n(start)"


@pytest.fixture(scope="module")
def tok():
    return gpt2_tokenizer()


def test_reflection_prompt_is_state_then_analyze():
    assert build_reflection_prompt(PARTS) == STATE + "\n# Analyze:\n"


def test_policy_prompt_with_and_without_reflection():
    with_r = build_policy_prompt(PARTS, " Go east. ", ["south", "east"], ["q", "17"])
    assert with_r == STATE + "\n# Reflection:\nGo east.\n# Actions:\nq. south\n17. east\n# Action:"
    without = build_policy_prompt(PARTS, None, ["south", "east"], ["0", "1"])
    assert without == STATE + "\n# Actions:\n0. south\n1. east\n# Action:"
    with pytest.raises(ValueError, match="2 actions but 1 labels"):
        build_policy_prompt(PARTS, None, ["south", "east"], ["0"])


def test_authors_alphabet_is_single_gpt2_tokens(tok):
    alphabet = LabelAlphabet()
    ids = alphabet.check(tok)
    assert len(DEFAULT_LABELS) == 252 and len(set(ids)) == 252
    assert ids[DEFAULT_LABELS.index("199")] == tok.encode(" 199")[0]
    assert ids[DEFAULT_LABELS.index("Z")] == tok.encode(" Z")[0]


def test_bad_labels_are_named(tok):
    with pytest.raises(LabelError) as err:
        LabelAlphabet(("0", "1", "zebra crossing", "@@##!!")).check(tok)
    assert "zebra crossing" in str(err.value) and "@@##!!" in str(err.value)
    assert "'0'" not in str(err.value)


def test_label_picking_plain_and_shuffled():
    plain = LabelAlphabet()
    assert plain.pick(6) == [0, 1, 2, 3, 4, 5]
    shuffled = LabelAlphabet(shuffle=True)
    a = shuffled.pick(6, random.Random(3))
    assert a == shuffled.pick(6, random.Random(3))  # seeded: repeats
    assert len(set(a)) == 6 and all(0 <= i < 252 for i in a)
    draws = {tuple(shuffled.pick(6, random.Random(s))) for s in range(20)}
    assert len(draws) == 20  # a fresh subset per step
    with pytest.raises(LabelError, match="7 actions but only 3 labels"):
        LabelAlphabet(("a", "b", "c")).pick(7)


def test_reflection_example_ids_and_mask(tok):
    ex = encode_reflection_example(tok, PARTS, "The taxi is left of P.")
    prompt = tok.encode(build_reflection_prompt(PARTS))
    target = tok.encode("The taxi is left of P.") + [tok.eos_token_id]
    assert ex.input_ids == prompt + target
    assert ex.target_mask == [0] * len(prompt) + [1] * len(target)
    assert ex.prompt_length == len(prompt)
    assert tok.decode([t for t, m in zip(ex.input_ids, ex.target_mask, strict=True) if m]) == "The taxi is left of P.<|endoftext|>"


def test_policy_example_target_is_the_label_token(tok):
    ex = encode_policy_example(tok, PARTS, "Go east.", ["south", "east", "pickup"], ["5", "b", "42"], 2)
    prompt = tok.encode(build_policy_prompt(PARTS, "Go east.", ["south", "east", "pickup"], ["5", "b", "42"]))
    assert ex.input_ids == prompt + [tok.encode(" 42")[0]]
    assert ex.target_mask == [0] * len(prompt) + [1]
    # The prompt ends on "# Action:" and the label token carries the space: decoding the pair reads naturally.
    assert tok.decode(ex.input_ids[-4:]).endswith("# Action: 42")
    with pytest.raises(ValueError, match="target_index 3"):
        encode_policy_example(tok, PARTS, None, ["a", "b", "c"], ["0", "1", "2"], 3)
