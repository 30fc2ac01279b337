"""The static reflection decoder (``frugalft.reflect.decoding``), on CPU: its counter-based uniforms, and the
same tokens as the loop decoder of ``decoding.generate`` when both read the same uniforms.

On CPU the static decoder runs its decode step eagerly: the code a CUDA graph captures on a GPU."""

from __future__ import annotations

import pytest
import torch

from frugalft.models import load_model
from frugalft.reflect.decoding import (
    StaticDecoder,
    counter_uniforms,
    generate,
    philox4x32,
    row_keys,
    sample_from_logits,
    supports,
)
from frugalft.reflect.policy import collate_left
from frugalft.reflect.reflection import Reflector

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

PROMPTS = [[464, 3139, 286, 4881, 318], [50, 51, 52], list(range(100, 120)), [7]]  # left padding: 15, 17, 0, 19


@pytest.fixture(scope="module")
def lm_tok():
    return load_model("tiny-test", device="cpu")


def test_philox_matches_random123_known_answers():
    # tests/kat_vectors of Random123 (D. E. Shaw Research): counter words, key words -> output words.
    kat = [([0, 0, 0, 0], [0, 0], [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]),
           ([0xFFFFFFFF] * 4, [0xFFFFFFFF] * 2, [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]),
           ([0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344], [0xA4093822, 0x299F31D0],
            [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1])]
    counters = torch.tensor([c for c, _, _ in kat])
    keys = torch.tensor([k for _, k, _ in kat])
    assert philox4x32(counters, keys).tolist() == [o for _, _, o in kat]


def test_counter_uniforms_are_in_the_unit_interval_reproducible_and_private_to_a_row():
    keys = torch.tensor([0, 1, 2**62 + 12345, 2**63 - 2])
    u = counter_uniforms(keys, 64)
    assert u.shape == (4, 64) and u.dtype == torch.float32
    assert bool((u >= 0).all() and (u < 1).all())
    assert torch.equal(u, counter_uniforms(keys, 64))  # a pure function of (key, token index)
    assert torch.equal(counter_uniforms(keys[2:3], 64), u[2:3])  # a row's uniforms ignore its batch mates
    assert torch.equal(counter_uniforms(keys, 16), u[:, :16])  # and the cap
    assert len({tuple(r) for r in u.tolist()}) == 4  # distinct keys, distinct streams
    big = counter_uniforms(torch.arange(64), 256).flatten()
    assert abs(float(big.mean()) - 0.5) < 0.01 and abs(float(big.var()) - 1 / 12) < 0.005
    # One key per row per reflection, drawn from the row's generator: the episode's stream decides it.
    a = row_keys([torch.Generator().manual_seed(s) for s in (1, 2)], 2)
    b = row_keys([torch.Generator().manual_seed(2)], 1)
    assert a[1] == b[0] and a[0] != a[1] and bool((a >= 0).all())


def test_sampling_with_given_uniforms_is_the_inverse_cdf():
    logits = torch.log(torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25]]))
    u = torch.tensor([[0.05], [0.99]])
    assert sample_from_logits(logits, 1.0, u=u).tolist() == [0, 3]
    assert sample_from_logits(logits, 1.0, u=torch.tensor([[0.35], [0.26]])).tolist() == [2, 1]


def _batch(tok, prompts=PROMPTS):
    return collate_left(prompts, tok.pad_token_id)[:2]


