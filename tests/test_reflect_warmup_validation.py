"""The warm-up's validation split, early stopping with the best weights kept, exact resume, and the policy set
rewritten with the reflection model's own reflections."""

from __future__ import annotations

import json
import random

import pytest
import torch

from frugalft.reflect.teachers import TeacherConfig
from frugalft.reflect.warmup import (
    Validation,
    WarmupConfig,
    _fit,
    batch_indices,
    model_reflections,
    split_validation,
    train_policy,
    train_reflection,
)
from frugalft.reflect.warmup_data import DataConfig, generate
from frugalft.runs import RunDir

pytestmark = pytest.mark.usefixtures("one_thread")


def _rows(tasks: int, per_task: int) -> list[dict]:
    return [{"task_id": f"t{t}", "step": s} for t in range(tasks) for s in range(per_task)]


def test_validation_split_holds_out_whole_tasks():
    rows = _rows(40, 3)
    train, val = split_validation(rows, 0.15, seed=7)
    assert sorted(train + val) == list(range(len(rows)))
    val_tasks = {rows[i]["task_id"] for i in val}
    assert len(val_tasks) == 6  # round(0.15 * 40)
    assert not val_tasks & {rows[i]["task_id"] for i in train}  # no state of a held-out task is trained on
    assert (train, val) == split_validation(rows, 0.15, seed=7)  # both players of a seed get the same split
    assert val != split_validation(rows, 0.15, seed=8)[1]
    assert split_validation(rows, 0.0, seed=7) == (list(range(len(rows))), [])
    with pytest.raises(ValueError, match="leaves no training task"):
        split_validation(_rows(2, 1), 0.9, seed=0)


def test_length_grouped_batches_cover_a_block_once_and_pad_less():
    rng = random.Random(0)
    lengths = [rng.choice([rng.randint(200, 400), rng.randint(500, 1500)]) for _ in range(200)]
    plain = [batch_indices(200, 16, 3, step) for step in range(8)]
    assert plain == [batch_indices(200, 16, 3, step, lengths, groups=1) for step in range(8)]  # off: as before
    grouped = [batch_indices(200, 16, 3, step, lengths, groups=8) for step in range(16)]
    assert grouped == [batch_indices(200, 16, 3, step, lengths, groups=8) for step in range(16)]  # resumable
    for block in (grouped[:8], grouped[8:]):  # a block: 8 batches, 128 distinct examples, each batch a
        flat = [i for b in block for i in b]  # contiguous run of the block sorted by length
        assert all(len(b) == 16 for b in block) and len(set(flat)) == 128
        ranked = sorted(flat, key=lambda i: (lengths[i], i))
        assert sorted(tuple(b) for b in block) == sorted(tuple(ranked[k:k + 16]) for k in range(0, 128, 16))
    assert grouped[:8] != sorted(grouped[:8], key=lambda b: lengths[b[0]])  # served in a shuffled order

    def padded(batches):
        return sum(16 * max(lengths[i] for i in b) for b in batches)

    many = [batch_indices(200, 16, 3, step, lengths, groups=8) for step in range(400)]
    assert padded(many) < 0.75 * padded([batch_indices(200, 16, 3, step) for step in range(400)])
    assert batch_indices(20, 16, 3, 5, lengths[:20], groups=8) == batch_indices(20, 16, 3, 5)  # too few to group


class _Scripted:
    """A validation whose scores are given in advance (one per call), with the weights seen at each call."""

    def __init__(self, model: torch.nn.Module, losses: list[float]):
        self.model, self.losses, self.seen = model, list(losses), []

    def score(self) -> dict[str, float]:
        self.seen.append(self.model.weight.detach().clone())
        return {"val_loss": self.losses[len(self.seen) - 1]}


def _linear_fit(tmp_path, losses: list[float], steps: int, patience: int, crash_at: int | None = None,
                run_name: str = "run"):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1, bias=False)
    x = torch.randn(32, 3)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]])
    calls = {"n": 0}

    def loss_of(idx: list[int]) -> torch.Tensor:
        calls["n"] += 1
        if crash_at is not None and calls["n"] == crash_at:
            raise KeyboardInterrupt("killed")
        return ((model(x[idx]) - y[idx]) ** 2).mean()

    scripted = _Scripted(model, losses)
    cfg = WarmupConfig(lr=0.05, batch_size=8, eval_every=5, patience=patience, checkpoint_every=5, log_every=5,
                       autocast="off", seed=0)
    run = RunDir(tmp_path / run_name, resume=True)
    stats = _fit("toy", model, loss_of, list(range(32)), steps, patience, cfg, run, lambda *a: None,
                 Validation(scripted.score, lambda new, best: new["val_loss"] < best["val_loss"]))
    return model, stats, scripted, run


