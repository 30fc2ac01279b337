"""The policy: one forward pass over the enumerated prompt, then a softmax over the listed actions (SPEC A.2).

Three heads score the listed actions, none with new weights:

- ``label`` (the paper's): the LM trunk's hidden state at the prompt's last token against the output embedding
  rows of the label alphabet only (``LabelHead``): the next-token softmax restricted to the listed labels.
- ``line`` (a pointer over the list): the same last-token state against the hidden state at the end of each
  listed line (the newline after ``<label>. <action>``), scaled by 1/sqrt(d). Each line's state has read the
  whole prompt before it, reflection included, so "is this the action the reflection names?" is decided at the
  line itself; the label head must instead find the named line and copy its label to the end, a chain a small
  model trained from scratch does not learn (docs/results.md, ALFWorld probes).
- ``text``: each listed action's log-likelihood as the prompt's continuation, its tokens those of its own line
  after ``<label>.`` (the action text and the line end), summed. Copying a name the reflection wrote is then
  next-token prediction, which a model learns from every token of the action instead of one label choice. One
  forward per batch: every action of a row is appended after its prompt, each seeing the prompt and its own
  earlier tokens only (a block mask, positions restarting after the prompt), so the prompt is read once and no
  keys or values are copied per action.

Whatever the head, labels not shown in a row's list are -inf, so sampling can never pick an action that is not offered,
and the distribution is indexed by the label alphabet. An optional ``ValueHead`` on the last-token state serves
PPO's critic.

Prompts are lists of token ids of different lengths; ``collate_left`` pads them on the left and gives each
real token the position it would have without padding, so a prompt's logits do not depend on the batch it was
scored in (rollout and update see the same numbers).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from frugalft.models import LabelHead, ValueHead, last_token_hidden, max_positions
from frugalft.reflect.prompts import list_token_ids


def collate_left(
    prompts: Sequence[Sequence[int]], pad_id: int, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-pad token-id lists: ``(input_ids, attention_mask, position_ids)``, each (batch, longest)."""
    if not prompts:
        raise ValueError("no prompts to collate")
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        if len(p) == 0:
            raise ValueError(f"prompt {i} is empty")
        ids[i, width - len(p):] = torch.as_tensor(list(p), dtype=torch.long)
        mask[i, width - len(p):] = 1
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), positions.to(device)


def valid_mask(label_indices: Sequence[Sequence[int]], n_labels: int,
               device: torch.device | str = "cpu") -> torch.Tensor:
    """(batch, n_labels) bool: True at the alphabet indices listed in each row's prompt."""
    out = torch.zeros((len(label_indices), n_labels), dtype=torch.bool)
    for i, row in enumerate(label_indices):
        if len(row) == 0:
            raise ValueError(f"row {i} offers no labels")
        out[i, list(row)] = True
    return out.to(device)


def attention_backends(device: torch.device) -> contextlib.AbstractContextManager:
    """On CUDA, scaled-dot-product attention without the cuDNN backend, else nothing.

    Rollouts present a new sequence length at almost every call (each prompt, each decoded token), and the
    cuDNN backend builds an execution plan per new shape: on an H200 a profile showed ~4 ms of work per decoded
    token of the tiny model, but ~60-125 ms wall time per token at fresh lengths. Flash / memory-efficient /
    math kernels need no per-shape plan.
    """
    if device.type != "cuda":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


