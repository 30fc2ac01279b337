"""Warm-up data (negative examples, JSONL sets and counts) and the SFT warm-up (target-only loss, learning)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import frugalft.envs as envs
from frugalft.reflect.teachers import TeacherConfig
from frugalft.reflect.warmup import (
    WarmupConfig,
    collate_right,
    encode_reflection_set,
    masked_lm_loss,
    read_jsonl,
    train_policy,
    train_reflection,
)
from frugalft.reflect.warmup_data import DATASETS, DataConfig, generate


def _lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def taxi_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    cfg = DataConfig(levels=[0, 2], tasks_per_level=4, negatives_per_episode=2, seed=3,
                     teacher=TeacherConfig(brief=True))
    counts = generate(cfg, out, log=lambda *a: None)
    return out, counts


def _replay(task_id: str, history: list[str]):
    env = envs.make("DangerousTaxi", split="train")
    obs, info = env.reset(seed=0, options={"task_id": task_id})
    oracle_each = []
    for a in history:
        oracle_each.append(env.oracle_action())
        obs, _, _, _, info = env.step(a)
    return env, info, oracle_each


def _history(row: dict) -> list[str]:
    h = row["parts"]["history"]
    return [] if h == "(none yet)" else [line.split(". ", 1)[1] for line in h.splitlines()]


def test_negative_examples_keep_only_the_corrective_step(taxi_data):
    out, counts = taxi_data
    rows = _lines(out / "policy.jsonl")
    corrective = [r for r in rows if r["kind"] == "corrective"]
    assert 0 < len(corrective) <= 2 * counts["episodes"]
    for r in rows:
        history = _history(r)
        env, info, oracle_each = _replay(r["task_id"], history)
        # The recovery label is the oracle's action in the state the row shows (replayed independently).
        assert r["target"] == env.oracle_action() == r["actions"][r["target_index"]]
        assert info["parts"] == r["parts"]
        if r["kind"] == "corrective":
            # Oracle moves up to the mistake, then the one wrong move: the row is the state right after it.
            assert history[:-1] == oracle_each[:-1] and history[-1] == r["mistake"] != oracle_each[-1]
            assert r["reflection"].startswith(f"Mistake: {r['mistake']}")
        else:
            # Positive rows never contain a mistake: the wrong branch itself (and anything after it) is dropped.
            assert history == oracle_each and r["mistake"] is None


def test_jsonl_sets_and_counts(taxi_data):
    out, counts = taxi_data
    n = {name: len(_lines(out / f"{name}.jsonl")) for name in DATASETS}
    stored = json.loads((out / "counts.json").read_text())
    assert stored == counts
    assert all(counts[f"{name}.jsonl"] == n[name] for name in DATASETS)
    assert n["reflection"] == n["policy"] == n["policy_noreflect"] == counts["steps"]
    assert n["policy_noneg"] == n["reflection_noneg"] == counts["steps"] - counts["corrective_steps"]
    assert counts["oracle_steps"] + counts["corrective_steps"] == counts["steps"]  # explore_prob = 0
    assert counts["tasks"] == 8 and counts["behaviour_success_rate"] == 1.0  # the oracle solves every task
    assert all(r["reflection"] is None for r in _lines(out / "policy_noreflect.jsonl"))
    assert not any(r["kind"] == "corrective" for r in _lines(out / "policy_noneg.jsonl"))
    # Sum of oracle trajectory lengths = the BFS distances of the starts (a reference computed another way).
    starts = [r for r in _lines(out / "policy.jsonl") if r["kind"] == "oracle" and r["step"] == 0]
    total = 0
    for r in starts:
        env, _, _ = _replay(r["task_id"], [])
        total += env.privileged()["distance"]
    assert counts["oracle_steps"] == total


def test_exploration_mix_labels_every_state_with_the_oracle(tmp_path):
    cfg = DataConfig(levels=[2], tasks_per_level=3, negatives_per_episode=0, explore_prob=0.5, seed=1,
                     teacher=TeacherConfig(brief=True))
    counts = generate(cfg, tmp_path, log=lambda *a: None)
    assert counts["explore_steps"] > 0 and counts["corrective_steps"] == 0
    for r in _lines(tmp_path / "policy.jsonl"):
        env, _, _ = _replay(r["task_id"], _history(r))
        assert r["target"] == env.oracle_action()


def test_autoexplore_negative_is_a_wrong_cat(tmp_path):
    cfg = DataConfig(env="AutoExplore", levels=[0], tasks_per_level=3, negatives_per_episode=1, seed=0)
    generate(cfg, tmp_path, log=lambda *a: None)
    corrective = [r for r in _lines(tmp_path / "policy.jsonl") if r["kind"] == "corrective"]
    assert corrective and all(r["mistake"].startswith("cat ") for r in corrective)
    assert all("was a mistake" in r["reflection"] for r in corrective)


# ---- warm-up ----------------------------------------------------------------------------------------------


def test_masked_loss_covers_only_the_target_tokens():
    from frugalft.models import load_model

    lm, tok = load_model("tiny-test", seed=0)
    rows = [{"parts": {"task": "Go.", "map": "+-+"}, "reflection": "north is open"},
            {"parts": {"task": "Stop here now."}, "reflection": "done"}]
    examples = encode_reflection_set(tok, rows, 512)
    ids, attn, target = collate_right([e[0] for e in examples], [e[1] for e in examples], tok.pad_token_id)
    # The target tokens are exactly the reflection and eos, nothing of the prompt.
    for row, (seq, mask) in zip(rows, examples, strict=True):
        targets = [t for t, m in zip(seq, mask, strict=True) if m]
        assert targets == tok.encode(row["reflection"], add_special_tokens=False) + [tok.eos_token_id]
        assert seq[: mask.index(1)] == tok.encode(
            "# Task:\n" + row["parts"]["task"] + ("\n# Map:\n+-+" if "map" in row["parts"] else "")
            + "\n# Analyze:\n", add_special_tokens=False)
    # Reference: full-vocabulary logits of the plain forward, CE gathered at the target positions by hand.
    with torch.no_grad():
        logits = lm(input_ids=ids, attention_mask=attn).logits
        ref = []
        for b in range(ids.shape[0]):
            for t in range(1, ids.shape[1]):
                if target[b, t]:
                    ref.append(F.cross_entropy(logits[b, t - 1][None], ids[b, t][None]))
        ours = masked_lm_loss(lm, ids, attn, target)
    assert ours.item() == pytest.approx(torch.stack(ref).mean().item(), rel=1e-5)
    # Pad positions are never targets, and a batch without targets is an error rather than a silent 0.
    assert int(target[attn == 0].sum()) == 0
    with pytest.raises(ValueError, match="without target tokens"):
        masked_lm_loss(lm, ids, attn, torch.zeros_like(target))


@pytest.fixture(scope="module")
def small_sets(taxi_data, tmp_path_factory):
    """The first 6 rows of the reflection and policy sets: one batch, so the loss must fall step after step."""
    data, _ = taxi_data
    out = tmp_path_factory.mktemp("small")
    for name in ("reflection", "policy"):
        lines = (data / f"{name}.jsonl").read_text().splitlines()[:6]
        (out / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
    return out


def test_warmup_loss_decreases_and_saves_loadable_models(small_sets, tmp_path):
    from frugalft.models import load_model

    cfg = WarmupConfig(model="tiny-test", device="cpu", reflection_steps=5, policy_steps=5, batch_size=6,
                       lr=2e-3, log_every=1, checkpoint_every=100, seed=0)
    refl = train_reflection(cfg, small_sets / "reflection.jsonl", tmp_path / "reflection", log=lambda *a: None)
    pol = train_policy(cfg, small_sets / "policy.jsonl", tmp_path / "policy", log=lambda *a: None)
    for part in ("reflection", "policy"):
        rows = [json.loads(line) for line in (tmp_path / part / "metrics.jsonl").read_text().splitlines()]
        losses = [r["loss"] for r in rows]
        assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
        assert all(b < a for a, b in zip(losses, losses[1:], strict=False)), losses  # one fixed batch
    lm, tok = load_model(str(pol), device="cpu")
    assert lm.config.n_layer == 2 and len(tok) == 50257
    assert (refl / "config.json").exists()


def test_warmup_resumes_from_its_checkpoint(small_sets, tmp_path, monkeypatch):
    """A run killed after its step-2 checkpoint and resumed ends with the same weights as an uninterrupted run."""
    import shutil

    from frugalft.models import load_model
    from frugalft.reflect import warmup

    data = small_sets
    cfg = WarmupConfig(model="tiny-test", device="cpu", policy_steps=4, batch_size=3, lr=3e-3, log_every=2,
                       checkpoint_every=2, seed=1)
    # A finished stage drops its checkpoints; keep run a's to play the killed run from them.
    monkeypatch.setattr(warmup, "_drop_training_state", lambda out: None)
    whole = train_policy(cfg, data / "policy.jsonl", tmp_path / "a", log=lambda *a: None)
    monkeypatch.undo()
    # What a run killed during step 3 or 4 leaves behind: its step-2 checkpoint, no final model.
    shutil.copytree(tmp_path / "a" / "checkpoints", tmp_path / "b" / "checkpoints")
    assert sorted(p.name for p in (tmp_path / "b" / "checkpoints").iterdir()) == ["LATEST", "step-00000002"]
    logs: list[str] = []
    resumed = train_policy(cfg, data / "policy.jsonl", tmp_path / "b", log=logs.append)
    assert any("resuming from" in m and "(step 2)" in m for m in logs)
    a, _ = load_model(str(whole), device="cpu")
    b, _ = load_model(str(resumed), device="cpu")
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert torch.equal(pa, pb), name


def test_read_jsonl_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"parts": {}, "actions": [], "target_index": 0, "reflection": null}\n{oops\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not valid JSON"):
        read_jsonl(bad)
    bad.write_text('{"parts": {}}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:1: missing keys \['actions', 'target_index', 'reflection'\]"):
        read_jsonl(bad)


def test_lora_warmup_trains_adapters_only_and_saves_a_merged_model(small_sets, tmp_path):
    from frugalft.models import LoraSettings, load_model

    cfg = WarmupConfig(model="tiny-test", device="cpu", finetune="lora", lora=LoraSettings(r=4, alpha=8, dropout=0.0),
                       policy_steps=2, batch_size=3, lr=1e-2, log_every=1, seed=0)
    path = train_policy(cfg, small_sets / "policy.jsonl", tmp_path / "policy", log=lambda *a: None)
    base, _ = load_model("tiny-test", device="cpu", seed=0)
    tuned, _ = load_model(str(path), device="cpu")
    assert not any("lora" in name for name, _ in tuned.named_parameters())  # merged: a plain GPT-2 again
    changed = {n for (n, a), (_, b) in zip(base.named_parameters(), tuned.named_parameters(), strict=True)
               if not torch.equal(a, b)}
    # Only the LoRA-targeted projections moved; embeddings and layer norms are the base model's.
    assert changed and all(n.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")) for n in changed)


def test_token_f1_against_hand_counts():
    from frugalft.reflect.table import token_f1

    assert token_f1("Go north, 3 steps.", "go north 3 steps") == 1.0
    # 2 shared words of 3 generated and 4 reference: P = 2/3, R = 1/2, F1 = 4/7.
    assert token_f1("go north now", "go north two steps") == pytest.approx(4 / 7)
    assert token_f1("", "anything") == 0.0


def test_warmup_cuts_examples_to_the_positions_the_model_reads(small_sets, tmp_path):
    """tiny-test reads 512 positions; a 1,024-token max_length must not let a longer prompt through (it would
    index past the position table), and the kept end of the example is what RL reads."""
    from frugalft.models import load_model
    from frugalft.reflect.warmup import sft_max_length

    cfg = WarmupConfig(model="tiny-test", device="cpu", reflection_steps=1, policy_steps=1, batch_size=2,
                       max_length=1024, log_every=1, checkpoint_every=100, val_fraction=0.0, seed=0)
    lm, tok = load_model("tiny-test", device="cpu", seed=0)
    assert sft_max_length(cfg, lm) == 512
    rows = [json.loads(line) for line in (small_sets / "reflection.jsonl").read_text().splitlines()][:2]
    rows[0]["parts"]["history"] = "1. north\n" * 400  # ~1,600 GPT-2 tokens
    long_set = tmp_path / "reflection.jsonl"
    long_set.write_text("".join(json.dumps(r) + "\n" for r in rows))
    encoded = encode_reflection_set(tok, rows, sft_max_length(cfg, lm))
    assert len(encoded[0][0]) == 512 and len(encoded[1][0]) < 512
    full = encode_reflection_set(tok, rows, 10_000)[0]
    assert encoded[0] == (full[0][-512:], full[1][-512:])  # the start is cut, the target kept
    train_reflection(cfg, long_set, tmp_path / "reflection", log=lambda *a: None)  # failed before the cut