def test_early_stopping_keeps_the_best_weights(tmp_path):
    # Validations at steps 0, 5, 10, 15, 20, ...: best at step 5, then two without improvement -> stop at 15.
    model, stats, scripted, run = _linear_fit(tmp_path, [3.0, 1.0, 2.0, 2.5, 0.1], steps=100, patience=2)
    assert stats["stopped_early"] and stats["steps_run"] == 15
    assert stats["best"]["step"] == 5 and stats["best"]["val_loss"] == 1.0
    assert len(scripted.seen) == 4  # steps 0, 5, 10, 15
    assert torch.equal(model.weight, scripted.seen[1])  # the model left behind is the one validated at step 5
    vals = [r for r in run.metrics() if "val_loss" in r]
    assert [(r["step"], r["val_best_step"]) for r in vals] == [(0, 0), (5, 5), (10, 5), (15, 5)]


def test_a_falling_loss_keeps_training_while_accuracy_plateaus(tmp_path):
    # The policy's ordering: accuracy first. Accuracy stalls after step 5 but the held-out loss keeps falling
    # until step 20, so patience 2 counts from step 20: stop at 30, the best weights still those of step 5.
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1, bias=False)
    x = torch.randn(32, 3)
    scores = [(0.1, 3.0), (0.5, 2.0), (0.5, 1.9), (0.4, 1.8), (0.5, 1.7), (0.5, 1.75), (0.5, 1.8), (0.9, 0.1)]
    seen = []

    def score() -> dict[str, float]:
        seen.append(model.weight.detach().clone())
        acc, loss = scores[len(seen) - 1]
        return {"val_accuracy": acc, "val_loss": loss}

    cfg = WarmupConfig(lr=0.05, batch_size=8, eval_every=5, patience=2, checkpoint_every=5, log_every=5,
                       autocast="off", seed=0)
    stats = _fit("toy", model, lambda idx: (model(x[idx]) ** 2).mean(), list(range(32)), 100, 2, cfg,
                 RunDir(tmp_path / "run", resume=True), lambda *a: None,
                 Validation(score, lambda new, best: (new["val_accuracy"], -new["val_loss"])
                            > (best["val_accuracy"], -best["val_loss"])))
    assert stats["stopped_early"] and stats["steps_run"] == 30
    assert stats["best"]["step"] == 20  # ties on accuracy are broken by the loss: (0.5, 1.7) is the best
    assert torch.equal(model.weight, seen[4])


def test_patience_zero_runs_to_the_cap(tmp_path):
    _, stats, scripted, _ = _linear_fit(tmp_path, [1.0] + [2.0] * 10, steps=20, patience=0)
    assert not stats["stopped_early"] and stats["steps_run"] == 20 and len(scripted.seen) == 5


def test_a_killed_warmup_resumes_to_the_same_weights_and_curve(tmp_path):
    losses = [3.0, 2.0, 1.0, 1.5, 0.5, 0.7, 0.8, 0.9, 1.0]
    whole, stats, _, run_a = _linear_fit(tmp_path, losses, steps=40, patience=3, run_name="a")
    with pytest.raises(KeyboardInterrupt):  # killed during step 13: checkpoints at 5 and 10 exist
        _linear_fit(tmp_path, losses, steps=40, patience=3, crash_at=13, run_name="b")
    # The step-10 checkpoint was written after that step's validation: the resumed run validates from step
    # 15 on, so its scripted scores continue from the 4th one (steps 0, 5, 10 were scored before the kill).
    resumed, stats_b, _, run_b = _linear_fit(tmp_path, losses[3:], steps=40, patience=3, run_name="b")
    assert torch.equal(whole.weight, resumed.weight)
    assert stats_b["best"] == stats["best"] and stats_b["steps_run"] == stats["steps_run"] == 35
    strip = [{k: v for k, v in r.items() if k not in ("time", "examples_per_s")} for r in run_a.metrics()]
    assert strip == [{k: v for k, v in r.items() if k not in ("time", "examples_per_s")} for r in run_b.metrics()]


