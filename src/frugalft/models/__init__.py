"""Models: loading by name, tiny from-scratch models, LoRA, and the value and label heads."""

from frugalft.models.heads import (
    LabelError,
    LabelHead,
    ValueHead,
    check_label_alphabet,
    label_token_ids,
    last_token_hidden,
    trunk_hidden,
)
from frugalft.models.lora import LoraSettings, add_lora
from frugalft.models.registry import (
    EMBEDDED,
    ModelError,
    count_parameters,
    default_library_verbosity,
    load_model,
    max_positions,
    resolve_device,
)

__all__ = [
    "EMBEDDED",
    "LabelError",
    "LabelHead",
    "LoraSettings",
    "ModelError",
    "ValueHead",
    "add_lora",
    "check_label_alphabet",
    "count_parameters",
    "default_library_verbosity",
    "label_token_ids",
    "last_token_hidden",
    "load_model",
    "max_positions",
    "resolve_device",
    "trunk_hidden",
]