def trunk_hidden_positions(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                           position_ids: torch.Tensor) -> torch.Tensor:
    """Last-layer hidden states with explicit positions (``frugalft.models.trunk_hidden`` plus position ids);
    ``attention_mask`` is (batch, seq) or a (batch, 1, seq, seq) boolean mask of which keys each query sees."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    trunk = getattr(base, base.base_model_prefix)
    return trunk(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).last_hidden_state


@dataclass
class Action:
    """What ``Policy.act`` returns for a batch: alphabet index of the chosen label, and statistics."""

    label: torch.Tensor  # (batch,) alphabet index of the sampled label
    logprob: torch.Tensor  # (batch,) log-probability of that label at the sampling temperature
    entropy: torch.Tensor  # (batch,) entropy of the distribution over the row's valid labels
    value: torch.Tensor | None  # (batch,) critic estimate when the policy has a value head
    logprobs: torch.Tensor  # (batch, n_labels) log-probabilities (-inf at invalid labels)


PolicyHead = Literal["label", "line", "text"]
POLICY_HEADS: tuple[str, ...] = ("label", "line", "text")


def head_token_ids(tokenizer, head: str) -> dict[str, int]:
    """The ``Policy`` keyword arguments that ``head`` needs from the tokenizer (none for the label head)."""
    if head == "label":
        return {}
    line_end, separator = list_token_ids(tokenizer)
    return {"line_end_id": line_end, "separator_id": separator}


class Policy(nn.Module):
    """An LM with a head over the listed actions (``head``, see the module docstring; ``label_ids`` are the
    alphabet's token ids, ``line_end_id`` the token that ends a listed line and ``separator_id`` the ``.`` after
    each listed label, ``frugalft.reflect.prompts.list_token_ids``: the line and text heads need them) and an
    optional value head."""

    def __init__(self, lm: nn.Module, label_ids: Sequence[int], pad_id: int, value_head: bool = False,
                 head: PolicyHead = "label", line_end_id: int | None = None, separator_id: int | None = None):
        super().__init__()
        if head not in POLICY_HEADS:
            raise ValueError(f"unknown policy head {head!r}; valid: {', '.join(POLICY_HEADS)}")
        if head != "label" and line_end_id is None or head == "text" and separator_id is None:
            raise ValueError(f"the {head} head needs line_end_id and separator_id "
                             "(frugalft.reflect.prompts.list_token_ids(tokenizer))")
        self.lm = lm
        self.head = head
        self.line_end_id = line_end_id
        self.separator_id = separator_id
        self.label_head = LabelHead(lm, label_ids)
        self.value_head = ValueHead(lm.config.hidden_size) if value_head else None
        self.pad_id = pad_id
        self.n_labels = len(label_ids)
        self.max_positions = max_positions(lm)

    @property
    def device(self) -> torch.device:
        return next(self.lm.parameters()).device

    def forward(self, prompts: Sequence[Sequence[int]], valid: torch.Tensor, temperature: float = 1.0,
                labels: Sequence[Sequence[int]] | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (batch, n_labels) divided by ``temperature``, -inf where not ``valid``; and values.

        ``labels``: each row's alphabet indices in list order (the line and text heads need them: listed line k
        is label ``labels[row][k]``; the label head ignores them)."""
        if self.head != "label" and labels is None:
            raise ValueError(f"the {self.head} head needs each row's labels in list order (labels=...)")
        actions = self._listed_actions(prompts, labels) if self.head == "text" else None
        room = max(len(a) for row in actions for a in row) if actions else 0  # the text head appends actions
        if self.max_positions is not None and max(len(p) for p in prompts) + room > self.max_positions:
            # Keep the end (the action list and "# Action:"), as the warm-up's SFT truncation does.
            prompts = [p[-(self.max_positions - room):] for p in prompts]
        ids, mask, pos = collate_left(prompts, self.pad_id, self.device)
        valid = valid.to(self.device)
        with attention_backends(self.device):
            if self.head == "text":
                logits, hidden = self._text_logits(prompts, actions, labels, ids, mask, pos, valid)
            else:
                states = trunk_hidden_positions(self.lm, ids, mask, pos)
                hidden = last_token_hidden(states, mask)
                logits = (self.label_head.logits(hidden, valid) if self.head == "label"
                          else self._line_logits(prompts, labels, states, hidden, valid))
        value = self.value_head(hidden) if self.value_head is not None else None
        return logits / temperature, value

    def _line_ends(self, prompts: Sequence[Sequence[int]], labels: Sequence[Sequence[int]]) -> list[list[int]]:
        """Each prompt's listed lines' end positions (unpadded). The list is the prompt's tail: ``<label>.
        <action>`` lines, each ended by a line end, then ``# Action:``: its n lines end at the last n line ends."""
        out = []
        for i, (p, row) in enumerate(zip(prompts, labels, strict=True)):
            found = [j for j, t in enumerate(p) if t == self.line_end_id][-len(row):]
            if len(found) < len(row):
                raise ValueError(f"prompt {i} has {len(found)} line ends but lists {len(row)} actions: not a "
                                 "policy prompt of frugalft.reflect.prompts (or cut inside its action list)")
            out.append(found)
        return out

    def _scatter(self, scores: torch.Tensor, labels: Sequence[Sequence[int]], valid: torch.Tensor) -> torch.Tensor:
        """Per-listed-action scores (flat, row-major in list order) into (batch, n_labels), -inf elsewhere."""
        rows = torch.as_tensor([i for i, row in enumerate(labels) for _ in row], device=scores.device)
        cols = torch.as_tensor([a for row in labels for a in row], device=scores.device)
        out = torch.full((len(labels), self.n_labels), float("-inf"), device=scores.device)
        return out.index_put((rows, cols), scores).masked_fill(~valid, float("-inf"))

    def _line_logits(self, prompts: Sequence[Sequence[int]], labels: Sequence[Sequence[int]],
                     states: torch.Tensor, hidden: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """The last-token state against each listed line's end state (see the module docstring)."""
        width = states.shape[1]
        n_max = max(len(row) for row in labels)
        ends = torch.zeros((len(prompts), n_max), dtype=torch.long)
        listed = torch.zeros((len(prompts), n_max), dtype=torch.bool)
        for i, (p, found) in enumerate(zip(prompts, self._line_ends(prompts, labels), strict=True)):
            ends[i, : len(found)] = torch.as_tensor(found) + width - len(p)  # left padding
            listed[i, : len(found)] = True
        ends, listed = ends.to(states.device), listed.to(states.device)
        lines = states.gather(1, ends[:, :, None].expand(-1, -1, states.shape[-1]))  # (batch, n_max, d)
        # float32 out, as the label head's (under bf16 autocast the product itself is bf16)
        scores = torch.einsum("bd,bnd->bn", hidden, lines).float() / math.sqrt(states.shape[-1])
        return self._scatter(scores[listed], labels, valid)  # listed slots in row-major order

    def _listed_actions(self, prompts: Sequence[Sequence[int]], labels: Sequence[Sequence[int]]) -> list[list[list[int]]]:
        """Per row, each listed action's tokens: its line after ``<label>.`` (the action and its line end)."""
        actions = []
        for i, (p, ends) in enumerate(zip(prompts, self._line_ends(prompts, labels), strict=True)):
            start = ends[0] - 1
            while start >= 0 and p[start] != self.line_end_id:  # the first listed line starts after a line end
                start -= 1
            row = []
            for end in ends:
                line = list(p[start + 1: end + 1])
                if self.separator_id not in line:
                    raise ValueError(f"prompt {i}: a listed line without its '<label>.' separator")
                row.append(line[line.index(self.separator_id) + 1:])
                start = end
            actions.append(row)
        return actions

    def _text_logits(self, prompts: Sequence[Sequence[int]], actions: list[list[list[int]]],
                     labels: Sequence[Sequence[int]], ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor,
                     valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each listed action's summed token log-probabilities after the prompt (see the module docstring), and
        the prompts' last-token states."""
        device, width = ids.device, ids.shape[1]
        cont = max(sum(len(a) for a in row) for row in actions)
        total = width + cont
        full_ids = torch.full((len(prompts), total), self.pad_id, dtype=torch.long)
        full_pos = torch.zeros((len(prompts), total), dtype=torch.long)
        # which key each query sees: the prompt causally (its real tokens), each action the prompt and itself
        sees = torch.zeros((len(prompts), total, total), dtype=torch.bool)
        sees[:, :width, :width] = torch.tril(torch.ones(width, width, dtype=torch.bool)) & mask.bool().cpu()[:, None]
        sees[:, range(total), range(total)] = True  # padding sees itself: no all-masked row, no NaN
        before: list[tuple[int, int]] = []  # per action token, (row, position whose state predicts it)
        for i, row in enumerate(actions):
            at = width
            for a in row:
                span = torch.arange(at, at + len(a))
                full_ids[i, span] = torch.as_tensor(a)
                full_pos[i, span] = len(prompts[i]) + torch.arange(len(a))
                sees[i, span, :width] = mask[i].bool().cpu()
                sees[i, at: at + len(a), at: at + len(a)] = torch.tril(torch.ones(len(a), len(a), dtype=torch.bool))
                before += [(i, width - 1)] + [(i, int(j)) for j in span[:-1]]
                at += len(a)
        full_ids[:, :width], full_pos[:, :width] = ids.cpu(), pos.cpu()
        states = trunk_hidden_positions(self.lm, full_ids.to(device), sees[:, None].to(device), full_pos.to(device))
        hidden = states[:, width - 1]  # each prompt's last token (prompts are left-padded)
        rows = torch.as_tensor([r for r, _ in before], device=device)
        cols = torch.as_tensor([c for _, c in before], device=device)
        targets = torch.as_tensor([t for row in actions for a in row for t in a], device=device)
        logprobs = torch.log_softmax(self.lm.get_output_embeddings()(states[rows, cols]).float(), -1)
        token_lp = logprobs.gather(1, targets[:, None]).squeeze(1)
        per_action = torch.as_tensor([k for k, a in enumerate(a for row in actions for a in row) for _ in a],
                                     device=device)
        scores = torch.zeros(sum(len(row) for row in actions), device=device).index_add(0, per_action, token_lp)
        return self._scatter(scores, labels, valid), hidden

    @torch.no_grad()
    def act(self, prompts: Sequence[Sequence[int]], valid: torch.Tensor, temperature: float = 1.0,
            greedy: bool = False, generator: torch.Generator | None = None,
            generators: Sequence[torch.Generator] | None = None,
            labels: Sequence[Sequence[int]] | None = None) -> Action:
        """Sample (or take the most likely) valid label for each prompt.

        ``generators`` (one CPU generator per prompt) makes row j's draw depend on row j's stream only, so a
        sample does not depend on the batch it was drawn in; else one draw for the batch from ``generator``
        (default: the global RNG). ``labels``: as in ``forward``."""
        logits, value = self(prompts, valid, temperature, labels)
        logprobs = torch.log_softmax(logits, dim=-1)
        if greedy:
            label = logits.argmax(dim=-1)
        elif generators is not None:
            probs = logprobs.float().exp().cpu()
            label = torch.tensor([int(torch.multinomial(probs[j], 1, generator=g)) for j, g in enumerate(generators)],
                                 device=logits.device)
        else:
            label = torch.multinomial(logprobs.exp(), 1, generator=generator).squeeze(-1)
        return Action(
            label=label,
            logprob=logprobs.gather(1, label[:, None]).squeeze(1),
            entropy=entropy_from_logprobs(logprobs),
            value=value,
            logprobs=logprobs,
        )


def entropy_from_logprobs(logprobs: torch.Tensor) -> torch.Tensor:
    """Entropy of each row; invalid labels (logprob -inf, probability 0) contribute nothing."""
    p = logprobs.exp()
    return -(p * logprobs.masked_fill(p == 0, 0.0)).sum(-1)


@dataclass
class Scores:
    """The current policy's view of stored steps (with gradients): what the losses consume."""

    logprob: torch.Tensor  # (batch,) log-probability of the stored action
    entropy: torch.Tensor  # (batch,)
    listed: torch.Tensor  # (batch, longest list) log-probs of the listed actions in list order; -inf padding
    value: torch.Tensor | None  # (batch,)


def score_steps(policy: Policy, prompts: Sequence[Sequence[int]], labels: Sequence[Sequence[int]],
                actions: Sequence[int], temperature: float = 1.0) -> Scores:
    """Re-score stored prompts: log-prob of each chosen action, entropies and values, differentiably."""
    valid = valid_mask(labels, policy.n_labels, policy.device)
    logits, value = policy(prompts, valid, temperature, labels)
    logprobs = torch.log_softmax(logits, dim=-1)
    chosen = torch.as_tensor([row[a] for row, a in zip(labels, actions, strict=True)], device=logits.device)
    return Scores(
        logprob=logprobs.gather(1, chosen[:, None]).squeeze(1),
        entropy=entropy_from_logprobs(logprobs),
        listed=listed_logprobs(logprobs, labels),
        value=value,
    )


def listed_logprobs(logprobs: torch.Tensor, labels: Sequence[Sequence[int]]) -> torch.Tensor:
    """Gather each row's listed labels (list order) into (batch, longest list), padding with -inf."""
    width = max(len(r) for r in labels)
    index = torch.zeros((len(labels), width), dtype=torch.long, device=logprobs.device)
    pad = torch.ones((len(labels), width), dtype=torch.bool, device=logprobs.device)
    for i, row in enumerate(labels):
        index[i, : len(row)] = torch.as_tensor(list(row), device=logprobs.device)
        pad[i, : len(row)] = False
    return logprobs.gather(1, index).masked_fill(pad, float("-inf"))