def test_a_warmup_killed_before_its_first_checkpoint_starts_its_curve_over(tmp_path):
    losses = [3.0, 2.0, 1.0, 1.5, 0.5, 0.7, 0.8, 0.9, 1.0]
    _, _, _, run_a = _linear_fit(tmp_path, losses, steps=40, patience=3, run_name="a")
    with pytest.raises(KeyboardInterrupt):  # killed during step 3: validation 0 logged, no checkpoint yet
        _linear_fit(tmp_path, losses, steps=40, patience=3, crash_at=3, run_name="b")
    _, _, _, run_b = _linear_fit(tmp_path, losses, steps=40, patience=3, run_name="b")
    steps = [r["step"] for r in run_b.metrics() if "val_loss" in r]
    assert steps == [r["step"] for r in run_a.metrics() if "val_loss" in r]  # one step-0 row, not two
    assert steps[:2] == [0, 5]


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    generate(DataConfig(levels=[0], tasks_per_level=14, negatives_per_episode=1, seed=0,
                        teacher=TeacherConfig(brief=True)), out, log=lambda *a: None)
    return out


@pytest.mark.parametrize("length_groups", [1, 4])
def test_players_validate_on_held_out_tasks(sets, tmp_path, length_groups):
    cfg = WarmupConfig(model="tiny-test", device="cpu", reflection_steps=6, policy_steps=6, batch_size=8,
                       lr=3e-3, val_fraction=0.3, eval_every=3, patience=0, val_generate=4,
                       reflection_tokens=8, log_every=3, seed=0, length_groups=length_groups)
    train_reflection(cfg, sets / "reflection.jsonl", tmp_path / "reflection", log=lambda *a: None)
    train_policy(cfg, sets / "policy.jsonl", tmp_path / "policy", log=lambda *a: None)
    rows = [json.loads(line) for line in (sets / "policy.jsonl").read_text().splitlines()]
    _, val = split_validation(rows, 0.3, seed=0)
    for player, keys in (("reflection", {"val_loss", "val_exact"}), ("policy", {"val_loss", "val_accuracy"})):
        metrics = [json.loads(line) for line in (tmp_path / player / "metrics.jsonl").read_text().splitlines()]
        vals = [r for r in metrics if "val_loss" in r]
        assert [r["step"] for r in vals] == [0, 3, 6] and all(keys <= r.keys() for r in vals)
        summary = json.loads((tmp_path / player / "summary.json").read_text())
        assert summary["val_examples"] == len(val) > 0 and summary["examples"] == len(rows) - len(val)
        assert summary["best"]["step"] in (0, 3, 6)
    # the finished stage keeps its result only: no best-validation copy, no checkpoints (the model is the best)
    assert not (tmp_path / "policy" / "best").exists() and (tmp_path / "policy" / "model" / "config.json").exists()


@pytest.mark.parametrize("policy_patience,expected", [(None, 4), (10, 10), (0, 0)])
def test_the_policy_stops_at_its_own_patience_and_the_reflection_model_at_patience(sets, tmp_path, monkeypatch,
                                                                                    policy_patience, expected):
    import frugalft.reflect.warmup as warmup_module

    seen: dict[str, int] = {}
    real_fit = warmup_module._fit

    def spy(name, lm, loss_of, train_idx, steps, patience, *rest, **kw):
        seen[name] = patience
        return real_fit(name, lm, loss_of, train_idx, steps, patience, *rest, **kw)

    monkeypatch.setattr(warmup_module, "_fit", spy)
    cfg = WarmupConfig(model="tiny-test", device="cpu", reflection_steps=2, policy_steps=2, batch_size=4,
                       val_fraction=0.3, eval_every=1, patience=4, policy_patience=policy_patience,
                       val_generate=0, reflection_tokens=6, seed=0)
    train_reflection(cfg, sets / "reflection.jsonl", tmp_path / "reflection", log=lambda *a: None)
    train_policy(cfg, sets / "policy.jsonl", tmp_path / "policy", log=lambda *a: None)
    assert seen == {"reflection": 4, "policy": expected}


