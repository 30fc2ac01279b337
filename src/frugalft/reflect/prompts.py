"""The two prompts of Reflect-RL, the label alphabet, and their token-level encodings (SPEC A.1, A.2).

Reflection prompt (the frozen reflection model continues it with a short analysis)::

    # Task:
    ...
    # Map:
    ...
    # Analyze:

Policy prompt (the policy emits one label token after ``# Action:``)::

    # Task:
    ...
    # Reflection:
    <the reflection text>          (absent in the no-reflection baselines)
    # Actions:
    0. south
    1. north
    # Action:

The label after ``# Action:`` is one token of the form ``" <label>"`` (a space, then the label), which is how
``frugalft.models.label_token_ids`` reads it. Every example, for SFT and for RL, is encoded here once into token
ids plus a target mask and stored as ids from then on: text is never re-tokenised between turns, so the ids the
policy was trained on are the ids it is sampled from.
"""

from __future__ import annotations

import random
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from transformers import PreTrainedTokenizerBase

from frugalft.models import LabelError, label_token_ids

ANALYZE_MARKER = "# Analyze:"
ACTION_MARKER = "# Action:"
REFLECTION_TITLE = "# Reflection:"
ACTIONS_TITLE = "# Actions:"
LABEL_PREFIX = " "  # the label token is " 3", " b", ...: the space that follows "# Action:" belongs to it

# The authors' alphabet: "0".."199", then a-z, then A-Z (252 labels; all single GPT-2 BPE tokens after a space).
DEFAULT_LABELS: tuple[str, ...] = (
    tuple(str(i) for i in range(200)) + tuple(string.ascii_lowercase) + tuple(string.ascii_uppercase)
)


# ---- text ------------------------------------------------------------------------------------------------
def section_title(key: str) -> str:
    """``"last_result"`` -> ``"# Last result:"``."""
    return f"# {key.replace('_', ' ').capitalize()}:"


def render_state(parts: Mapping[str, str]) -> str:
    """The state sections in their given order, each under its title (no action list)."""
    return "\n".join(f"{section_title(k)}\n{str(v).rstrip()}" for k, v in parts.items())


def build_reflection_prompt(parts: Mapping[str, str]) -> str:
    """State sections, then ``# Analyze:`` on its own line; the reflection continues after a newline."""
    return f"{render_state(parts)}\n{ANALYZE_MARKER}\n"


def build_policy_prompt(
    parts: Mapping[str, str],
    reflection: str | None,
    actions: Sequence[str],
    labels: Sequence[str],
) -> str:
    """State sections, the reflection (when not None), the ``<label>. <action>`` list, then ``# Action:``."""
    if len(labels) != len(actions):
        raise ValueError(f"{len(actions)} actions but {len(labels)} labels")
    if not actions:
        raise ValueError("no actions to choose from (the episode is over?)")
    broken = [a for a in actions if "\n" in a]
    if broken:
        raise ValueError(f"actions must be one line each (the list is one action per line): {broken[:3]}")
    lines = [render_state(parts)]
    if reflection is not None:
        lines += [REFLECTION_TITLE, reflection.strip()]
    lines.append(ACTIONS_TITLE)
    lines += [f"{label}. {action}" for label, action in zip(labels, actions, strict=True)]
    lines.append(ACTION_MARKER)
    return "\n".join(lines)


def list_token_ids(tokenizer: PreTrainedTokenizerBase) -> tuple[int, int]:
    """``(line end, separator)``: the tokens that end each line of a policy prompt and follow each listed label
    (the ``.`` of ``<label>. <action>``), which the policy's line and text heads find the listed actions by.

    Raises unless each is one token of its own in policy prompts, so that a prompt's last n line ends are the
    ends of its n listed actions and each listed line's action starts after its first separator."""
    nl, dot = encode_text(tokenizer, "\n"), encode_text(tokenizer, ".")
    text = build_policy_prompt({"task": "put a mug in cabinet 2"}, "go to cabinet 2", ["go to cabinet 2", "look"],
                               ["7", "b"])
    ids = encode_text(tokenizer, text)
    if len(nl) != 1 or ids.count(nl[0]) != text.count("\n"):
        raise ValueError("this tokenizer does not keep a line break as a token of its own in policy prompts; "
                         "use the label head (policy_head: label)")
    if len(dot) != 1 or ids.count(dot[0]) != text.count("."):
        raise ValueError("this tokenizer does not keep '.' as a token of its own in policy prompts; use the "
                         "label head (policy_head: label)")
    return nl[0], dot[0]


