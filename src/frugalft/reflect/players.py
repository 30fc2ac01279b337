"""The two players of Reflect-RL and the config that builds them: ``RLConfig`` (every RL setting, with what it
means), ``Players`` (policy, tokenizer, label alphabet, reflection model, reference) and ``build_players``.

Kept apart from the training loop (``reflect/train.py``) so that the rollout backends and the evaluation, which
the loop uses, can name these types without importing the loop.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from frugalft.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint
from frugalft.models import LoraSettings, add_lora, load_model
from frugalft.models.precision import Autocast
from frugalft.reflect.policy import Policy, head_token_ids
from frugalft.reflect.prompts import DEFAULT_LABELS, LabelAlphabet
from frugalft.reflect.reflection import ReflectionError, Reflector, check_tokenizer_matches
from frugalft.reflect.rollout import Reference


@dataclass
class RLConfig:
    # reinforce: the authors' algorithm (SPEC A.3); ppo: clipped PPO with a value head; grpo: group-relative
    # advantages over group_size plays of each task, no critic (frugalft.reflect.grpo)
    algorithm: Literal["reinforce", "ppo", "grpo"] = "reinforce"
    env: str = "DangerousTaxi"  # short name or gymnasium id (frugalft.envs)
    env_kwargs: dict[str, Any] = field(default_factory=dict)  # constructor options, e.g. {horizon: 15}
    # The policy: base model (embedded name, directory or hub id) and the warm-up result to start from: a
    # directory save_pretrained wrote (replaces policy_model) or a frugalft checkpoint of policy_model.
    policy_model: str = "tiny"
    policy_init: str | None = None
    # The frozen reflection model, same forms; null = no reflection (the "no reflection" baselines).
    reflection_model: str | None = None
    reflection_init: str | None = None
    reflection_tokens: int = 64  # cap on generated tokens per reflection (the paper: ~100)
    reflection_temperature: float = 1.0  # sampled, as in the paper
    # Reflection decoder (frugalft.reflect.reflection): loop (transformers' forward per token, per-token draws
    # from the episode's generator), static (static KV cache, CUDA graphs on CUDA, counter-based uniforms on
    # the device), auto: static for a GPT-2-architecture model on CUDA, else loop.
    reflection_decoder: Literal["auto", "loop", "static"] = "auto"
    finetune: Literal["full", "lora"] = "full"  # full for tiny models on CPU; lora as the paper at scale
    lora: LoraSettings = field(default_factory=LoraSettings)  # the paper's table: r=16, alpha=8
    iterations: int = 200  # RL iterations (one batch of num_envs episodes each)
    num_envs: int = 4  # episodes per iteration, played in parallel (the authors: 4)
    temperature: float = 1.0  # sampling temperature in training (the paper: 1)
    labels: list[str] | None = None  # label alphabet; null = the authors' "0".."199", a-z, A-Z
    shuffle_labels: bool = False  # a random subset of labels per step, so the policy must read the list
    # How the policy scores the listed actions (frugalft.reflect.policy): "label" (the paper's), "line" (a
    # pointer at each listed line) or "text" (each action's likelihood); the policy's warm-up must use the same.
    policy_head: Literal["label", "line", "text"] = "label"
    curriculum: Literal["levels", "mixed"] = "levels"  # levels: easiest first, budgets ~ task counts
    levels: list[int] | None = None  # which levels to train on; null = all of the environment's
    task_ids: list[str] | None = None  # explicit training tasks (overrides levels' task lists)
    max_tasks_per_level: int | None = None  # keep only the first N train tasks of each level (small fixed sets)
    # Optimiser (the authors: Adam, lr 2e-4, weight decay 1e-3, gradient clipping 0.3; SPEC A.3).
    lr: float = 2e-4
    weight_decay: float = 1e-3
    max_grad_norm: float = 0.3
    minibatch: int = 32  # steps per forward/backward chunk (memory only; REINFORCE still takes one step)
    # The update's forward and backward under bf16 autocast (frugalft.models.precision), weights and optimizer in
    # float32; rollouts stay float32. off by default: every packaged table was made without it. PPO's ratio and
    # KL then compare bf16 log-probs with the rollout's float32 ones (the first epoch's ratio is not exactly 1).
    update_autocast: Autocast = "off"
    baseline: Literal["none", "batch_mean"] = "none"  # REINFORCE baseline; the authors used none
    entropy_coef: float = 0.0  # entropy bonus (the authors: none)
    replay_capacity: int = 50  # success-replay buffer size (the authors: 50); 0 disables the replay step
    replay_episodes: int = 4  # successful episodes per replay step
    # PPO (the authors' option: clip 0.1, 3 epochs).
    ppo_epochs: int = 3
    ppo_clip: float = 0.1
    vf_coef: float = 0.5
    kl_coef: float = 0.05  # KL penalty to the reference (warm-up) policy: PPO, and GRPO when > 0
    gamma: float = 1.0  # PPO's and GRPO's discount (REINFORCE: always 1); undiscounted, as the authors
    gae_lambda: float = 0.95
    # GRPO (frugalft.reflect.grpo): the baseline is the other plays of the same task; kl_coef as above.
    group_size: int = 4  # episodes of the same task per group (num_envs must be a multiple of it)
    grpo_normalize_std: bool = True  # divide by the group's std + 1e-6; false: mean only (Dr. GRPO / RLOO)
    # episode: every step gets its episode's group-normalised return; step: each step's return-to-go,
    # normalised among the group's steps at the same step index
    grpo_advantage: Literal["episode", "step"] = "episode"
    track_kl: bool = True  # compute the kl metric for REINFORCE/GRPO too (one more forward per step)
    seed: int = 0
    eval_interval: int = 0  # evaluate every N iterations (0: never during training)
    eval_split: str = "valid"  # periodic evaluation during RL: never the test split (that is read once, by the table)
    eval_max_tasks: int | None = 20  # test tasks per level for the periodic evaluation (null: all)
    eval_greedy: bool = False  # the paper evaluates by sampling at temperature 1
    checkpoint_interval: int = 25  # iterations between checkpoints (and one at the end)
    device: str = "auto"
    dtype: str = "auto"
    # Scale-out (docs/scaling.md); the episodes and the update do not depend on these, only the wall clock.
    workers: int = 0  # rollout workers as Ray actors, each playing a share of every batch; 0 = in this process
    ray_address: str | None = None  # a running Ray cluster (auto, ray://head:10001); null = start a local one
    cpus_per_worker: float = 1.0  # CPUs Ray reserves per rollout worker (its torch threads)
    gpus_per_worker: float = 0.0  # GPUs per rollout worker; fractions put several workers on one GPU

    def __post_init__(self) -> None:
        if self.algorithm == "grpo":
            groups_per_batch(self)


def groups_per_batch(config: RLConfig) -> int:
    """GRPO: tasks per iteration (``num_envs / group_size``); a ValueError when that is not a whole number."""
    if config.group_size < 2:
        raise ValueError(f"grpo needs group_size >= 2 (plays of one task to compare), got {config.group_size}")
    if config.num_envs % config.group_size:
        raise ValueError(f"grpo: num_envs={config.num_envs} is not a multiple of group_size={config.group_size} "
                         "(each iteration plays num_envs / group_size tasks, group_size times each)")
    return config.num_envs // config.group_size


# ---- the two players -------------------------------------------------------------------------------------
@dataclass
class Players:
    policy: Policy
    tokenizer: Any
    alphabet: LabelAlphabet
    reflector: Reflector
    reference: Reference | None


def _resolve_checkpoint(path: Path) -> Path | None:
    """A frugalft checkpoint directory, or the folder whose LATEST names one; None if ``path`` is neither."""
    if (path / "meta.json").exists() and (path / "model.safetensors").exists():
        return path
    for folder in (path, path / "checkpoints"):
        if (folder / "LATEST").exists():
            return latest_checkpoint(folder)
    return None


def load_lm(base: str, init: str | None, config: RLConfig, what: str):
    """Load ``base`` (or ``init`` when it is a model directory), then apply ``init`` when it is a checkpoint.

    A checkpoint holding a LoRA adapter is applied with ``config.lora``'s settings and merged into the weights.
    """
    ckpt = None
    if init is not None:
        path = Path(init).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"{what} init {init} does not exist")
        if (path / "config.json").exists():
            return load_model(str(path), device=config.device, dtype=config.dtype, seed=config.seed)
        ckpt = _resolve_checkpoint(path)
        if ckpt is None:
            raise CheckpointError(f"{what} init {init} is neither a model directory (config.json) nor a frugalft "
                                  "checkpoint (meta.json + model.safetensors, or a folder with LATEST)")
    lm, tok = load_model(base, device=config.device, dtype=config.dtype, seed=config.seed)
    if ckpt is not None:
        from safetensors.torch import load_file

        keys = load_file(str(ckpt / "model.safetensors")).keys()
        try:
            if any("lora_" in k for k in keys):
                lm = add_lora(lm, config.lora)
                load_checkpoint(ckpt, lm, restore_rng=False)
                lm = lm.merge_and_unload()
            else:
                load_checkpoint(ckpt, lm, restore_rng=False)
        except (CheckpointError, RuntimeError) as e:
            raise ReflectionError(
                f"{what} checkpoint {ckpt} does not fit {base!r} (a different architecture or tokenizer/vocabulary?): "
                f"{e}") from e
    return lm, tok


def build_players(config: RLConfig) -> Players:
    """Load the policy (with label head, value head for PPO, LoRA when asked), reference and reflection model."""
    lm, tok = load_lm(config.policy_model, config.policy_init, config, "policy")
    check_tokenizer_matches(lm, tok, "policy model")
    tok.padding_side = "left"
    alphabet = LabelAlphabet(tuple(config.labels) if config.labels else DEFAULT_LABELS, shuffle=config.shuffle_labels)
    label_ids = alphabet.check(tok)  # LabelError names labels that are not single tokens
    if config.finetune == "lora":
        lm = add_lora(lm, config.lora)
    else:
        for p in lm.parameters():
            p.requires_grad_(True)
    lm.eval()  # no dropout: the update must score exactly what the rollout sampled
    policy = Policy(lm, label_ids, tok.pad_token_id, value_head=config.algorithm == "ppo", head=config.policy_head,
                    **head_token_ids(tok, config.policy_head)).to(lm.device)
    # PPO's penalty and GRPO's (kl_coef > 0) need the reference; track_kl makes one for the kl metric only.
    needs_ref = config.algorithm == "ppo" or (config.algorithm == "grpo" and config.kl_coef > 0) or config.track_kl
    reference = _make_reference(policy, config) if needs_ref else None
    reflector = Reflector(None, None, enabled=False)
    if config.reflection_model is not None or config.reflection_init is not None:
        r_lm, r_tok = load_lm(config.reflection_model or config.policy_model, config.reflection_init, config,
                              "reflection")
        try:
            check_tokenizer_matches(r_lm, r_tok, "reflection model")
        except ReflectionError as e:
            raise ReflectionError(f"{e} ({config.reflection_init or config.reflection_model})") from None
        reflector = Reflector(r_lm, r_tok, max_new_tokens=config.reflection_tokens,
                              temperature=config.reflection_temperature, decoder=config.reflection_decoder)
    return Players(policy, tok, alphabet, reflector, reference)


def _make_reference(policy: Policy, config: RLConfig) -> Reference:
    """The policy as it starts RL: LoRA -> the same model with adapters off; full -> a frozen copy."""
    temperature = config.temperature
    if config.finetune == "lora":
        def lora_ref(prompts: list[list[int]], valid: torch.Tensor, labels: list[list[int]]) -> torch.Tensor:
            with torch.no_grad(), policy.lm.disable_adapter():
                logits, _ = policy(prompts, valid, temperature, labels)
            return torch.log_softmax(logits, -1)
        return lora_ref
    frozen = copy.deepcopy(policy)
    frozen.value_head = None
    frozen.requires_grad_(False)

    def full_ref(prompts: list[list[int]], valid: torch.Tensor, labels: list[list[int]]) -> torch.Tensor:
        with torch.no_grad():
            logits, _ = frozen(prompts, valid, temperature, labels)
        return torch.log_softmax(logits, -1)
    return full_ref
