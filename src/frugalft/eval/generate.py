"""Batched greedy generation for evaluation: left padding, a KV cache, stop at the end-of-answer token."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from frugalft.sft.data import PromptFormat


@torch.no_grad()
def generate_answers(model: torch.nn.Module, fmt: PromptFormat, prompts: Sequence[str], max_new_tokens: int = 64,
                     batch_size: int = 16, max_prompt_len: int = 512) -> list[str]:
    """Greedy answers, one per prompt, in order. Prompts are batched by length so little is padded."""
    tok = fmt.tok
    encoded = [fmt.prompt_ids(p) for p in prompts]
    encoded = [ids if len(ids) <= max_prompt_len else ids[: max_prompt_len - 8] + ids[-8:] for ids in encoded]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    device = next(model.parameters()).device
    stop = fmt.stop_ids
    was_training = model.training
    model.eval()
    out: list[str] = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        T = max(len(encoded[i]) for i in idx)
        ids = torch.full((len(idx), T), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(idx), T), dtype=torch.long)
        for row, i in enumerate(idx):  # left padding: every row's next token lands at position T
            n = len(encoded[i])
            ids[row, T - n:] = torch.tensor(encoded[i])
            mask[row, T - n:] = 1
        gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
                             do_sample=False, temperature=None, top_p=None, top_k=None,
                             eos_token_id=stop, pad_token_id=tok.pad_token_id)
        for row, i in enumerate(idx):
            new = gen[row, T:].tolist()
            cut = next((k for k, t in enumerate(new) if t in stop), len(new))
            out[i] = tok.decode(new[:cut], skip_special_tokens=True).strip()
    model.train(was_training)
    return out