# ---- labels ----------------------------------------------------------------------------------------------
@dataclass
class LabelAlphabet:
    """The labels actions are listed under, and how a step picks which ones.

    ``shuffle=False``: the first ``n`` labels in order (``0, 1, 2, ...``). ``shuffle=True``: a random subset of
    ``n`` labels in random order, drawn from the caller's RNG, so the policy must read the list instead of
    memorising positions (SPEC A.2).
    """

    labels: tuple[str, ...] = DEFAULT_LABELS
    shuffle: bool = False
    prefix: str = LABEL_PREFIX
    _token_ids: list[int] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.labels = tuple(self.labels)
        if len(set(self.labels)) != len(self.labels):
            raise LabelError("the label alphabet repeats a label")
        if not self.labels:
            raise LabelError("the label alphabet is empty")

    def __len__(self) -> int:
        return len(self.labels)

    def check(self, tokenizer: PreTrainedTokenizerBase) -> list[int]:
        """Token id of each label (alphabet order); LabelError names every label that is not one token."""
        self._token_ids = label_token_ids(tokenizer, self.labels, self.prefix)
        return list(self._token_ids)

    @property
    def token_ids(self) -> list[int]:
        if self._token_ids is None:
            raise RuntimeError("call LabelAlphabet.check(tokenizer) first")
        return list(self._token_ids)

    def pick(self, n: int, rng: random.Random | None = None) -> list[int]:
        """Alphabet indices of the labels for ``n`` actions (in list order)."""
        if n > len(self.labels):
            raise LabelError(f"{n} actions but only {len(self.labels)} labels in the alphabet")
        if not self.shuffle:
            return list(range(n))
        if rng is None:
            raise ValueError("a shuffled alphabet needs an rng (random.Random) to stay reproducible")
        return rng.sample(range(len(self.labels)), n)

    def strings(self, indices: Sequence[int]) -> list[str]:
        return [self.labels[i] for i in indices]


# ---- token ids + target masks ----------------------------------------------------------------------------
@dataclass
class Encoded:
    """One example as token ids; ``target_mask[i] = 1`` where ``input_ids[i]`` is a target (loss) token."""

    input_ids: list[int]
    target_mask: list[int]

    @property
    def prompt_length(self) -> int:
        return self.target_mask.index(1) if 1 in self.target_mask else len(self.input_ids)

    def to_dict(self) -> dict[str, list[int]]:
        return {"input_ids": list(self.input_ids), "target_mask": list(self.target_mask)}


def encode_text(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of ``text`` without special tokens (the one tokenisation every prompt goes through)."""
    return list(tokenizer.encode(text, add_special_tokens=False))


def encode_reflection_prompt(tokenizer: PreTrainedTokenizerBase, parts: Mapping[str, str]) -> list[int]:
    return encode_text(tokenizer, build_reflection_prompt(parts))


def encode_reflection_example(
    tokenizer: PreTrainedTokenizerBase, parts: Mapping[str, str], reflection: str
) -> Encoded:
    """Reflection SFT example: prompt ids (mask 0), then the reflection's ids and eos (mask 1)."""
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos token; the reflection target needs one to end on")
    prompt = encode_reflection_prompt(tokenizer, parts)
    target = encode_text(tokenizer, reflection.strip()) + [tokenizer.eos_token_id]
    return Encoded(prompt + target, [0] * len(prompt) + [1] * len(target))


def encode_policy_prompt(
    tokenizer: PreTrainedTokenizerBase,
    parts: Mapping[str, str],
    reflection: str | None,
    actions: Sequence[str],
    labels: Sequence[str],
) -> list[int]:
    return encode_text(tokenizer, build_policy_prompt(parts, reflection, actions, labels))


def encode_policy_example(
    tokenizer: PreTrainedTokenizerBase,
    parts: Mapping[str, str],
    reflection: str | None,
    actions: Sequence[str],
    labels: Sequence[str],
    target_index: int,
    prefix: str = LABEL_PREFIX,
) -> Encoded:
    """Policy SFT example: prompt ids (mask 0), then the one token of ``labels[target_index]`` (mask 1)."""
    if not 0 <= target_index < len(actions):
        raise ValueError(f"target_index {target_index} is not an index of the {len(actions)} actions")
    prompt = encode_policy_prompt(tokenizer, parts, reflection, actions, labels)
    (label_id,) = label_token_ids(tokenizer, [labels[target_index]], prefix)
    return Encoded(prompt + [label_id], [0] * len(prompt) + [1])