def test_policy_set_rewritten_with_the_models_own_reflections(sets, tmp_path):
    cfg = WarmupConfig(model="tiny-test", device="cpu", reflection_steps=2, batch_size=4, val_fraction=0.0,
                       reflection_tokens=6, seed=3)
    model = train_reflection(cfg, sets / "reflection.jsonl", tmp_path / "reflection", log=lambda *a: None)
    out = model_reflections(cfg, model, sets / "policy.jsonl", tmp_path / "a.jsonl", log=lambda *a: None)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    source = [json.loads(line) for line in (sets / "policy.jsonl").read_text().splitlines()]
    assert len(rows) == len(source)
    for new, old in zip(rows, source, strict=True):
        assert new["teacher_reflection"] == old["reflection"]
        assert {k: v for k, v in new.items() if k not in ("reflection", "teacher_reflection")} == \
            {k: v for k, v in old.items() if k != "reflection"}
    assert sum(r["reflection"] != r["teacher_reflection"] for r in rows) > len(rows) // 2  # 2 steps: mostly noise
    # Each row's reflection is drawn from its own seeded stream: the same file again, whatever the batching.
    again = model_reflections(cfg, model, sets / "policy.jsonl", tmp_path / "b.jsonl", log=lambda *a: None)
    assert again.read_text() == out.read_text()


def test_policy_settings_reuse_the_reflection_model_and_a_set_made_otherwise_is_refused(sets, tmp_path):
    from dataclasses import replace

    from frugalft.runs import RunError

    cfg = WarmupConfig(model="tiny-test", device="cpu", reflection_steps=2, batch_size=4, val_fraction=0.0,
                       reflection_tokens=6, seed=3)
    model = train_reflection(cfg, sets / "reflection.jsonl", tmp_path / "reflection", log=lambda *a: None)
    weights = (model / "model.safetensors").read_bytes()
    # The policy's own settings do not touch the reflection model: it is reused as it is.
    probe = replace(cfg, policy_steps=900, policy_patience=10, policy_reflections="teacher",
                    reflection_temperature=0.0, policy_init="reflection", policy_loss="full_vocab")
    logs: list[str] = []
    assert train_reflection(probe, sets / "reflection.jsonl", tmp_path / "reflection", log=logs.append) == model
    assert any("already trained" in m for m in logs) and (model / "model.safetensors").read_bytes() == weights
    # Any setting it reads is a change: refused, naming it.
    with pytest.raises(RunError, match=r"lr: 0.001 -> 0.01"):
        train_reflection(replace(cfg, lr=0.01), sets / "reflection.jsonl", tmp_path / "reflection")
    # The model-written policy set records its temperature: a set sampled at another one is not handed back.
    out = model_reflections(cfg, model, sets / "policy.jsonl", tmp_path / "p.jsonl", log=lambda *a: None)
    assert json.loads((tmp_path / "p.json").read_text())["reflection_temperature"] == 1.0
    assert model_reflections(cfg, model, sets / "policy.jsonl", out) == out  # the same settings: reused
    before = out.read_text()
    with pytest.raises(RunError, match=r"p.jsonl was written with other settings \(reflection_temperature: "
                                       r"1.0 -> 0.0\)"):
        model_reflections(replace(cfg, reflection_temperature=0.0), model, sets / "policy.jsonl", out)
    assert out.read_text() == before


def test_environment_tokenizer_keeps_the_map_a_grid_and_labels_single_tokens():
    import frugalft.envs as envs
    from frugalft.models.env_tokenizer import env_tokenizer
    from frugalft.models.heads import label_token_ids
    from frugalft.reflect.prompts import DEFAULT_LABELS, build_policy_prompt

    tok = env_tokenizer()
    assert len(tok) <= 4096 and tok.eos_token == tok.pad_token == "<|endoftext|>"
    assert len(set(label_token_ids(tok, DEFAULT_LABELS))) == len(DEFAULT_LABELS)
    env = envs.make("DangerousTaxi", level=2, legend=False)
    rng = random.Random(0)
    for seed in range(5):
        _, info = env.reset(seed=seed, options={"task_id": rng.choice(env.task_ids("train"))})
        rows = info["parts"]["map"].splitlines()
        # Every map row is the same number of tokens wherever the taxi, passenger and depots are.
        assert {len(tok.encode(r, add_special_tokens=False)) for r in rows[1:-1]} == {11}
        prompt = build_policy_prompt(info["parts"], "Taxi 1,2; passenger 0,0.", info["actions"],
                                     [str(i) for i in range(6)])
        assert tok.decode(tok.encode(prompt, add_special_tokens=False)) == prompt
