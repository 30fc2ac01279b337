"""Reflect-RL (SPEC part A): a frozen reflection model writes an analysis, a trained policy picks a label.

Public API: prompts (``build_*_prompt``, ``encode_*``, ``LabelAlphabet``), the players (``Policy``,
``Reflector``), rollouts (``collect_episodes``), the algorithms' pure losses, ``RLConfig`` + ``train(config,
run_dir)``, and ``evaluate(agent, config, ...)``. Note: ``train`` and ``evaluate`` here are the functions; the
modules are ``frugalft.reflect.train`` / ``frugalft.reflect.evaluate``.
"""

from frugalft.reflect.decoding import generate
from frugalft.reflect.evaluate import EvalResult, bootstrap_interval, evaluate, wilson_interval
from frugalft.reflect.grpo import group_advantages
from frugalft.reflect.policy import Policy, collate_left, score_steps, valid_mask
from frugalft.reflect.ppo import exact_kl, gae, ppo_loss
from frugalft.reflect.prompts import (
    ACTION_MARKER,
    ANALYZE_MARKER,
    DEFAULT_LABELS,
    Encoded,
    LabelAlphabet,
    build_policy_prompt,
    build_reflection_prompt,
    encode_policy_example,
    encode_policy_prompt,
    encode_reflection_example,
    encode_reflection_prompt,
    encode_text,
    render_state,
)
from frugalft.reflect.reflection import ReflectionError, Reflector, check_tokenizer_matches
from frugalft.reflect.reinforce import SuccessReplay, reinforce_loss, returns_to_go
from frugalft.reflect.rollout import Episode, EpisodeSpec, OraclePolicy, RandomPolicy, Step, collect_episodes
from frugalft.reflect.train import Players, RLConfig, build_players, load_lm, train

__all__ = [
    "ACTION_MARKER",
    "ANALYZE_MARKER",
    "DEFAULT_LABELS",
    "Encoded",
    "Episode",
    "EpisodeSpec",
    "EvalResult",
    "LabelAlphabet",
    "OraclePolicy",
    "Players",
    "Policy",
    "RLConfig",
    "RandomPolicy",
    "ReflectionError",
    "Reflector",
    "Step",
    "SuccessReplay",
    "bootstrap_interval",
    "build_players",
    "build_policy_prompt",
    "build_reflection_prompt",
    "check_tokenizer_matches",
    "collate_left",
    "collect_episodes",
    "encode_policy_example",
    "encode_policy_prompt",
    "encode_reflection_example",
    "encode_reflection_prompt",
    "encode_text",
    "evaluate",
    "exact_kl",
    "gae",
    "generate",
    "group_advantages",
    "load_lm",
    "ppo_loss",
    "reinforce_loss",
    "render_state",
    "returns_to_go",
    "score_steps",
    "train",
    "valid_mask",
    "wilson_interval",
]
