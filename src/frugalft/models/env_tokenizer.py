"""A small byte-level BPE for frugalft's text environments: the tokenizer of the ``tiny-env`` models.

Why not GPT-2's BPE for a model trained from scratch on a CPU:
- **The map stays a grid.** GPT-2 merges runs of punctuation (``": |"``, ``"|T:"``), so where a map cell lands
  in the token sequence depends on its neighbours: the taxi at row 2, column 3 is at a different token offset
  in every map. Here every punctuation character is its own pre-token (a space and a letter may still join),
  so each map row is the same number of tokens and a cell's position *is* its coordinates. On DangerousTaxi's
  pickup level a 4 x 128 policy warmed up for 300 steps reached 64% held-out label accuracy with this
  tokenizer against a plateau near 35% with GPT-2's (a probe during issue 11; its log is not kept in docs/).
- **A vocabulary the size of the domain.** ~2-4k tokens instead of 50,257: the embedding and its dense Adam
  update shrink from 6.4M to a few hundred thousand parameters, and the reflection model's output layer,
  computed at every decoded token, shrinks by the same factor.

Every label of the Reflect-RL alphabet (``"0".."199"``, a-z, A-Z) is one token after a space, as the policy's
label head requires. The trained tokenizer is shipped in the package (``assets/env_tokenizer/tokenizer.json``)
so every machine tokenizes the same way; ``scripts/build_env_tokenizer.py`` rebuilds it from the environments'
text. Hub models keep their own tokenizers.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from transformers import PreTrainedTokenizerFast

EOS = "<|endoftext|>"
ASSET = Path(__file__).resolve().parent.parent / "assets" / "env_tokenizer" / "tokenizer.json"


def train_env_tokenizer(texts: Iterable[str], vocab_size: int = 4096, min_frequency: int = 2):
    """A byte-level BPE (``tokenizers.Tokenizer``) trained on ``texts``; punctuation is never merged."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Punctuation("isolated"),  # each punctuation character alone: grids stay regular
        pre_tokenizers.ByteLevel(add_prefix_space=False),  # then GPT-2's split of words, digits and spaces
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return tok


def wrap(tokenizer_object) -> PreTrainedTokenizerFast:
    """A transformers tokenizer around a ``tokenizers.Tokenizer``: eos = pad = bos = ``<|endoftext|>``."""
    tok = PreTrainedTokenizerFast(tokenizer_object=tokenizer_object, eos_token=EOS, bos_token=EOS,
                                  unk_token=EOS, pad_token=EOS)
    return tok


def env_tokenizer(path: str | Path = ASSET) -> PreTrainedTokenizerFast:
    """The shipped environment tokenizer (or the one at ``path``)."""
    from tokenizers import Tokenizer

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"the environment tokenizer {path} is missing; rebuild it with "
                                "`python scripts/build_env_tokenizer.py`")
    return wrap(Tokenizer.from_file(str(path)))