@pytest.mark.parametrize("attention", ["sdpa", "matmul"])
@pytest.mark.parametrize("temperature", [0.0, 0.1])
def test_static_decoder_picks_the_loop_decoders_tokens_on_shared_uniforms(lm_tok, temperature, attention):
    # T = 0.1 rather than 1: this random-init model's next-token distribution is near uniform over 50k tokens,
    # where float rounding of the logits (two attention implementations) can move a draw across a CDF
    # boundary; sharper distributions leave the comparison to the decoders' logic.
    lm, tok = lm_tok
    ids, mask = _batch(tok)
    u = counter_uniforms(torch.arange(4) * 7_919 + 5, 12)
    loop = generate(lm, ids, mask, 12, temperature, tok.eos_token_id, tok.pad_token_id, uniforms=u)
    static = StaticDecoder(lm, attention=attention).generate(ids, mask, 12, temperature, tok.eos_token_id,
                                                             tok.pad_token_id, u)
    assert loop.shape == (4, 12) and torch.equal(static, loop)
    # Rows that end (eos: a token row 1 samples at step 3; pad differs from it) are padded the same way, and
    # the loop's stopping rule holds however often the static decoder checks for it.
    eos = int(loop[1, 3])
    loop = generate(lm, ids, mask, 12, temperature, eos, tok.pad_token_id, uniforms=u)
    assert (loop[1, 4:] == tok.pad_token_id).all()
    for every in (1, 5):
        static = StaticDecoder(lm, check_every=every, attention=attention).generate(
            ids, mask, 12, temperature, eos, tok.pad_token_id, u)
        assert torch.equal(static, loop)


def test_static_decoder_stops_when_every_row_has_ended(lm_tok):
    lm, tok = lm_tok
    ids, mask = _batch(tok, [PROMPTS[0], PROMPTS[0]])
    first = generate(lm, ids, mask, 8, 0.0, tok.eos_token_id, tok.pad_token_id)
    eos = int(first[0, 2])  # greedy, twice the same prompt: both rows end at step 2 (or earlier)
    loop = generate(lm, ids, mask, 8, 0.0, eos, tok.pad_token_id)
    u = torch.zeros(2, 8)
    for every in (1, 4):  # checked every 4 tokens: it overshoots, then cuts where the loop stopped
        static = StaticDecoder(lm, check_every=every).generate(ids, mask, 8, 0.0, eos, tok.pad_token_id, u)
        assert torch.equal(static, loop) and static.shape[1] <= 3


def test_a_static_row_does_not_depend_on_its_batch_mates(lm_tok):
    lm, tok = lm_tok
    keys = torch.arange(4) * 31 + 2
    ids, mask = _batch(tok)
    together = StaticDecoder(lm).generate(ids, mask, 10, 1.0, tok.eos_token_id, tok.pad_token_id,
                                          counter_uniforms(keys, 10))
    for j in (0, 3):
        one, one_mask = _batch(tok, [PROMPTS[j]])
        alone = StaticDecoder(lm).generate(one, one_mask, 10, 1.0, tok.eos_token_id, tok.pad_token_id,
                                           counter_uniforms(keys[j:j + 1], 10))
        assert alone[0].tolist() == together[j, :alone.shape[1]].tolist()


def test_reflector_with_the_static_decoder(lm_tok):
    lm, tok = lm_tok
    assert supports(lm) and not supports(torch.nn.Linear(2, 2))
    parts = [{"observation": "you are at (0, 0)"}, {"observation": "a wall is east of you"}]
    static = Reflector(lm, tok, max_new_tokens=6, decoder="static")
    assert static.decoder == "static" and Reflector(lm, tok, decoder="auto").decoder == "loop"  # CPU: the loop

    def gens(*seeds):
        return [torch.Generator().manual_seed(s) for s in seeds]

    a = static.reflect(parts, gens(1, 2))
    assert static.reflect(parts, gens(1, 2)) == a  # the episode streams decide
    assert static.reflect(parts[1:], gens(2)) == a[1:]  # not the batch
    greedy = Reflector(lm, tok, max_new_tokens=6, temperature=0.0, decoder="static")
    assert greedy.reflect(parts) == Reflector(lm, tok, max_new_tokens=6, temperature=0.0).reflect(parts)
    with pytest.raises(ValueError, match="CUDA"):
        StaticDecoder(lm, graphs=True)
    with pytest.raises(ValueError, match="sdpa or matmul"):
        StaticDecoder(lm, attention="flash")
    with pytest.raises(ValueError, match="decoder"):
        Reflector(lm, tok, decoder="fast")
