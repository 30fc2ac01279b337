"""Prompt/response pairs -> token ids with a response-only loss mask, padded batches, and packed batches.

The prompt and the response are tokenized *separately* and concatenated, so the boundary between "no loss"
and "loss" is exact by construction (tokenizing the joined text could merge tokens across the boundary).

Packing puts several examples end to end in one row. Attention never crosses examples: each row gets a
block-diagonal causal mask (a 4D additive mask, passed to the model as is) and position ids that restart at
0 for every example, so a packed example sees exactly what it would see alone (tests check the losses match).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

IGNORE = -100  # label of positions that carry no loss (prompt, padding)


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]  # IGNORE on prompt tokens, the token itself on response tokens (incl. the end token)


class PromptFormat:
    """How a prompt becomes model input text: the tokenizer's chat template, or a plain template."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, chat_template: str = "auto",
                 plain_template: str = "Question: {prompt}\nAnswer:"):
        if chat_template not in ("auto", "on", "off"):
            raise ValueError(f"chat_template must be auto, on or off, not {chat_template!r}")
        has = getattr(tokenizer, "chat_template", None) is not None
        if chat_template == "on" and not has:
            raise ValueError("chat_template=on but this tokenizer has no chat template; use auto or off")
        self.tok = tokenizer
        self.chat = has and chat_template != "off"
        self.plain_template = plain_template
        if "{prompt}" not in plain_template:
            raise ValueError("plain_template must contain {prompt}")

    def prompt_ids(self, prompt: str) -> list[int]:
        if self.chat:
            text = self.tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                                tokenize=False)
        else:
            text = self.plain_template.format(prompt=prompt)
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def response_ids(self, response: str) -> list[int]:
        # Plain templates end with "Answer:", and GPT-2-style BPE attaches the space to the next word.
        text = response if self.chat else " " + response
        return self.tok(text, add_special_tokens=False)["input_ids"] + [self.tok.eos_token_id]

    @property
    def stop_ids(self) -> list[int]:
        """Token ids that end a generated answer."""
        ids = {self.tok.eos_token_id}
        for t in ("<|im_end|>", "<|eot_id|>", "<|end|>"):
            tid = self.tok.convert_tokens_to_ids(t) if t in self.tok.get_vocab() else None
            if isinstance(tid, int):
                ids.add(tid)
        return sorted(i for i in ids if i is not None)


def encode(fmt: PromptFormat, prompt: str, response: str, max_len: int) -> Example:
    """One training example. Over ``max_len``: the response keeps up to half, the prompt loses its middle."""
    p, r = fmt.prompt_ids(prompt), fmt.response_ids(response)
    if len(p) + len(r) > max_len:
        r = r[: max(max_len // 2, max_len - len(p))]
        room = max_len - len(r)
        tail = min(8, room // 2)  # keep the template's closing tokens (e.g. the assistant header)
        p = p[: room - tail] + (p[-tail:] if tail else [])
    return Example(input_ids=p + r, labels=[IGNORE] * len(p) + r)


def encode_all(fmt: PromptFormat, pairs: Sequence[tuple[str, str]], max_len: int) -> list[Example]:
    return [encode(fmt, p, r, max_len) for p, r in pairs]


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, T)
    labels: torch.Tensor  # (B, T), IGNORE where no loss
    attention_mask: torch.Tensor  # (B, T) 0/1 for padded batches, or (B, 1, T, T) additive for packed
    position_ids: torch.Tensor | None  # (B, T) for packed batches
    n_tokens: int  # real (non-pad) tokens: the unit of tokens/s

    def to(self, device: torch.device) -> Batch:
        return Batch(self.input_ids.to(device), self.labels.to(device), self.attention_mask.to(device),
                     None if self.position_ids is None else self.position_ids.to(device), self.n_tokens)


def pad_batch(examples: Sequence[Example], pad_id: int) -> Batch:
    """Right-padded batch with a 2D attention mask."""
    T = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), T), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), T), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), T), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    return Batch(ids, labels, mask, None, int(mask.sum()))


def pack_rows(examples: Sequence[Example], row_len: int) -> list[list[Example]]:
    """Fill rows of ``row_len`` tokens in the given order (next-fit: order, hence determinism, is kept)."""
    rows: list[list[Example]] = []
    current: list[Example] = []
    used = 0
    for e in examples:
        n = len(e.input_ids)
        if current and used + n > row_len:
            rows.append(current)
            current, used = [], 0
        current.append(e)
        used += n
    if current:
        rows.append(current)
    return rows


def packed_batch(rows: Sequence[Sequence[Example]], pad_id: int, dtype: torch.dtype = torch.float32) -> Batch:
    """Rows of end-to-end examples with a block-diagonal causal mask and per-example position ids."""
    T = max(sum(len(e.input_ids) for e in row) for row in rows)
    B = len(rows)
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    labels = torch.full((B, T), IGNORE, dtype=torch.long)
    positions = torch.zeros((B, T), dtype=torch.long)
    segment = torch.full((B, T), -1, dtype=torch.long)  # which example each position belongs to; -1 = pad
    n_tokens = 0
    for i, row in enumerate(rows):
        start = 0
        for j, e in enumerate(row):
            n = len(e.input_ids)
            ids[i, start:start + n] = torch.tensor(e.input_ids)
            labels[i, start:start + n] = torch.tensor(e.labels)
            positions[i, start:start + n] = torch.arange(n)
            segment[i, start:start + n] = j
            start += n
        n_tokens += start
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    same = segment[:, :, None] == segment[:, None, :]
    allowed = same & causal & (segment[:, :, None] >= 0)
    allowed |= torch.eye(T, dtype=torch.bool)  # a pad position attends to itself: no all-masked softmax rows
    mask = torch.zeros((B, 1, T, T), dtype=dtype).masked_fill(~allowed[:, None], torch.finfo(dtype).min)
    return Batch(ids, labels, mask, positions, n_tokens)


def load_pairs(path: str, prompt_field: str = "prompt", response_field: str = "response") -> list[tuple[str, str]]:
    """(prompt, response) pairs of a file in any pool format (JSONL, CSV, Parquet, a datasets directory). A
    missing response field or an empty response raises ``ValueError`` naming the file (and the row)."""
    from frugalft.design.pools import load_pool

    pool = load_pool(path, id_field=None, prompt_field=prompt_field, task_field=None, response_field=response_field)
    if not pool.has_responses:
        raise ValueError(f"{path}: no {response_field!r} field (choose it with --set response_field=NAME)")
    responses = pool.table.column("response").to_pylist()
    missing = [i + 1 for i, r in enumerate(responses) if r is None or not r.strip()]
    if missing:
        raise ValueError(f"{path}: row {missing[0]} has an empty {response_field!r} ({len(missing)} rows in all)")
    return list(zip(pool.prompts(), responses, strict=True))


def split_pairs(train: str, eval: str = "", eval_fraction: float = 0.05, seed: int = 0,
                prompt_field: str = "prompt", response_field: str = "response",
                ) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Train and held-out pairs: the ``eval`` file, or a seeded ``eval_fraction`` of ``train`` (then the
    training pairs come in the shuffled order)."""
    import random

    pairs = load_pairs(train, prompt_field, response_field)
    if eval:
        return pairs, load_pairs(eval, prompt_field, response_field)
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    k = int(round(eval_fraction * len(pairs)))
    return [pairs[i] for i in order[k:]], [pairs[i] for i in order[:k]]
