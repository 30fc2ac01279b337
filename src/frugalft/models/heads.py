"""Heads on top of a causal LM's last hidden state: a scalar value head, and the label head.

The label head is Reflect-RL's "shrunk" output layer (SPEC A.2): the policy's enumerated prompt lists each
valid action behind a one-token label, and the policy's distribution is the LM's next-token softmax restricted
to those label tokens. Computing only the label rows of the output matrix costs |labels| x d instead of V x d,
and an invalid action can never be sampled.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase


class LabelError(ValueError):
    pass


def trunk_hidden(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Last-layer hidden states (batch, seq, d) without computing the vocabulary logits.

    Works for plain transformers models and for peft-wrapped ones (adapters stay active).
    """
    base = model
    if hasattr(base, "get_base_model"):  # PeftModel: the adapters live inside the wrapped model's modules
        base = base.get_base_model()
    trunk = getattr(base, base.base_model_prefix)
    out = trunk(input_ids=input_ids, attention_mask=attention_mask)
    return out.last_hidden_state


def last_token_hidden(hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """The hidden state of each row's last real token; works for left or right padding."""
    if attention_mask is None:
        return hidden[:, -1]
    seq = attention_mask.shape[1]
    positions = torch.arange(seq, device=attention_mask.device).expand_as(attention_mask)
    last = (positions * attention_mask.long()).argmax(dim=1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


class LabelHead(nn.Module):
    """Next-token logits restricted to label tokens, reading the LM's own output matrix (no new weights).

    ``logits(hidden)`` has shape (batch, n_labels) in the order of ``label_ids``; an optional ``valid`` mask
    (batch, n_labels) removes labels absent from a row's list.
    """

    def __init__(self, lm: PreTrainedModel, label_ids: Sequence[int]):
        super().__init__()
        self.lm_head = lm.get_output_embeddings()
        self.register_buffer("label_ids", torch.as_tensor(list(label_ids), dtype=torch.long), persistent=False)

    def logits(self, hidden: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        weight = self.lm_head.weight[self.label_ids]
        out = hidden @ weight.T
        bias = getattr(self.lm_head, "bias", None)
        if bias is not None:
            out = out + bias[self.label_ids]
        out = out.float()
        if valid is not None:
            out = out.masked_fill(~valid, float("-inf"))
        return out

    def distribution(self, hidden: torch.Tensor, valid: torch.Tensor | None = None,
                     temperature: float = 1.0) -> torch.distributions.Categorical:
        return torch.distributions.Categorical(logits=self.logits(hidden, valid) / temperature)


class ValueHead(nn.Module):
    """A scalar state value from the last hidden state (for PPO's critic)."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.proj = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.proj.weight)  # start at V = 0: no arbitrary baseline before it has learned
        nn.init.zeros_(self.proj.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.proj(hidden.float()).squeeze(-1)


def label_token_ids(tokenizer: PreTrainedTokenizerBase, labels: Sequence[str], prefix: str = " ") -> list[int]:
    """Token id of each label as it appears after ``prefix`` (the prompt ends ``"# Action:"``, then `` 3``).

    Raises LabelError naming every label that is not exactly one token, and any two labels sharing a token.
    """
    bad: list[str] = []
    ids: list[int] = []
    for label in labels:
        toks = tokenizer.encode(prefix + label, add_special_tokens=False)
        if len(toks) != 1:
            bad.append(label)
        else:
            ids.append(toks[0])
    if bad:
        raise LabelError(
            f"labels that are not a single token for this tokenizer (after {prefix!r}): {bad[:20]}"
            + (f" and {len(bad) - 20} more" if len(bad) > 20 else "")
        )
    if len(set(ids)) != len(ids):
        raise LabelError("two labels map to the same token")
    return ids


def check_label_alphabet(tokenizer: PreTrainedTokenizerBase, labels: Sequence[str], prefix: str = " ") -> None:
    """Raise LabelError unless every label is one distinct token after ``prefix``."""
    label_token_ids(tokenizer, labels, prefix)
