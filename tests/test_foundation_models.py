import pytest
import torch

from frugalft.models import (
    EMBEDDED,
    LabelError,
    LabelHead,
    LoraSettings,
    ModelError,
    ValueHead,
    add_lora,
    count_parameters,
    label_token_ids,
    last_token_hidden,
    load_model,
    trunk_hidden,
)


def test_tiny_is_seeded_and_uses_gpt2_bpe():
    a, tok = load_model("tiny-test", seed=3)
    b, _ = load_model("tiny-test", seed=3)
    c, _ = load_model("tiny-test", seed=4)
    for (n, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb), n
    assert not torch.equal(a.transformer.h[0].attn.c_attn.weight, c.transformer.h[0].attn.c_attn.weight)
    # GPT-2's real BPE: these ids are GPT-2's published encoding of "Hello world".
    assert tok.encode("Hello world") == [15496, 995]
    assert len(tok) == 50257 and tok.pad_token == tok.eos_token


def test_building_a_tiny_model_leaves_the_global_rng_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    load_model("tiny-test", seed=9)
    assert torch.equal(torch.rand(3), expected)


def test_unknown_names_list_the_embedded_ones():
    with pytest.raises(ModelError) as e:
        load_model("not a model!")
    for name in EMBEDDED:
        assert name in str(e.value)


def test_unfetchable_hub_id_says_so_and_how_to_pass_a_path():
    with pytest.raises(ModelError, match="local directory"):
        load_model("nobody-here/no-such-model-xyz")


def test_label_head_equals_full_softmax_renormalised_over_labels():
    model, tok = load_model("tiny-test", seed=1)
    labels = ["0", "1", "2", "a", "b", "Z"]
    ids = label_token_ids(tok, labels)
    tok.padding_side = "left"
    enc = tok(["# Action:", "state text here\n# Action:"], return_tensors="pt", padding=True)
    with torch.no_grad():
        full = model(**enc).logits[:, -1]  # left padding: the last column is each row's last token
        hidden = last_token_hidden(trunk_hidden(model, enc["input_ids"], enc["attention_mask"]), enc["attention_mask"])
        head = LabelHead(model, ids)
        ours = head.distribution(hidden).probs
    reference = torch.softmax(full[:, ids].double(), dim=-1)
    torch.testing.assert_close(ours.double(), reference, rtol=1e-5, atol=1e-6)
    # A row's valid mask removes labels exactly: the rest renormalise among themselves.
    valid = torch.tensor([[True, False, True, False, True, False], [True] * 6])
    masked = head.distribution(hidden, valid).probs.double()
    assert masked[0, 1] == 0 and masked[0, 3] == 0 and masked[0, 5] == 0
    ref0 = torch.softmax(full[0, [ids[0], ids[2], ids[4]]].double(), dim=-1)
    torch.testing.assert_close(masked[0, [0, 2, 4]], ref0, rtol=1e-5, atol=1e-6)
    samples = head.distribution(hidden, valid).sample((500,))
    assert set(samples[:, 0].tolist()) <= {0, 2, 4}


def test_label_alphabet_check_names_multi_token_labels():
    _, tok = load_model("tiny-test")
    assert len(label_token_ids(tok, [str(i) for i in range(200)])) == 200
    with pytest.raises(LabelError, match="supercalifragilistic"):
        label_token_ids(tok, ["0", "supercalifragilistic"])


def test_lora_trains_only_adapters_and_value_head_starts_at_zero():
    model, _ = load_model("tiny-test")
    _, total = count_parameters(model)
    peft_model = add_lora(model, LoraSettings(r=4, alpha=8))
    trainable, total_after = count_parameters(peft_model)
    assert 0 < trainable < total // 10 and total_after == total + trainable
    names = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert any("c_attn" in n for n in names) and any("c_fc" in n for n in names)
    ids = torch.tensor([[1, 2, 3]])
    h = trunk_hidden(peft_model, ids)
    assert h.shape == (1, 3, 64)
    assert torch.equal(ValueHead(64)(h), torch.zeros(1, 3))


def test_tiny_models_fused_gelu_is_gpt2s_tanh_gelu():
    """The embedded models run GPT-2's tanh GELU as one fused kernel; the logits equal those of the same weights
    with transformers' five-op ``gelu_new``."""
    from transformers.activations import NewGELUActivation

    model, tok = load_model("tiny-test", device="cpu", seed=3)
    assert model.config.activation_function == "gelu_pytorch_tanh"
    ids = torch.tensor([tok("the taxi goes north, then east").input_ids])
    with torch.no_grad():
        fused = model(ids).logits
        for block in model.transformer.h:
            block.mlp.act = NewGELUActivation()
        reference = model(ids).logits
    torch.testing.assert_close(fused, reference, atol=1e-5, rtol=1e-5)
