"""Config values as users write them (``1e-4``), and checked at load: types and ranges, one-line errors."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from importlib import resources

import pytest
import yaml
from typer.testing import CliRunner

from frugalft.config import ConfigError, dump_yaml, load_config, parse_override, value_rule
from frugalft.eval.curve import CurveConfig
from frugalft.models import LoraSettings
from frugalft.reflect.table import ExperimentConfig
from frugalft.reflect.train import RLConfig
from frugalft.sft.train import SFTConfig

ROOTS = (ExperimentConfig, RLConfig, SFTConfig, CurveConfig)  # every class the CLI loads with load_config
PACKAGED = {"rl": ExperimentConfig, "sft": SFTConfig, "curve": CurveConfig}


@dataclass
class Small:
    lr: float = 1e-3
    steps: int = 10
    note: str = ""
    widths: list[float] = field(default_factory=list)
    floor: int = field(default=5, metadata={"min": 2})  # a per-field override of the table


# ---- numbers as users write them ---------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "value"), [("1e-4", 1e-4), ("3e-5", 3e-5), ("1E3", 1e3), ("-2.5e+2", -250.0),
                                             (".5e1", 5.0), ("1.0e-4", 1e-4), ("0.001", 1e-3), ("2", 2)])
def test_exponent_numbers_are_floats_in_overrides(text, value):
    key, parsed = parse_override(f"lr={text}")
    assert key == "lr" and parsed == value and type(parsed) is type(value)


def test_exponent_numbers_are_floats_in_files_and_set(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("env_kwargs: {scale: 1e2}\nwarmup:\n  lr: 1e-3\nrl:\n  lr: 3e-5\n  weight_decay: 1E-3\n")
    cfg = load_config(ExperimentConfig, path, ["rl.max_grad_norm=5e-1"])
    assert cfg.warmup.lr == 1e-3 and cfg.rl.lr == 3e-5 and cfg.rl.weight_decay == 1e-3
    assert cfg.rl.max_grad_norm == 0.5 and cfg.env_kwargs == {"scale": 100.0}
    assert load_config(Small, None, ["lr=1e-4", "widths=[1e-1, 2E0]"]) == Small(lr=1e-4, widths=[0.1, 2.0])
    # Strings that merely start with digits stay strings.
    assert parse_override("model=1e-4x")[1] == "1e-4x" and parse_override("v=2024-01-01")[1] != "2024-01-01"


def test_exponent_number_is_still_not_an_int():
    with pytest.raises(ConfigError, match=r"^steps: expected int, got 1000\.0$"):
        load_config(Small, None, ["steps=1e3"])
    with pytest.raises(ConfigError, match="rl.iterations: expected int"):
        load_config(ExperimentConfig, None, ["rl.iterations=1e-4"])


def test_the_cli_reads_exponents_and_reports_bad_values(tmp_path):
    from frugalft.cli.main import _add_subapps, app

    _add_subapps()
    res = CliRunner().invoke(app, ["sft", "--set", "lr=-1e-4", "--set", "train=x.jsonl"])
    assert res.exit_code != 0 and "lr: must be > 0, got -0.0001" in res.output
    res = CliRunner().invoke(app, ["rl", "data", "--set", "rl.checkpoint_interval=0", "--run-dir", str(tmp_path)])
    assert res.exit_code != 0 and "rl.checkpoint_interval: must be >= 1, got 0" in res.output


# ---- values checked at load ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("override", "message"), [
    ("rl.checkpoint_interval=0", "rl.checkpoint_interval: must be >= 1, got 0"),
    ("rl.temperature=0", "rl.temperature: must be > 0, got 0.0"),
    ("rl.minibatch=0", "rl.minibatch: must be >= 1, got 0"),
    ("rl.iterations=-3", "rl.iterations: must be >= 1, got -3"),
    ("rl.num_envs=0", "rl.num_envs: must be >= 1, got 0"),
    ("warmup.batch_size=0", "warmup.batch_size: must be >= 1, got 0"),
    ("warmup.batch_size=true", "warmup.batch_size: expected int, got True"),
    ("warmup.policy_steps=0", "warmup.policy_steps: must be >= 1, got 0"),
    ("warmup.log_every=0", "warmup.log_every: must be >= 1, got 0"),
    ("warmup.lr=.nan", "warmup.lr: expected a finite float, got nan"),
    ("rl.lr=.inf", "rl.lr: expected a finite float, got inf"),
    ("rl.lr=-1", "rl.lr: must be > 0, got -1.0"),
    ("rl.lr=0", "rl.lr: must be > 0, got 0.0"),
    ("rl.lora.dropout=1", "rl.lora.dropout: must be >= 0 and < 1, got 1.0"),
    ("rl.gamma=1.5", "rl.gamma: must be >= 0 and <= 1, got 1.5"),
    ("rl.max_tasks_per_level=0", "rl.max_tasks_per_level: must be >= 1, got 0"),
    ("rl.max_tasks_per_level=true", "rl.max_tasks_per_level: expected int, got True"),
    ("eval.temperature=0", "eval.temperature: must be > 0, got 0.0"),
    ("eval.repeats=0", "eval.repeats: must be >= 1, got 0"),
    ("data.explore_prob=-0.1", "data.explore_prob: must be >= 0 and <= 1, got -0.1"),
    ("seeds=[0, -1]", r"seeds\[1\]: must be >= 0, got -1"),
    ("extra_seeds={sft: [3, -4]}", r"extra_seeds\.sft\[1\]: must be >= 0, got -4"),
    ("extra_seeds={sft: [3, x]}", r"extra_seeds\.sft\[1\]: expected int, got 'x'"),
    ("match_noreflect_steps=1", "match_noreflect_steps: expected true/false, got 1"),
])
def test_bad_values_name_their_key(override, message):
    with pytest.raises(ConfigError, match=f"^{message}$"):
        load_config(ExperimentConfig, None, [override])


@pytest.mark.parametrize(("cls", "override", "message"), [
    (SFTConfig, "batch_size=true", "batch_size: expected int, got True"),
    (SFTConfig, "log_every=0", "log_every: must be >= 1, got 0"),
    (SFTConfig, "eval_fraction=1", "eval_fraction: must be >= 0 and < 1, got 1.0"),
    (SFTConfig, "lr=.nan", "lr: expected a finite float, got nan"),
    (CurveConfig, "budgets=[8, 0]", r"budgets\[1\]: must be >= 1, got 0"),
    (CurveConfig, "sft.epochs=0", "sft.epochs: must be >= 1, got 0"),
    (CurveConfig, "gen_batch_size=0", "gen_batch_size: must be >= 1, got 0"),
    (RLConfig, "checkpoint_interval=0", "checkpoint_interval: must be >= 1, got 0"),
    (RLConfig, "workers=-1", "workers: must be >= 0, got -1"),
    (Small, "steps=false", "steps: expected int, got False"),
    (Small, "lr=true", "lr: expected float, got True"),
    (Small, "widths=[1, .nan]", r"widths\[1\]: expected a finite float, got nan"),
    (Small, "floor=1", "floor: must be >= 2, got 1"),
])
def test_bad_values_of_other_configs(cls, override, message):
    with pytest.raises(ConfigError, match=f"^{message}$"):
        load_config(cls, None, [override])


def test_zero_where_zero_means_something():
    cfg = load_config(ExperimentConfig, None, [
        "rl.eval_interval=0", "rl.reflection_temperature=0", "rl.replay_capacity=0", "rl.weight_decay=0",
        "rl.entropy_coef=0", "rl.kl_coef=0", "rl.workers=0", "rl.gpus_per_worker=0", "warmup.patience=0",
        "warmup.val_fraction=0", "warmup.val_generate=0", "warmup.reflection_temperature=0",
        "data.explore_prob=0", "data.negatives_per_episode=0", "data.teacher.temperature=0", "rl.levels=[0]",
        "seeds=[0]", "rl.max_tasks_per_level=null", "eval.max_tasks=null",
    ])
    assert cfg.rl.eval_interval == 0 and cfg.warmup.patience == 0 and cfg.data.teacher.temperature == 0.0
    sft = load_config(SFTConfig, None, ["eval_every=0", "save_every=-1", "max_steps=0", "eval_fraction=0",
                                        "warmup_ratio=0", "eval_max=0", "lora.dropout=0"])
    assert sft.save_every == -1 and sft.max_steps == 0
    curve = load_config(CurveConfig, None, ["pool_subsample=0", "eval_per_task=0", "reference_budget=0"])
    assert curve.pool_subsample == 0


def test_a_post_init_check_is_a_config_error():
    with pytest.raises(ConfigError, match="^rl: grpo: num_envs=6 is not a multiple of group_size=4"):
        load_config(ExperimentConfig, None, ["rl.algorithm=grpo", "rl.num_envs=6"])


# ---- the packaged configs and the rule table -------------------------------------------------------------
def _packaged() -> list[tuple[str, type]]:
    root = resources.files("frugalft") / "configs"
    found = [(f"{d}/{p.name}", cls) for d, cls in PACKAGED.items() for p in (root / d).iterdir()
             if p.name.endswith(".yaml")]
    assert {d for d, _ in PACKAGED.items()} == {p.name for p in root.iterdir() if p.is_dir()}
    return sorted(found, key=lambda x: x[0])


@pytest.mark.parametrize(("name", "cls"), _packaged())
def test_packaged_configs_load(name, cls):
    path = resources.files("frugalft") / "configs" / name
    cfg = load_config(cls, str(path))
    assert isinstance(cfg, cls)


# The policies' own patience (variant_warmup.{reflect,noreflect_rinit,reflect_noneg}.policy_patience) came after
# the reflection and ablation tables were made: those tables are the shipped configs without it.
POLICY_PATIENCE_VARIANTS = ("reflect", "noreflect_rinit", "reflect_noneg")


def _at_patience_4(cfg: ExperimentConfig) -> ExperimentConfig:
    """``cfg`` as it was before the policies got their own patience (every policy at ``warmup.patience``)."""
    from dataclasses import replace

    own = {v: s for v, s in cfg.variant_warmup.items() if v not in POLICY_PATIENCE_VARIANTS}
    assert all(cfg.variant_warmup[v] == {"policy_patience": 10} for v in POLICY_PATIENCE_VARIANTS)
    return replace(cfg, variant_warmup=own)


def test_the_full_mode_table_config_makes_the_documented_cells():
    # docs/results.md's full-mode table (2026-12-07, one machine) has these fingerprints in its evaluation files:
    # its random-init no-reflection rows (taxi_full_noreflect_cpu.yaml, split off for time, made at 0c5d7af) and
    # the rest, at policy patience 10 (made at the commit that shipped it). The two configs must make the same
    # cells. The table before (every policy at patience 4, made at eeaa6e0; docs/history.md) is the config
    # without the policies' own patience. A change that alters them leaves a table made by a config no longer
    # shipped.
    from frugalft.config import to_dict
    from frugalft.reflect.table import cell_config, digest

    root = resources.files("frugalft") / "configs" / "rl"
    head = load_config(ExperimentConfig, str(root / "taxi_full_cpu.yaml"))
    noreflect = load_config(ExperimentConfig, str(root / "taxi_full_noreflect_cpu.yaml"))
    assert not set(noreflect.methods) & set(head.methods) and noreflect.seeds == head.seeds
    h, n = to_dict(head), to_dict(noreflect)
    h.pop("methods"), n.pop("methods")
    assert n == h
    documented = {(0, "reflect_rl"): "0335edc05bd2d950", (0, "sft_rl_noreflect_rinit"): "b34ff6de073c18db",
                  (2, "sft"): "7668fd7218a50317", (4, "sft_rl_noreflect"): "7288c78f17b5a253",
                  (4, "sft_noreflect_rinit"): "1cc3995cb8a8736d"}
    for (seed, method), expected in documented.items():
        cfg = noreflect if method in noreflect.methods else head
        assert method in cfg.methods and digest(cell_config(cfg, seed, method)) == expected
    before = {(0, "reflect_rl"): "374670de53c3d9f9", (0, "sft_rl_noreflect_rinit"): "ebd0790b09b11185",
              (2, "sft"): "db57c05da6090fe6", (4, "sft_rl_noreflect"): "7288c78f17b5a253",
              (4, "sft_noreflect_rinit"): "43cb516670eaece6"}
    for (seed, method), expected in before.items():
        cfg = noreflect if method in noreflect.methods else head
        assert digest(cell_config(_at_patience_4(cfg), seed, method)) == expected
    # the policies' patience reaches neither the reflection model (a policy-only setting) nor the random-init rows
    assert head.warmup_of(0, "reflect").patience == 4 and head.warmup_of(0, "noreflect").patience == 20
    assert head.warmup_of(0, "noreflect").policy_patience is None


def test_the_reflection_table_is_the_headline_config_on_other_seeds():
    # taxi_full_reflection_cpu.yaml pools its seeds 5-9 with the headline table's 0-4 (docs/results.md): that is
    # sound only while it is the headline config but for seeds and rows, so that a seed's cells are the same.
    # Its documented run (before the policies' own patience) has the three fingerprints below.
    from frugalft.config import to_dict
    from frugalft.reflect.table import cell_config, digest

    root = resources.files("frugalft") / "configs" / "rl"
    head = load_config(ExperimentConfig, str(root / "taxi_full_cpu.yaml"))
    refl = load_config(ExperimentConfig, str(root / "taxi_full_reflection_cpu.yaml"))
    assert not set(refl.seeds) & set(head.seeds) and set(refl.methods) <= set(head.methods)
    h, r = to_dict(head), to_dict(refl)
    for d in (h, r):
        d.pop("seeds"), d.pop("methods")
    assert r == h
    for seed in (0, 5):
        for method in refl.methods:
            assert digest(cell_config(refl, seed, method)) == digest(cell_config(head, seed, method))
    documented = {(5, "reflect_rl"): "0ec74ae5d815246c", (9, "sft_rl_noreflect_rinit"): "44d8909e5d91d596",
                  (7, "sft_noreflect_rinit"): "e0fa4de2d9765c61"}
    for (seed, method), expected in documented.items():
        assert digest(cell_config(_at_patience_4(refl), seed, method)) == expected
        assert digest(cell_config(refl, seed, method)) != expected


def test_a_setting_added_at_the_value_tables_ran_with_keeps_their_cells():
    # rl.update_autocast came after the packaged tables: off (their value) leaves every fingerprint as it was, so
    # their cells are still their configs'; bf16 is another computation, hence another cell.
    from frugalft.reflect.table import cell_changes, cell_config, digest

    path = str(resources.files("frugalft") / "configs" / "rl" / "taxi_full_cpu.yaml")
    off = cell_config(load_config(ExperimentConfig, path, ["rl.update_autocast=off"]), 0, "reflect_rl")
    bf16 = cell_config(load_config(ExperimentConfig, path, ["rl.update_autocast=bf16"]), 0, "reflect_rl")
    assert digest(off) == "0335edc05bd2d950" != digest(bf16)
    assert cell_changes(off, bf16) == ["rl.update_autocast: off -> bf16"]
    assert cell_changes(bf16, off) == ["rl.update_autocast: bf16 -> off"]  # a bf16 cell is not an off one
    old = {**off, "rl": {k: v for k, v in off["rl"].items() if k != "update_autocast"}}  # recorded before the field
    assert cell_changes(old, off) == [] and cell_changes(old, bf16) == ["rl.update_autocast: off -> bf16"]

    # warmup.policy_head (the table copies it to rl.policy_head) likewise: label keeps the cell, line is another
    line_cfg = load_config(ExperimentConfig, path, ["warmup.policy_head=line"])
    line = cell_config(line_cfg, 0, "reflect_rl")
    assert line_cfg.for_seed(0)[2].policy_head == "line"
    assert digest(cell_config(load_config(ExperimentConfig, path, ["warmup.policy_head=label"]), 0, "reflect_rl")) \
        == digest(off) != digest(line)
    assert cell_changes(off, line) == ["rl.policy_head: label -> line", "warmup.policy_head: label -> line"]
    with pytest.raises(ValueError, match="rl.policy_head"):  # set where the table reads it, not in rl
        load_config(ExperimentConfig, path, ["rl.policy_head=line"])


def test_the_full_mode_ablation_table_is_the_headline_config_with_its_own_speed_pins():
    # taxi_full_ablations_cpu.yaml is taxi_full_cpu.yaml but for its rows, its seeds and three settings pinned to
    # the values its documented table was made with (two speed settings, and every policy at patience 4: the
    # policies' own patience came after it); its cells have that run's fingerprints (computed at c7fe2b0, where
    # the table ran).
    from frugalft.config import to_dict
    from frugalft.reflect.table import cell_config, digest

    root = resources.files("frugalft") / "configs" / "rl"
    head = load_config(ExperimentConfig, str(root / "taxi_full_cpu.yaml"))
    ablations = load_config(ExperimentConfig, str(root / "taxi_full_ablations_cpu.yaml"))
    assert set(ablations.seeds) <= set(head.seeds) and {"sft", "reflect_rl"} <= set(head.methods)
    h, a = to_dict(head), to_dict(ablations)
    assert (a["warmup"]["length_groups"], a["rl"]["reflection_decoder"]) == (1, "auto")
    assert (h["warmup"]["length_groups"], h["rl"]["reflection_decoder"]) == (8, "static")
    assert ablations.variant_warmup == _at_patience_4(head).variant_warmup
    for d in (h, a):
        d.pop("seeds"), d.pop("methods"), d["warmup"].pop("length_groups"), d["rl"].pop("reflection_decoder")
        d.pop("variant_warmup")
    assert a == h
    documented = {(0, "sft"): "4fcf375c1f83e104", (0, "reflect_rl"): "a0b93b3f3c4e9989",
                  (0, "rl"): "1de118b832", (1, "reflect_rl_noneg"): "aa89d54ead", (2, "rl"): "fd8d10c89a"}
    for (seed, method), expected in documented.items():
        assert digest(cell_config(ablations, seed, method)).startswith(expected)
    assert digest(cell_config(ablations, 0, "reflect_rl")) != digest(cell_config(head, 0, "reflect_rl"))


@pytest.mark.parametrize("cls", ROOTS)
def test_defaults_pass_their_own_rules(cls, tmp_path):
    # Every default, dumped and loaded back, goes through the same checks as a user's file.
    path = tmp_path / "defaults.yaml"
    path.write_text(dump_yaml(cls()))
    assert load_config(cls, path) == cls()


def _numeric(tp) -> bool:
    if tp in (int, float):
        return True
    return any(_numeric(a) for a in typing.get_args(tp) if typing.get_origin(tp) is not typing.Literal)


def _config_classes() -> list[type]:
    seen: list[type] = []
    todo = list(ROOTS)
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.append(cls)
        todo += [tp for tp in typing.get_type_hints(cls).values() if dataclasses.is_dataclass(tp)]
    return seen


def test_every_numeric_field_has_a_rule():
    # A new numeric knob must say its range (VALUE_RULES or field metadata), or it would go unchecked.
    hints = {cls: typing.get_type_hints(cls) for cls in _config_classes()}
    missing = [f"{cls.__name__}.{f.name}" for cls in hints for f in dataclasses.fields(cls)
               if _numeric(hints[cls][f.name]) and value_rule(cls, f) is None]
    assert not missing, f"numeric config fields without a range rule: {missing}"


@pytest.mark.parametrize("override", ["warmup.lora=true", "warmup.lora_r=8"])
def test_lora_is_spelled_one_way_and_the_old_spelling_says_the_new(override):
    with pytest.raises(ConfigError, match=r"warmup\.lora.*LoRA is now `finetune: lora` with `lora: \{r: 16"):
        load_config(ExperimentConfig, None, [override])
    cfg = load_config(ExperimentConfig, None, ["warmup.finetune=lora", "warmup.lora.r=8", "rl.finetune=lora",
                                               "rl.lora.r=8"])
    assert (cfg.warmup.lora.r, cfg.warmup.lora.alpha, cfg.rl.lora.r) == (8, 8, 8)
    with pytest.raises(ConfigError, match=r"^warmup\.lora\.r: must be >= 1, got 0$"):  # no rename hint here
        load_config(ExperimentConfig, None, ["warmup.lora.r=0"])


def test_a_run_recorded_with_the_old_lora_keys_is_read_in_the_new_ones(tmp_path):
    from frugalft.reflect.table import cell_changes
    from frugalft.reflect.warmup import WarmupConfig
    from frugalft.runs import RunError, check_config

    new = yaml_of(WarmupConfig())
    old = {k: v for k, v in new.items() if k not in ("finetune", "lora")}
    old.update(lora=False, lora_r=16, lora_alpha=8, lora_dropout=0.05)  # as config.yaml recorded it before
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n')  # something to resume
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    check_config(tmp_path, WarmupConfig())  # a full fine-tune then and now: resumes
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old | {"lora": True, "lora_r": 4}))
    with pytest.raises(RunError, match=r"finetune: lora -> full; lora\.r: 4 -> 16"):
        check_config(tmp_path, WarmupConfig())  # a LoRA run is not resumed as a full one
    check_config(tmp_path, WarmupConfig(finetune="lora", lora=LoraSettings(r=4)))
    # A table cell recorded before: the same reading.
    assert cell_changes({"warmup": old | {"lora": True}}, {"warmup": new}) == ["warmup.finetune: lora -> full"]
    assert cell_changes({"warmup": old}, {"warmup": new}) == []


def yaml_of(config: object) -> dict:
    return yaml.safe_load(dump_yaml(config))


def test_yaml_booleans_spell_a_choice_named_off_or_on(tmp_path):
    """YAML 1.1 reads `off` as False: `--set warmup.autocast=off` (and `autocast: off` in a file) is the choice "off",
    not an error; a bool where no choice is spelled like it stays an error."""
    from frugalft.reflect.warmup import WarmupConfig
    from frugalft.sft.train import SFTConfig

    assert load_config(WarmupConfig, None, ["autocast=off"]).autocast == "off"
    path = tmp_path / "w.yaml"
    path.write_text("autocast: off\n")
    assert load_config(WarmupConfig, path, []).autocast == "off"
    assert load_config(SFTConfig, None, ["chat_template=off"]).chat_template == "off"
    with pytest.raises(ConfigError, match="autocast: True is not one of"):
        load_config(WarmupConfig, None, ["autocast=yes"])  # no choice is spelled "on" / "yes"
