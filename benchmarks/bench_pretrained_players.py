"""SmolLM2-135M with LoRA as both Reflect-RL players on ALFWorld, on this CPU (issue 25 item 3).

Measured in one run, for ``--model`` (default ``smollm2-135m``, LoRA r=16, alpha=8, dropout 0.05) and for the
side the packaged ALFWorld config uses (``--baseline``, default ``tiny-env``, full fine-tuning), so that every
number has its ratio:

1. reflection warm-up: examples/s of frugalft's warm-up step (``masked_lm_loss`` on ``collate_right`` batches of
   ``encode_reflection_set``; forward + backward + gradient clipping + AdamW on the trainable parameters, under
   the warm-up's autocast and attention: the model comes from ``warmup._load_base``) on rows of an ALFWorld
   ``reflection.jsonl`` (``frugalft rl data``), batch ``--batch``, batches drawn by ``batch_indices`` with the
   packaged config's ``length_groups``; two untimed steps, then ``--steps`` timed;
2. the anchor (``--model`` only): the same batches (same rows, same padding, labels -100 off the reflection)
   through a peft + Hugging Face ``Trainer`` (``trainer.train()`` with ``max_steps``, each step timed from
   ``on_step_begin`` to ``on_step_end`` as ``bench_sft.py`` does; the model's own full-vocabulary loss; bf16
   autocast when ours has it); reported as ours / Trainer;
3. policy warm-up: examples/s of the label-head policy step on ``policy.jsonl`` rows (``-score_steps(...)
   .logprob.mean()`` on a ``Policy``: the loss ``warmup.train_policy`` builds for ``policy_loss: label_head``),
   prompts cut as the warm-up cuts them (``sft_max_length``: ``max_length`` 1024, never past the model's
   positions); the mean prompt tokens and the share of prompts at the cut are reported;
4. rollout: environment steps/s of the RL rollout (``backends.play``: ``collect_episodes`` with the frozen
   reflection model, greedy reflections of at most ``--reflection-tokens``, and the policy sampling) on ALFWorld
   games (horizon 20, ``search`` oracle), ``--num-envs`` episodes at a time (the training loop's
   ``episode_specs``) until ``--rollout-steps`` environment steps are played; then one REINFORCE update on the
   last batch (the loop's ``update_rule``; ``--no-update`` skips it).

SmolLM2's tokenizer splits the authors' labels ``0``..``199`` into digits (a label must be one token after a
space), so its side lists actions under the letters and the single-token letter pairs instead; the JSON says
which alphabet each side used.

Last, a **projection** (not a measurement) of the packaged ALFWorld table's wall time per seed with each model,
from the measured rates: warm-ups of 800 (reflection) and 500 (policy) steps at batch 16, the policy-data
reflections, 30 RL iterations x 8 envs x up to 20 steps, tests of 50 games x 20 steps.

    python benchmarks/bench_pretrained_players.py [--model smollm2-135m] [--baseline tiny-env] [--steps 10]
        [--batch 8] [--rollout-steps 160] [--num-envs 8] [--threads 2] [--out runs/bench/pretrained_players.json]
    nice -n 19 python benchmarks/bench_pretrained_players.py --model tiny-test --steps 1 --rollout-steps 16 \\
        --num-envs 2 --out /tmp/bpp.json     # smoke test, ~1 min

With the defaults, expect tens of minutes on 2 idle cores, nearly all of it SmolLM2's side (at the ~126
tokens/s of its LoRA SFT step in bench_sft.py, a warm-up step of 8 ALFWorld examples takes 10-30 s, and the
rollout decodes 32 reflection tokens per environment step); ``--no-update`` saves the RL update's share.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import platform
import random
import string
import sys
import tempfile
import time
from collections.abc import Callable
from itertools import product
from pathlib import Path
from typing import Any

import torch

from frugalft.atomic import write_json
from frugalft.models import LabelError, LoraSettings, add_lora, load_model, max_positions
from frugalft.parallel import SINGLE
from frugalft.reflect.backends import make_vec, play
from frugalft.reflect.players import RLConfig, build_players
from frugalft.reflect.policy import Policy, score_steps
from frugalft.reflect.prompts import DEFAULT_LABELS, LabelAlphabet
from frugalft.reflect.reinforce import SuccessReplay
from frugalft.reflect.rollout import RolloutStats
from frugalft.reflect.train import episode_specs, task_groups, update_rule
from frugalft.reflect.warmup import (
    WarmupConfig,
    _load_base,  # the warm-up's own model loading: load_model + use_training_attention + LoRA + train()
    alphabet_of,
    autocast_context,
    batch_indices,
    collate_right,
    encode_policy_set,
    encode_reflection_set,
    masked_lm_loss,
    read_jsonl,
    sft_max_length,
)
from frugalft.seeding import seed_everything

LORA = LoraSettings(r=16, alpha=8, dropout=0.05)  # the packaged configs' (and the paper's) LoRA

# The packaged ALFWorld config (src/frugalft/configs/rl/alfworld_cpu.yaml): what the projection sizes.
PACKAGED = {"reflection_steps": 800, "policy_steps": 500, "batch_size": 16, "length_groups": 8,
            "rl_iterations": 30, "rl_num_envs": 8, "horizon": 20, "test_games": 50, "reflection_tokens": 32,
            "seeds": 3, "budget_minutes": 120}


# ---- helpers ---------------------------------------------------------------------------------------------
def labels_for(tokenizer: Any) -> list[str] | None:
    """None (the authors' alphabet) when its labels are single tokens for ``tokenizer``; else every letter and
    letter pair that is one token after a space (SmolLM2 splits numbers into digits)."""
    try:
        LabelAlphabet(DEFAULT_LABELS).check(tokenizer)
        return None
    except LabelError:
        pass
    pairs = ["".join(p) for p in product(string.ascii_uppercase, repeat=2)]
    pairs += ["".join(p) for p in product(string.ascii_lowercase, repeat=2)]
    out = []
    for label in [*string.ascii_letters, *pairs]:
        try:
            LabelAlphabet((label,)).check(tokenizer)
            out.append(label)
        except LabelError:
            continue
    return out


def warmup_config(model: str, finetune: str, labels: list[str] | None, args: argparse.Namespace) -> WarmupConfig:
    return WarmupConfig(model=model, device="cpu", autocast=args.autocast, finetune=finetune, lora=LORA,
                        batch_size=args.batch, length_groups=args.length_groups, labels=labels,
                        lr=2e-4 if finetune == "lora" else 1e-3, seed=0)


def draw_batches(lengths: list[int], args: argparse.Namespace) -> list[list[int]]:
    """The warm-up's batches ``0 .. steps+1`` (seed 0), length-grouped as the packaged config draws them."""
    return [batch_indices(len(lengths), args.batch, 0, step, lengths, args.length_groups)
            for step in range(args.steps + 2)]


def timed_steps(loss_of: Callable[[list[int]], torch.Tensor], lm: torch.nn.Module, batches: list[list[int]],
                cfg: WarmupConfig) -> dict[str, Any]:
    """The warm-up's optimizer step (``warmup._fit``: autocast forward, backward, clip, AdamW) on each batch;
    the first two untimed. Examples/s and seconds per step of the timed ones."""
    params = [p for p in lm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    autocast = autocast_context(cfg, torch.device("cpu"))
    times, losses = [], []
    for k, idx in enumerate(batches):
        start = time.perf_counter()
        with autocast:
            loss = loss_of(idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        if k >= 2:
            times.append(time.perf_counter() - start)
        losses.append(loss.item())
    examples = sum(len(b) for b in batches[2:])
    return {"examples_per_s": examples / sum(times), "s_per_step": sum(times) / len(times),
            "timed_steps": len(times), "first_loss": losses[0], "last_loss": losses[-1],
            "trainable_params": sum(p.numel() for p in params)}


# ---- 1 + 2: reflection warm-up and the Trainer anchor ----------------------------------------------------
def reflection_warmup(cfg: WarmupConfig, rows: list[dict],
                      args: argparse.Namespace) -> tuple[dict, list, list[list[int]], int]:
    """Ours on the reflection set; returns the result, the encoded examples and the batches (for the anchor)."""
    lm, tok = _load_base(cfg)
    max_len = sft_max_length(cfg, lm)
    refl = encode_reflection_set(tok, rows, max_len)
    batches = draw_batches([len(e[0]) for e in refl], args)

    def loss_of(idx: list[int]) -> torch.Tensor:
        ids, attn, target = collate_right([refl[i][0] for i in idx], [refl[i][1] for i in idx], tok.pad_token_id)
        return masked_lm_loss(lm, ids, attn, target)

    out = timed_steps(loss_of, lm, batches, cfg)
    timed = [i for b in batches[2:] for i in b]
    out.update(example_tokens=sum(len(e[0]) for e in refl) / len(refl),
               timed_example_tokens=sum(len(refl[i][0]) for i in timed) / len(timed),
               target_tokens=sum(sum(e[1]) for e in refl) / len(refl),
               padded_tokens_per_step=sum(len(b) * max(len(refl[i][0]) for i in b) for b in batches[2:])
               / len(batches[2:]),
               max_length=max_len, attention=getattr(lm.config, "_attn_implementation", None),
               autocast=isinstance(autocast_context(cfg, torch.device("cpu")), torch.autocast))
    return out, refl, batches, tok.pad_token_id


def hf_anchor(cfg: WarmupConfig, refl: list, batches: list[list[int]], pad: int, bf16: bool) -> dict[str, Any]:
    """The same batches through peft + transformers' ``Trainer`` (as ``bench_sft.run_hf``), model's own loss."""
    from transformers import Trainer, TrainerCallback, TrainingArguments

    seed_everything(0)
    model, _ = load_model(cfg.model, device="cpu", seed=0)
    if cfg.finetune == "lora":
        model = add_lora(model, cfg.lora)
    collated = []
    for idx in batches:
        ids, attn, target = collate_right([refl[i][0] for i in idx], [refl[i][1] for i in idx], pad)
        collated.append({"input_ids": ids, "attention_mask": attn, "labels": ids.masked_fill(target == 0, -100)})

    # The same loss on the same batch, dropout off: ours (vocabulary head at the targets) and the model's own.
    model.eval()
    with torch.no_grad():
        b = collated[0]
        ours = float(masked_lm_loss(model, b["input_ids"], b["attention_mask"], (b["labels"] != -100).long()))
        theirs = float(model(**b).loss)
    model.train()

    class Batches(torch.utils.data.Dataset):
        """Item k is batch k (already collated); read in order (sequential sampler, batch size 1)."""

        def __len__(self) -> int:
            return len(collated)

        def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
            return collated[k]

    times: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, a, s, c, **kw) -> None:
            self.t = time.perf_counter()

        def on_step_end(self, a, s, c, **kw) -> None:
            times.append(time.perf_counter() - self.t)

    extra = {}
    if "train_sampling_strategy" in {f.name for f in dataclasses.fields(TrainingArguments)}:
        extra["train_sampling_strategy"] = "sequential"  # batch k at step k, as ours
    with tempfile.TemporaryDirectory() as tmp:
        targs = TrainingArguments(output_dir=tmp, per_device_train_batch_size=1, learning_rate=cfg.lr,
                                  max_steps=len(collated), max_grad_norm=cfg.grad_clip, logging_steps=10_000,
                                  save_strategy="no", report_to=[], use_cpu=True, dataloader_num_workers=0, seed=0,
                                  disable_tqdm=True, remove_unused_columns=False, bf16=bf16, **extra)
        trainer = Trainer(model=model, args=targs, train_dataset=Batches(), data_collator=lambda items: items[0],
                          callbacks=[StepTimer()])
        res = trainer.train()
    timed = times[2:]
    examples = sum(len(b) for b in batches[2: 2 + len(timed)])
    out = {"examples_per_s": examples / sum(timed), "s_per_step": sum(timed) / len(timed),
           "timed_steps": len(timed), "loss": res.training_loss, "bf16": bf16,
           "sequential_batches": bool(extra), "attention": getattr(model.config, "_attn_implementation", None),
           "loss_check_first_batch": {"ours": ours, "model_loss": theirs}}
    return out


# ---- 3: policy warm-up ----------------------------------------------------------------------------------
def policy_warmup(cfg: WarmupConfig, rows: list[dict], args: argparse.Namespace) -> dict[str, Any]:
    lm, tok = _load_base(cfg)
    alphabet = alphabet_of(cfg)
    policy = Policy(lm, alphabet.check(tok), tok.pad_token_id)  # as warmup.train_policy
    max_len = sft_max_length(cfg, lm)
    examples = encode_policy_set(tok, rows, alphabet, max_len, cfg.seed)
    batches = draw_batches([len(e.prompt) for e in examples], args)

    def loss_of(idx: list[int]) -> torch.Tensor:  # warmup.train_policy's loss_of, policy_loss: label_head
        batch = [examples[i] for i in idx]
        return -score_steps(policy, [e.prompt for e in batch], [e.labels for e in batch],
                            [e.target for e in batch]).logprob.mean()

    out = timed_steps(loss_of, lm, batches, cfg)
    lengths = [len(e.prompt) for e in examples]
    timed = [i for b in batches[2:] for i in b]
    out.update(prompt_tokens=sum(lengths) / len(lengths), prompt_tokens_max=max(lengths),
               timed_prompt_tokens=sum(lengths[i] for i in timed) / len(timed),
               share_at_cut=sum(n >= max_len - 1 for n in lengths) / len(lengths), max_length=max_len,
               model_positions=max_positions(lm), labels=len(alphabet))
    return out


# ---- 4: rollout ------------------------------------------------------------------------------------------
def rollout(model: str, finetune: str, labels: list[str] | None, args: argparse.Namespace) -> dict[str, Any]:
    cfg = RLConfig(env="ALFWorld", env_kwargs={"data_path": str(args.games), "horizon": args.horizon,
                                               "oracle": "search"},
                   policy_model=model, reflection_model=model, reflection_tokens=args.reflection_tokens,
                   reflection_temperature=0.0, finetune=finetune, lora=LORA, num_envs=args.num_envs, levels=[0],
                   labels=labels, lr=1e-4, track_kl=False, device="cpu", seed=0)
    seed_everything(0)
    players = build_players(cfg)
    vec = make_vec(cfg, "train", cfg.num_envs)
    try:
        _, tasks = task_groups(cfg, vec.envs[0].unwrapped)[0]
        stats, episodes, per_iteration, it = RolloutStats(), [], [], 0
        while stats.env_steps < args.rollout_steps:
            specs = episode_specs(tasks, cfg.seed, 0, it * cfg.num_envs, cfg.num_envs, it * cfg.num_envs)
            before, t = stats.env_steps, time.perf_counter()
            episodes = play(players, cfg, vec, specs, stats)  # the training rollout, as InProcessBackend plays it
            per_iteration.append({"env_steps": stats.env_steps - before, "seconds": time.perf_counter() - t})
            it += 1
    finally:
        vec.close()
    steps = [s for ep in episodes for s in ep.steps]
    rtok = players.reflector.tokenizer
    reflections = [s.reflection for s in steps if s.reflection is not None]
    out: dict[str, Any] = {
        "env_steps": stats.env_steps, "seconds": stats.seconds, "env_steps_per_s": stats.env_steps / stats.seconds,
        "reflect_share": stats.reflect_seconds / stats.seconds, "policy_share": stats.policy_seconds / stats.seconds,
        "reflect_s_per_env_step": stats.reflect_seconds / stats.env_steps,
        "iterations": per_iteration, "num_envs": cfg.num_envs, "horizon": args.horizon,
        "reflection_tokens_cap": cfg.reflection_tokens,
        "last_batch_episode_length": sum(len(ep.steps) for ep in episodes) / len(episodes),
        "last_batch_success": sum(ep.success for ep in episodes) / len(episodes),
        "policy_prompt_tokens": sum(len(s.prompt_ids) for s in steps) / max(len(steps), 1),
        # the reflections' text tokenized again (mean; can exceed the cap by a token or two)
        "reflection_tokens_retokenized": (sum(len(rtok(r, add_special_tokens=False).input_ids) for r in reflections)
                              / len(reflections)) if reflections else 0.0,
    }
    if args.update:  # one REINFORCE update on the last batch, as the loop does after each rollout
        policy = players.policy
        optimizer = torch.optim.Adam([p for p in policy.parameters() if p.requires_grad], lr=cfg.lr,
                                     weight_decay=cfg.weight_decay)
        update = update_rule(cfg, SuccessReplay(cfg.replay_capacity), SINGLE)
        t = time.perf_counter()
        update(policy, optimizer, episodes, random.Random("update-0-0"))
        seconds = time.perf_counter() - t
        out.update(update_seconds=seconds, update_steps=len(steps), update_steps_per_s=len(steps) / seconds)
    return out


# ---- a side, the projection, the table -------------------------------------------------------------------
def side(model: str, finetune: str, args: argparse.Namespace, refl_rows: list[dict], pol_rows: list[dict],
         anchor: bool, out: dict[str, Any], save: Callable[[], None]) -> dict[str, Any]:
    """Fills ``out`` part by part and calls ``save`` after each, so a part that dies (SmolLM2's rollout was
    killed for memory on 24 GB) leaves the parts before it on disk."""
    _, tok = load_model(model, device="cpu", seed=0)
    labels = labels_for(tok)
    cfg = warmup_config(model, finetune, labels, args)
    out |= {"model": model, "finetune": finetune, "lora": dataclasses.asdict(LORA)
                           if finetune == "lora" else None,
                           "labels": "authors' 0..199, a-z, A-Z" if labels is None
                           else f"{len(labels)} letters and letter pairs (single tokens)"}
    t0 = time.time()
    seed_everything(0)
    out["reflection_warmup"], refl, batches, pad = reflection_warmup(cfg, refl_rows, args)
    gc.collect()  # the model of each part goes when its function returns
    print(f"[{model}] reflection warm-up: {out['reflection_warmup']['examples_per_s']:.2f} examples/s", flush=True)
    save()
    if anchor:
        bf16 = out["reflection_warmup"]["autocast"] if args.hf_bf16 == "auto" else args.hf_bf16 == "on"
        out["hf_trainer"] = hf_anchor(cfg, refl, batches, pad, bf16)
        out["reflection_ours_over_trainer"] = (out["reflection_warmup"]["examples_per_s"]
                                               / out["hf_trainer"]["examples_per_s"])
        print(f"[{model}] HF Trainer: {out['hf_trainer']['examples_per_s']:.2f} examples/s", flush=True)
        save()
    del refl
    gc.collect()
    seed_everything(0)
    out["policy_warmup"] = policy_warmup(cfg, pol_rows, args)
    gc.collect()
    print(f"[{model}] policy warm-up: {out['policy_warmup']['examples_per_s']:.2f} examples/s", flush=True)
    save()
    if args.rollout:
        out["rollout"] = rollout(model, finetune, labels, args)
        print(f"[{model}] rollout: {out['rollout']['env_steps_per_s']:.2f} env steps/s", flush=True)
    out["seconds"] = time.time() - t0
    return out


def projection(s: dict[str, Any], policy_rows: int) -> dict[str, float]:
    """Minutes per seed of the packaged ALFWorld table's work at ``s``'s measured rates (upper bounds for the
    episodes: every one runs to the horizon). Not a measurement."""
    p = PACKAGED
    refl, pol = s["reflection_warmup"]["examples_per_s"], s["policy_warmup"]["examples_per_s"]
    r = s["rollout"]
    step_s = 1 / r["env_steps_per_s"]  # with reflection
    step_noreflect_s = step_s - r["reflect_s_per_env_step"]  # the policy and the environment only
    update_s = 1 / r["update_steps_per_s"] if "update_steps_per_s" in r else 1 / pol  # else: a warm-up example
    rl_steps = p["rl_iterations"] * p["rl_num_envs"] * p["horizon"]
    test_steps = p["test_games"] * p["horizon"]
    parts = {
        "reflection_warmup": p["reflection_steps"] * p["batch_size"] / refl,
        # rough: the warm-up writes them at batch 32, up to 64 tokens, sampled; this is the rollout's per-step cost
        "policy_data_reflections": policy_rows * r["reflect_s_per_env_step"],
        "policy_warmup": p["policy_steps"] * p["batch_size"] / pol,
        "noreflect_policy_warmup": p["policy_steps"] * p["batch_size"] / pol,
        "reflect_rl": rl_steps * (step_s + update_s),
        "noreflect_rl": rl_steps * (step_noreflect_s + update_s),
        "tests_with_reflection": 2 * test_steps * step_s,  # sft, reflect_rl
        "tests_without_reflection": 2 * test_steps * step_noreflect_s,  # the two no-reflection controls
    }
    out = {k: v / 60 for k, v in parts.items()}
    out["reflect_chain"] = sum(out[k] for k in ("reflection_warmup", "policy_data_reflections", "policy_warmup",
                                                 "reflect_rl")) + out["tests_with_reflection"] / 2
    out["per_seed"] = sum(v for k, v in out.items() if k != "reflect_chain")
    out["table_all_seeds"] = p["seeds"] * out["per_seed"]  # 2 cores busy either way: --jobs does not divide it
    out["scale_to_fit_budget"] = min(1.0, p["budget_minutes"] / out["table_all_seeds"])
    return out


def print_table(result: dict[str, Any]) -> None:
    sides = [s for s in (result["model_side"], result.get("baseline_side")) if s]
    print(f"\n{'':34}" + "".join(f"{s['model']:>16}" for s in sides) + ("     ratio" if len(sides) == 2 else ""))
    rows = [
        ("reflection warm-up, examples/s", lambda s: s["reflection_warmup"]["examples_per_s"]),
        ("  example tokens (mean)", lambda s: s["reflection_warmup"]["example_tokens"]),
        ("policy warm-up, examples/s", lambda s: s["policy_warmup"]["examples_per_s"]),
        ("  prompt tokens (mean)", lambda s: s["policy_warmup"]["prompt_tokens"]),
        ("  prompts at the cut (share)", lambda s: s["policy_warmup"]["share_at_cut"]),
        ("rollout, env steps/s", lambda s: s["rollout"]["env_steps_per_s"]),
        ("  reflection share of the rollout", lambda s: s["rollout"]["reflect_share"]),
        ("RL update, steps/s", lambda s: s["rollout"].get("update_steps_per_s", float("nan"))),
        ("projected minutes per seed", lambda s: s["projection_minutes"]["per_seed"]),
    ]
    for name, get in rows:
        vals = [get(s) for s in sides]
        line = f"{name:34}" + "".join(f"{v:16.3f}" for v in vals)
        if len(vals) == 2 and vals[1]:
            line += f"{vals[0] / vals[1]:10.3f}"
        print(line)
    m = result["model_side"]
    if "hf_trainer" in m:
        print(f"reflection step, {m['model']}: ours {m['reflection_warmup']['examples_per_s']:.3f} examples/s, "
              f"peft + HF Trainer {m['hf_trainer']['examples_per_s']:.3f} (bf16 {m['hf_trainer']['bf16']}): "
              f"ours / Trainer = {m['reflection_ours_over_trainer']:.2f}x")
    print("\nPROJECTION (from the rates above, not measured): the packaged ALFWorld table per seed, minutes "
          "(every episode to the horizon; validation passes left out)")
    for s in sides:
        pm = s["projection_minutes"]
        print(f"  {s['model']}: " + ", ".join(f"{k} {v:.1f}" for k, v in pm.items()
                                             if k not in ("scale_to_fit_budget",)))
        print(f"    {PACKAGED['seeds']} seeds: {pm['table_all_seeds']:.0f} min against the "
              f"{PACKAGED['budget_minutes']}-min budget" + ("" if pm["scale_to_fit_budget"] >= 1 else
              f": scale the work (warm-up steps, RL iterations, test games, data rows) by ~"
              f"{pm['scale_to_fit_budget']:.2f} to fit"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m", help="both players, LoRA (default smollm2-135m)")
    ap.add_argument("--finetune", default="lora", choices=["lora", "full"], help="for --model")
    ap.add_argument("--baseline", default="tiny-env", help="the packaged config's model, full fine-tuning "
                    "('none': skip)")
    ap.add_argument("--data", type=Path, default=Path("/work/runs/alf-table/seed-0/data"),
                    help="`frugalft rl data` output: reflection.jsonl, policy.jsonl")
    ap.add_argument("--games", type=Path, default=Path("/work/wt-alf/runs/alfworld-games"),
                    help="`frugalft env make-alfworld` output")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10, help="timed warm-up steps (after 2 untimed)")
    ap.add_argument("--length-groups", type=int, default=PACKAGED["length_groups"])
    ap.add_argument("--autocast", default="auto", choices=["auto", "off", "bf16"], help="the warm-up's")
    ap.add_argument("--hf-bf16", default="auto", choices=["auto", "on", "off"],
                    help="the Trainer's bf16 (auto: when our warm-up autocasts)")
    ap.add_argument("--num-envs", type=int, default=8)
    ap.add_argument("--rollout", action=argparse.BooleanOptionalAction, default=True,
                    help="measure the rollout (SmolLM2's was killed for memory on 24 GB with 2 envs)")
    ap.add_argument("--rollout-steps", type=int, default=160, help="env steps to play (whole batches of episodes)")
    ap.add_argument("--horizon", type=int, default=PACKAGED["horizon"])
    ap.add_argument("--reflection-tokens", type=int, default=PACKAGED["reflection_tokens"])
    ap.add_argument("--update", action=argparse.BooleanOptionalAction, default=True,
                    help="time one REINFORCE update on the last rollout batch")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("runs/bench/pretrained_players.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    result: dict[str, Any] = {
        "benchmark": "pretrained_players", "command": "python benchmarks/bench_pretrained_players.py "
        + " ".join(sys.argv[1:]), "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
        "threads": args.threads, "torch": torch.__version__, "load_before": os.getloadavg(),
        "batch": args.batch, "steps": args.steps, "length_groups": args.length_groups, "data": str(args.data),
        "games": str(args.games), "packaged": PACKAGED}
    refl_rows = read_jsonl(args.data / "reflection.jsonl")
    pol_rows = read_jsonl(args.data / "policy.jsonl")
    result.update(reflection_rows=len(refl_rows), policy_rows=len(pol_rows))
    def save() -> None:
        write_json(args.out, result)

    result["model_side"] = {}  # filled in place: each part is on disk as soon as it is measured
    side(args.model, args.finetune, args, refl_rows, pol_rows, True, result["model_side"], save)
    if args.baseline != "none" and args.baseline != args.model:
        result["baseline_side"] = {}
        side(args.baseline, "full", args, refl_rows, pol_rows, False, result["baseline_side"], save)
    if not args.rollout:  # the projection needs the rollout's rates
        result["load_after"] = os.getloadavg()
        save()
        print(f"wrote {args.out} (no rollout: no projection)")
        return
    for key in ("model_side", "baseline_side"):
        if key in result:
            result[key]["projection_minutes"] = projection(result[key], len(pol_rows))
    if "baseline_side" in result:
        m, b = result["model_side"], result["baseline_side"]
        result["ratios_model_over_baseline"] = {
            "reflection_examples_per_s": m["reflection_warmup"]["examples_per_s"]
            / b["reflection_warmup"]["examples_per_s"],
            "policy_examples_per_s": m["policy_warmup"]["examples_per_s"] / b["policy_warmup"]["examples_per_s"],
            "rollout_env_steps_per_s": m["rollout"]["env_steps_per_s"] / b["rollout"]["env_steps_per_s"],
            "projected_minutes_per_seed": m["projection_minutes"]["per_seed"]
            / b["projection_minutes"]["per_seed"]}
    result["load_after"] = os.getloadavg()
    write_json(args.out, result)
    print_table(result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
