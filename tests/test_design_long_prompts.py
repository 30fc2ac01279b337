"""Selection cuts each prompt to what the model reads before tokenizing it: a pool with one ~20 MB prompt
hands the tokenizers bounded text (a spy records every text they get) and the features do not change."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from frugalft.design import pool_from_rows, select_prompts
from frugalft.design.features import CHARS_PER_TOKEN, clip_text, lm_embeddings, sentence_embeddings
from frugalft.design.uncertainty import encode_prompts

HUGE = "the quick brown fox jumps over the lazy dog; " * 450_000  # ~20 MB


class SpyTokenizer:
    """A tokenizer that records the longest text it was asked to tokenize, and otherwise is the real one."""

    def __init__(self, tok):
        object.__setattr__(self, "_tok", tok)
        object.__setattr__(self, "longest", 0)

    def _see(self, texts) -> None:
        for t in [texts] if isinstance(texts, str) else texts:
            object.__setattr__(self, "longest", max(self.longest, len(t)))

    def __call__(self, text, *args, **kwargs):
        self._see(text)
        return self._tok(text, *args, **kwargs)

    def apply_chat_template(self, conversation, *args, **kwargs):
        self._see([m["content"] for m in conversation])
        return self._tok.apply_chat_template(conversation, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._tok, name)

    def __setattr__(self, name, value):
        setattr(self._tok, name, value)


@pytest.fixture(scope="module")
def tiny():
    from frugalft.models import load_model

    return load_model("tiny-test", device="cpu")


@pytest.fixture()
def spy(tiny, monkeypatch):
    """load_model("tiny-test") hands out the spy; what the strategies load goes through it."""
    model, tok = tiny
    spy = SpyTokenizer(tok)
    monkeypatch.setattr("frugalft.models.load_model", lambda *a, **k: (model, spy))
    return spy


@pytest.fixture()
def pool():
    rows = [{"id": f"q{i}", "prompt": HUGE if i == 7 else f"question {i} about topic {i % 3}?", "task": "ab"[i % 2]}
            for i in range(21)]
    return pool_from_rows(rows)


def test_clip_text():
    assert clip_text("short", 4) == "short" and clip_text(None, 4) is None
    text = "".join(chr(65 + i % 26) for i in range(1000))
    assert clip_text(text, 2) == text[: 2 * CHARS_PER_TOKEN]
    assert clip_text(text, 2, keep_end=True) == text[-2 * CHARS_PER_TOKEN:]


def test_k_center_on_lm_features_tokenizes_bounded_text(pool, spy):
    sel = select_prompts(pool, "k-center", 5, params={"features": "lm"}, model="tiny-test", cache=False)
    assert len(sel) == 5
    assert 0 < spy.longest <= 256 * CHARS_PER_TOKEN


def test_uncertainty_tokenizes_bounded_text(pool, spy):
    sel = select_prompts(pool, "min-margin", 5, params={"max_new_tokens": 3}, model="tiny-test", cache=False)
    assert len(sel) == 5
    assert 0 < spy.longest <= 512 * CHARS_PER_TOKEN


def test_the_cut_keeps_what_the_model_reads(tiny):
    """Features of the huge prompt equal those of a prefix (lm: the first tokens) or suffix (uncertainty: the
    last tokens) that is long enough but still cheap to tokenize whole."""
    model, tok = tiny
    x = lm_embeddings([HUGE, HUGE[:100_000]], "tiny-test", device="cpu", max_tokens=64)
    np.testing.assert_array_equal(x[0], x[1])
    for chat in (False, True):
        if chat:
            tok.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
        try:
            long, cut = encode_prompts(tok, [HUGE, HUGE[-100_000:]], chat, 64)
        finally:
            tok.chat_template = None
        assert long == cut and len(long) == 64


def test_sentence_features_get_bounded_text(monkeypatch):
    """sentence-transformers truncates to max_seq_length only after tokenizing everything: the prompts it is
    handed are cut first (a stand-in model records them; importing the real one takes seconds)."""
    seen = []

    class FakeSentenceTransformer:
        max_seq_length = 128

        def __init__(self, *args, **kwargs):
            pass

        def encode(self, texts, **kwargs):
            seen.extend(texts)
            return np.ones((len(texts), 4), dtype=np.float32)

    monkeypatch.setitem(sys.modules, "sentence_transformers",
                        types.SimpleNamespace(SentenceTransformer=FakeSentenceTransformer))
    x = sentence_embeddings(["short one", HUGE], "fake", device="cpu")
    assert x.shape == (2, 4)
    assert seen[0] == "short one" and seen[1] == HUGE[: 128 * CHARS_PER_TOKEN]
