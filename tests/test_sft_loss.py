"""The response-only loss: the mask is exact, the loss equals Hugging Face's own loss on the same labels, and
packed batches (block-diagonal attention) give the same loss as padded ones."""

from __future__ import annotations

import pytest
import torch

from frugalft.models import load_model
from frugalft.sft import IGNORE, PromptFormat, encode, pack_rows, packed_batch, pad_batch, response_loss

PAIRS = [
    ("What is 12 + 30?", "42"),
    ("Reverse the letters of the word \"stack\".", "kcats"),
    ("List the parameter names of this Python signature.\n\ndef f(a, b=1, *args, c, **kw):", "a, b, args, c, kw"),
    ("Rewrite the date 2001-02-03 in DD/MM/YYYY format.", "03/02/2001"),
    ("Say hi.", "hi"),
]


@pytest.fixture(scope="module")
def lm():
    model, tok = load_model("tiny-test", seed=0)
    return model, tok


def test_mask_is_exactly_the_response(lm):
    _, tok = lm
    fmt = PromptFormat(tok, chat_template="auto")  # tiny's tokenizer has no chat template -> plain
    assert not fmt.chat
    for prompt, response in PAIRS:
        ex = encode(fmt, prompt, response, max_len=256)
        p = tok(f"Question: {prompt}\nAnswer:", add_special_tokens=False)["input_ids"]
        r = tok(" " + response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        assert ex.input_ids == p + r
        assert ex.labels == [IGNORE] * len(p) + r
        assert tok.decode([t for t in ex.labels if t != IGNORE]) == " " + response + tok.eos_token


def test_truncation_keeps_response_and_prompt_tail(lm):
    _, tok = lm
    fmt = PromptFormat(tok)
    long_prompt = "word " * 300
    ex = encode(fmt, long_prompt, "done", max_len=40)
    assert len(ex.input_ids) == 40
    r = tok(" done", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert ex.labels[-len(r):] == r and ex.labels.count(IGNORE) == 40 - len(r)
    tail = tok(f"Question: {long_prompt}\nAnswer:", add_special_tokens=False)["input_ids"][-8:]
    assert ex.input_ids[40 - len(r) - 8: 40 - len(r)] == tail


def test_loss_equals_hf_loss_on_the_same_labels(lm):
    model, tok = lm
    fmt = PromptFormat(tok)
    batch = pad_batch([encode(fmt, p, r, 256) for p, r in PAIRS], tok.pad_token_id)
    with torch.no_grad():
        ours, n = response_loss(model, batch)
        ref = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels).loss
    assert n == int((batch.labels[:, 1:] != IGNORE).sum())
    assert torch.allclose(ours, ref, rtol=1e-5, atol=1e-6)


def test_chat_template_mask(lm):
    _, tok = lm
    model, tok = load_model("tiny-test", seed=0)
    tok.chat_template = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}" \
                        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    fmt = PromptFormat(tok, chat_template="auto")
    assert fmt.chat
    ex = encode(fmt, "Say hi.", "hi", 64)
    p = tok("<|user|>Say hi.\n<|assistant|>", add_special_tokens=False)["input_ids"]
    assert ex.input_ids[: len(p)] == p and ex.labels[: len(p)] == [IGNORE] * len(p)
    assert [t for t in ex.labels if t != IGNORE] == tok("hi", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    with pytest.raises(ValueError, match="no chat template"):
        PromptFormat(load_model("tiny-test")[1], chat_template="on")


def test_packed_loss_equals_padded_loss(lm):
    model, tok = lm
    fmt = PromptFormat(tok)
    examples = [encode(fmt, p, r, 256) for p, r in PAIRS]
    rows = pack_rows(examples, row_len=64)
    assert len(rows) < len(examples) and sum(len(r) for r in rows) == len(examples)
    packed = packed_batch(rows, tok.pad_token_id)
    padded = pad_batch(examples, tok.pad_token_id)
    assert packed.n_tokens == padded.n_tokens == sum(len(e.input_ids) for e in examples)
    with torch.no_grad():
        a, na = response_loss(model, packed, reduction="sum")
        b, nb = response_loss(model, padded, reduction="sum")
    assert na == nb
    assert torch.allclose(a, b, rtol=1e-5)
    # Without the block mask, attention would cross examples and the loss would differ.
    leaky = packed_batch(rows, tok.pad_token_id)
    leaky.attention_mask = (leaky.input_ids != -1).long()
    leaky.position_ids = None
    with torch.no_grad():
        c, _ = response_loss(model, leaky, reduction="sum")
    assert not torch.allclose(c, b, rtol=1e-3)
