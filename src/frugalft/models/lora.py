"""LoRA adapters through peft, with target modules chosen per architecture."""

from __future__ import annotations

from dataclasses import dataclass

from peft import LoraConfig, PeftModel, get_peft_model
from transformers import PreTrainedModel

# Attention and MLP projections by model_type; peft's own defaults cover fewer modules for some.
LORA_TARGETS: dict[str, list[str]] = {
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "qwen3": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "gemma": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "phi3": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
    "gpt_neox": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
    "opt": ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"],
}


@dataclass
class LoraSettings:
    r: int = 16  # the paper's table: r=16, alpha=8 (its code defaulted to r=64, alpha=16)
    alpha: int = 8
    dropout: float = 0.05
    targets: list[str] | None = None  # None: LORA_TARGETS by model type, else peft's default


def add_lora(model: PreTrainedModel, settings: LoraSettings | None = None) -> PeftModel:
    settings = settings or LoraSettings()
    targets = settings.targets or LORA_TARGETS.get(model.config.model_type)
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
        # GPT-2's Conv1D stores weights transposed; peft needs to know.
        fan_in_fan_out=model.config.model_type == "gpt2",
    )
    return get_peft_model(model, config)
