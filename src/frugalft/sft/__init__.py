"""Supervised fine-tuning on prompt/response pairs (LoRA or full), loss on the response tokens only."""

from frugalft.sft.data import IGNORE, Batch, Example, PromptFormat, encode, pack_rows, packed_batch, pad_batch
from frugalft.sft.train import SFTConfig, SFTError, SFTResult, heldout_loss, response_loss, train_sft

__all__ = [
    "IGNORE",
    "Batch",
    "Example",
    "PromptFormat",
    "SFTConfig",
    "SFTError",
    "SFTResult",
    "encode",
    "heldout_loss",
    "pack_rows",
    "packed_batch",
    "pad_batch",
    "response_loss",
    "train_sft",
]
