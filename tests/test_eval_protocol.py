"""The evaluation protocol: three disjoint splits in every environment, seed-level intervals checked against an
exact enumeration, paired differences, and DangerousTaxi's overlap figures computed from Taxi-v3's tables."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from frugalft.eval.intervals import (
    bootstrap_means,
    hierarchical_bootstrap,
    paired_differences,
    unpaired_difference,
)


def _disjoint(env) -> dict[str, set[str]]:
    ids = {sp: set(env.task_ids(sp)) for sp in ("train", "valid", "test")}
    assert all(ids.values()), {sp: len(v) for sp, v in ids.items()}
    for a, b in itertools.combinations(ids, 2):
        assert not ids[a] & ids[b], f"{a} and {b} share {sorted(ids[a] & ids[b])[:3]}"
    return ids


def test_taxi_splits_are_disjoint_and_sized():
    from frugalft.envs.taxi import DangerousTaxi

    ids = _disjoint(DangerousTaxi())
    starts = {sp: {t.split("-")[1] for t in v} for sp, v in ids.items()}
    assert {sp: len(v) for sp, v in starts.items()} == {"train": 102, "valid": 40, "test": 100}
    assert not starts["train"] & starts["test"] and not starts["valid"] & starts["test"]


def test_taxi_paper_task_set_is_all_300_starts():
    from frugalft.envs.taxi import DangerousTaxi, _distances

    env = DangerousTaxi(split="test", mode="full", task_set="paper")
    full = env.task_ids("test", 2)
    assert len(full) == 300
    fits = sum(_distances("full")[int(t.split("-")[1])] <= 15 for t in full)
    assert fits == 242  # the oracle's ceiling at horizon 15: 242 / 300 = 80.7%
    assert set(env.task_ids("train")) == set(DangerousTaxi().task_ids("train"))  # training is unchanged


def test_taxi_overlap_matches_the_figures_computed_by_hand():
    """The issue's figures, recomputed independently from Taxi-v3's tables for the earlier 142-start training
    set (today's train + valid): 1,155 of 1,213 test path states seen, 56 test starts mid-path in training,
    86 episodes on seen states only after their first step."""
    from frugalft.envs.taxi import split_overlap

    old = split_overlap(against=("train", "valid"))
    assert (old["path_states"], old["path_states_seen"]) == (1213, 1155)
    assert old["starts_seen_mid_path"] == 56 and old["episodes_seen_after_first_step"] == 86
    assert old["distinct_states"] == 218
    now = split_overlap()  # against today's 102 training starts
    assert now["path_states"] == 1213 and now["path_states_seen"] < old["path_states_seen"]


def test_taxi_dropoff_starts_are_few():
    from frugalft.envs.taxi import DangerousTaxi, _dropoff_start

    env = DangerousTaxi()
    starts = {_dropoff_start(int(t.split("-")[1])) for sp in ("train", "valid", "test")
              for t in env.task_ids(sp, 1)}
    assert len(starts) == 12  # 4 pickup depots x 3 other destinations: the taxi stands on the passenger's depot


def test_autoexplore_splits_are_disjoint():
    from frugalft.envs.autoexplore import AutoExplore

    _disjoint(AutoExplore())


def test_textworld_splits_are_disjoint():
    pytest.importorskip("textworld")
    from frugalft.envs.textworld_env import TextWorld

    _disjoint(TextWorld())


def test_hierarchical_bootstrap_matches_exact_enumeration():
    """Seeds A = [0, 1] and B = [1, 1]. Exactly: draw two seeds (AA, AB, BA, BB, each 1/4), then each drawn seed's
    two episodes with replacement (A's mean is 0, 1/2, 1 with probability 1/4, 1/2, 1/4; B's is 1)."""
    exact: dict[float, float] = {}
    a_means = {0.0: 0.25, 0.5: 0.5, 1.0: 0.25}
    for s1, s2 in itertools.product("AB", repeat=2):
        d1 = a_means if s1 == "A" else {1.0: 1.0}
        d2 = a_means if s2 == "A" else {1.0: 1.0}
        for (m1, p1), (m2, p2) in itertools.product(d1.items(), d2.items()):
            exact[(m1 + m2) / 2] = exact.get((m1 + m2) / 2, 0.0) + 0.25 * p1 * p2
    assert exact == {0.0: 1 / 64, 0.25: 4 / 64, 0.5: 14 / 64, 0.75: 20 / 64, 1.0: 25 / 64}
    boot = bootstrap_means([[0, 1], [1, 1]], resamples=40_000, seed=1)
    values, counts = np.unique(boot, return_counts=True)
    assert values.tolist() == sorted(exact)
    assert np.allclose(counts / boot.size, [exact[v] for v in values.tolist()], atol=0.01)
    # Pooling the four episodes (a plain bootstrap) would put (3/4)^4 = 0.316 on 1.0, not 25/64 = 0.391.
    mean, lo, hi = hierarchical_bootstrap([[0, 1], [1, 1]], resamples=40_000)
    assert (mean, lo, hi) == (0.75, 0.25, 1.0)


def test_unpaired_difference_matches_exact_enumeration():
    """A as above (means 0 / .25 / .5 / .75 / 1 with probability 1, 4, 14, 20, 25 in 64) minus B, one seed with
    episodes [0, 1] (means 0 / .5 / 1 with 1/4, 1/2, 1/4), drawn independently. Exactly, the difference is -1
    with 1/256 and -0.75 with 1/64 (together under 2.5%), -0.5 with 1/16; +1 with 25/256: so [-0.5, +1.0]."""
    assert unpaired_difference([[0, 1], [1, 1]], [[0, 1]], resamples=40_000, seed=1) == (0.25, -0.5, 1.0)
    # against a constant, the difference is the other side's own hierarchical bootstrap, draw for draw
    assert unpaired_difference([[0, 1], [1, 1]], [[0, 0]], resamples=40_000) == \
        hierarchical_bootstrap([[0, 1], [1, 1]], resamples=40_000)


def test_seeds_that_disagree_give_a_wide_interval():
    """Three models at 8%, 0% and 67% on 100 tasks: the pooled Wilson interval is [20, 30]; resampling seeds
    gives an interval that spans most of the range, as three such seeds warrant."""
    per_seed = [[1] * 8 + [0] * 92, [0] * 100, [1] * 67 + [0] * 33]
    mean, lo, hi = hierarchical_bootstrap(per_seed)
    assert mean == pytest.approx(0.25)
    assert lo < 0.05 and hi > 0.5


def test_paired_differences_need_the_same_tasks():
    a = {0: [1, 1, 0], 1: [1, 0, 0]}
    b = {0: [1, 0, 0], 1: [0, 0, 0], 2: [1, 1, 1]}
    tasks = {0: ["x", "y", "z"], 1: ["x", "y", "z"], 2: ["x", "y", "z"]}
    diffs = paired_differences(a, b, tasks, tasks)
    assert sorted(diffs) == [0, 1] and diffs[0].tolist() == [0, 1, 0] and diffs[1].tolist() == [1, 0, 0]
    with pytest.raises(ValueError, match="different task lists"):
        paired_differences(a, b, tasks, {**tasks, 1: ["y", "x", "z"]})


def test_a_cell_is_reused_field_by_field(tmp_path):
    """A table cell records its config: a cell written before a field existed is still reused while the field
    keeps its default; any changed setting is refused, naming the key."""
    import json

    from frugalft.reflect.table import ExperimentConfig, _reuse, cell_config

    config = ExperimentConfig(seeds=[0])
    cell = cell_config(config, 0, "sft")
    out = tmp_path / "sft.json"
    older = json.loads(json.dumps(cell))
    del older["rl"]["eval_split"], older["warmup"]["lr"]  # fields "added since" the cell was made
    out.write_text(json.dumps({"fingerprint": "0123456789abcdef", "success": 0.5, "config": older}))
    assert _reuse(out, cell)["success"] == 0.5

    config.warmup.lr = 0.5  # now the new field differs from its default: another config
    changed = cell_config(config, 0, "sft")
    with pytest.raises(ValueError, match=r"was made with another config \(warmup.lr: 0.001 -> 0.5\)"):
        _reuse(out, changed)
    config.warmup.lr = 0.001
    config.eval.max_tasks = 3
    with pytest.raises(ValueError, match=r"eval.max_tasks: 20 -> 3"):
        _reuse(out, cell_config(config, 0, "sft"))
    # A cell from before configs were recorded: only the hash can be compared.
    out.write_text(json.dumps({"fingerprint": "0123456789abcdef"}))
    with pytest.raises(ValueError, match="fingerprint 0123456789abcdef != "):
        _reuse(out, cell)
    assert _reuse(tmp_path / "missing.json", cell) is None
    # The split is the cell's path, not its config (rl eval --split valid and a valid table share cells); the
    # extra task sets change only their own cells.
    config.eval.max_tasks = 20
    config.eval.split, config.eval.extra = "valid", {"paper": {"task_set": "paper"}}
    assert cell_config(config, 0, "sft") == cell
    assert cell_config(config, 0, "sft", "paper")["eval"]["extra"] == {"paper": {"task_set": "paper"}}


def test_a_section_key_the_table_fills_is_refused_not_ignored():
    from frugalft.reflect.players import RLConfig
    from frugalft.reflect.table import ExperimentConfig
    from frugalft.reflect.warmup import WarmupConfig

    ExperimentConfig(env="AutoExplore", rl=RLConfig(env="AutoExplore"))  # the same value: nothing is lost
    with pytest.raises(ValueError, match=r"rl.env: 'AutoExplore' \(the table sets it from `env`: 'DangerousTaxi'\)"):
        ExperimentConfig(rl=RLConfig(env="AutoExplore"))
    with pytest.raises(ValueError, match=r"warmup.seed \(each seed's runs use that seed: set `seeds`\)"):
        ExperimentConfig(warmup=WarmupConfig(seed=3))
    with pytest.raises(ValueError, match=r"rl.labels: \['a', 'b'\] \(the table sets it from `warmup.labels`"):
        ExperimentConfig(rl=RLConfig(labels=["a", "b"]))


def test_one_variants_warm_up_settings_change_only_its_cells():
    from frugalft.config import ConfigError
    from frugalft.reflect.table import ExperimentConfig, cell_changes, cell_config, digest

    plain = ExperimentConfig(seeds=[0])
    cfg = ExperimentConfig(seeds=[0], variant_warmup={"noreflect": {"patience": 20}})
    assert cfg.warmup_of(3, "noreflect").patience == 20 and cfg.warmup_of(3, "noreflect").seed == 3
    assert cfg.warmup_of(3, "reflect") == plain.warmup_of(3, "reflect")
    for method in ("sft", "reflect_rl", "sft_rl_noreflect_rinit", "random"):  # cells of other variants: unchanged
        assert digest(cell_config(cfg, 0, method)) == digest(cell_config(plain, 0, method)), method
    for method in ("sft_noreflect", "sft_rl_noreflect"):
        assert digest(cell_config(cfg, 0, method)) != digest(cell_config(plain, 0, method)), method
    # the control's policy starts from the reflect variant's reflection model: that variant's settings are its own
    reflect = ExperimentConfig(seeds=[0], variant_warmup={"reflect": {"reflection_steps": 7}})
    assert digest(cell_config(reflect, 0, "sft_noreflect_rinit")) != digest(cell_config(plain, 0, "sft_noreflect_rinit"))
    assert digest(cell_config(reflect, 0, "sft_noreflect")) == digest(cell_config(plain, 0, "sft_noreflect"))
    with pytest.raises(ValueError, match="unknown warm-up variant 'noreflection'; valid: noreflect, noreflect_rinit"):
        ExperimentConfig(variant_warmup={"noreflection": {"patience": 20}})
    with pytest.raises(ConfigError, match="unknown config key variant_warmup.noreflect.patiense"):
        ExperimentConfig(variant_warmup={"noreflect": {"patiense": 20}})
    with pytest.raises(ConfigError, match="variant_warmup.noreflect.patience: expected int"):
        ExperimentConfig(variant_warmup={"noreflect": {"patience": "long"}})
    with pytest.raises(ValueError, match=r"variant_warmup.noreflect: \['seed'\] are the same for every variant"):
        ExperimentConfig(variant_warmup={"noreflect": {"seed": 1}})
    with pytest.raises(ValueError, match=r"\['shuffle_labels'\] are the same"):  # RL reads the warm-up's labels
        ExperimentConfig(variant_warmup={"noreflect": {"shuffle_labels": True}})
    # a cell made with a variant's own settings is refused by the config without them, and the other way round
    with_own, without = cell_config(cfg, 0, "sft_noreflect"), cell_config(plain, 0, "sft_noreflect")
    assert cell_changes(with_own, without) == ["variant_warmup: {'noreflect': {'patience': 20}} -> {}"]
    assert cell_changes(without, with_own) == ["variant_warmup: {} -> {'noreflect': {'patience': 20}}"]
    assert cell_changes(with_own, with_own) == []


def test_two_run_directories_compare_paired_on_the_same_tasks(tmp_path):
    import json

    from frugalft.reflect.table import compare_runs

    def cell(run: str, seed: int, success: list[int], tasks: list[str], split: str = "valid") -> None:
        path = tmp_path / run / f"seed-{seed}" / "eval" / split / "reflect_rl.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"seed": seed, "outcomes": {"success": success, "task_id": tasks}}))

    tasks = ["t0", "t1", "t2", "t3"]
    cell("a", 0, [1, 1, 0, 0], tasks)
    cell("b", 0, [0, 1, 0, 0], tasks)
    cell("a", 1, [1, 1, 1, 1], tasks)
    cell("b", 1, [1, 1, 1, 0], tasks)
    cell("a", 2, [1, 1, 1, 1], tasks)  # seed 2 only in A: not a paired seed
    cell("b", 0, [1, 1, 1, 1], tasks, split="test")  # another split's file is never read
    c = compare_runs(tmp_path / "a", tmp_path / "b", "reflect_rl")
    assert c.seeds == [0, 1] and c.by_seed == {0: 0.25, 1: 0.25}
    assert (c.success_a, c.success_b, c.difference) == (0.75, 0.5, 0.25)
    # every resample of two seeds whose differences are 1, 0, 0, 0 per episode: at least 0, at most 0.75
    assert 0.0 <= c.ci_lo <= 0.25 <= c.ci_hi <= 0.75
    cell("b", 1, [1, 1, 1, 0], ["t0", "t1", "t3", "t2"])
    with pytest.raises(ValueError, match="different task lists"):
        compare_runs(tmp_path / "a", tmp_path / "b", "reflect_rl")
    with pytest.raises(ValueError, match="no seed of .* has a test evaluation of reflect_rl in both"):
        compare_runs(tmp_path / "a", tmp_path / "b", "reflect_rl", split="test")
    # another method of B (rows of two tables split for time): A's reflect_rl minus B's sft on the same tasks
    sft = tmp_path / "b" / "seed-0" / "eval" / "valid" / "sft.json"
    sft.write_text(json.dumps({"seed": 0, "outcomes": {"success": [0, 0, 1, 0], "task_id": tasks}}))
    c = compare_runs(tmp_path / "a", tmp_path / "b", "reflect_rl", method_b="sft")
    assert c.seeds == [0] and (c.success_a, c.success_b, c.by_seed) == (0.5, 0.25, {0: 0.25})
    with pytest.raises(ValueError, match=r"evaluation of reflect_rl \(A\) and sft \(B\) in both"):
        compare_runs(tmp_path / "a", tmp_path / "b", "reflect_rl", split="test", method_b="sft")


def test_the_table_pairs_reflect_rl_and_sft_only_with_their_controls():
    """A table's paired rows: Reflect-RL minus each other row it has, and SFT only minus its no-reflection twin;
    a pair whose second row the table lacks is left out. Each seed's episodes differ equally, so the bootstrap can
    only draw the two seeds' differences d0, d1 (mean (d0 + d1) / 2): its 95% interval is [min, max] of them."""
    from frugalft.reflect.table import ExperimentConfig, comparison_lines

    tasks = ["t0", "t1", "t2", "t3"]
    success = {"sft": {0: [1, 1, 1, 1], 1: [0, 0, 0, 0]}, "reflect_rl": {0: [1, 1, 1, 1], 1: [1, 1, 1, 1]},
               "sft_noreflect_rinit": {0: [0, 0, 0, 0], 1: [0, 0, 0, 0]}}
    rows = [{"method": m, "seed": seed, "outcomes": {"success": s, "task_id": tasks}}
            for m, by_seed in success.items() for seed, s in by_seed.items()]
    lines = comparison_lines(ExperimentConfig(methods=list(success)), rows)
    assert lines == ["| Reflect-RL | SFT only | 2 | +50.0 [+0.0, +100.0] | +0 / +100 |",
                     "| SFT only | SFT only, no reflection, policy from the reflection model | 2 | +50.0 [+0.0, +100.0] "
                     "| +100 / +0 |"]


def test_unpaired_against_counts_script(tmp_path, capsys, monkeypatch):
    """The script behind docs/results.md's unpaired row: a row known only by its per-seed counts minus a run
    directory's method, read from the method's per-episode evaluation files."""
    import json
    import runpy
    import sys
    from pathlib import Path

    for seed, wins in ((0, [1, 0, 0, 0]), (1, [1, 1, 0, 0])):
        d = tmp_path / f"seed-{seed}" / "eval" / "test"
        d.mkdir(parents=True)
        (d / "m.json").write_text(json.dumps({"outcomes": {"success": wins}}))
    script = Path(__file__).resolve().parents[1] / "scripts" / "unpaired_against_counts.py"
    monkeypatch.setattr(sys, "argv", ["x", str(tmp_path), "m", "--counts", "4,4", "--episodes", "4"])
    runpy.run_path(str(script), run_name="__main__")
    out = capsys.readouterr().out
    # 100% minus 25% and 50%: +62.5 on average, by seed +75 / +50
    assert "+62.5 points" in out and "by seed +75 / +50" in out
