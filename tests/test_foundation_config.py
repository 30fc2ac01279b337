from dataclasses import dataclass, field

import pytest

from frugalft.config import ConfigError, dump_yaml, load_config


@dataclass
class Optim:
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)


@dataclass
class Cfg:
    model: str = "tiny"
    steps: int = 10
    use_lora: bool = False
    levels: list[int] = field(default_factory=lambda: [0, 1])
    optim: Optim = field(default_factory=Optim)
    note: str | None = None


def test_defaults_file_and_overrides_compose(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("command: frugalft something\nsteps: 20\noptim:\n  lr: 0.01\n")
    cfg = load_config(Cfg, path, ["optim.betas=[0.8, 0.9]", "use_lora=true", "note=hi"])
    assert cfg.steps == 20
    assert cfg.optim.lr == 0.01  # from the file
    assert cfg.optim.betas == (0.8, 0.9)  # list coerced to the declared tuple
    assert cfg.use_lora is True and cfg.note == "hi"
    assert cfg.levels == [0, 1]  # untouched default
    # The dump re-loads to the same config.
    again = tmp_path / "again.yaml"
    again.write_text(dump_yaml(cfg))
    assert load_config(Cfg, again) == cfg


def test_a_file_states_only_what_differs_from_its_base(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "root.yaml").write_text("model: big\nsteps: 20\nlevels: [0, 1, 2]\noptim:\n  lr: 0.01\n  betas: [0.5, 0.6]\n")
    (tmp_path / "sub" / "mid.yaml").write_text("command: frugalft x\nbase: ../root.yaml\nsteps: 30\n")
    (tmp_path / "sub" / "top.yaml").write_text("base: mid.yaml\nlevels: [2]\noptim:\n  lr: 0.02\n")
    cfg = load_config(Cfg, tmp_path / "sub" / "top.yaml", ["steps=40"])
    # Sections merge key by key (betas kept from the root), lists replace, the chain applies in order, and
    # overrides come last.
    assert cfg == Cfg(model="big", steps=40, levels=[2], optim=Optim(lr=0.02, betas=(0.5, 0.6)))
    assert load_config(Cfg, tmp_path / "sub" / "mid.yaml").steps == 30


@dataclass
class MaybeOptim:
    optim: Optim | None = None


def test_an_optional_section_merges_with_its_base_too(tmp_path):
    (tmp_path / "b.yaml").write_text("optim: {lr: 0.5, betas: [0.1, 0.2]}\n")
    (tmp_path / "t.yaml").write_text("base: b.yaml\noptim: {lr: 0.2}\n")
    assert load_config(MaybeOptim, tmp_path / "t.yaml").optim == Optim(lr=0.2, betas=(0.1, 0.2))


def test_a_base_that_is_missing_or_circular_is_named(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match=r"a cycle of base: files: .*a\.yaml -> .*b\.yaml -> .*a\.yaml"):
        load_config(Cfg, tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("base: nowhere.yaml\n")
    with pytest.raises(ConfigError, match=r"not found: .*nowhere\.yaml \(the base of .*c\.yaml\)"):
        load_config(Cfg, tmp_path / "c.yaml")
    for bad in ("[a.yaml]", "''"):
        (tmp_path / "d.yaml").write_text(f"base: {bad}\n")
        with pytest.raises(ConfigError, match=r"d\.yaml: base must be the path of another config file"):
            load_config(Cfg, tmp_path / "d.yaml")


def test_int_is_accepted_for_float_but_not_the_reverse():
    assert load_config(Cfg, None, ["optim.lr=1"]).optim.lr == 1.0
    with pytest.raises(ConfigError, match="steps"):
        load_config(Cfg, None, ["steps=1.5"])


@dataclass
class Window:
    lo: int = 0
    hi: int = 1

    def __post_init__(self):
        if self.lo >= self.hi:
            raise ValueError("lo must be below hi")


@dataclass
class Windowed:
    steps: int = 1
    window: Window = field(default_factory=Window)


def test_a_bad_value_names_the_file_and_line_that_set_it(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "root.yaml").write_text("model: big\noptim:\n  betas: [0.5, 0.6]\n  lr: fast\n")
    top = tmp_path / "sub" / "top.yaml"
    top.write_text("base: ../root.yaml\nsteps: 3\nlevels: [0, true]\noptim: {betas: [1]}\n")
    # The base's line 4 set optim.lr; the error says so and which file took it as its base.
    with pytest.raises(ConfigError, match=r"^\S*root\.yaml, line 4 \(the base of \S*top\.yaml\): optim\.lr: expected "
                                          r"float, got 'fast'$"):
        load_config(Cfg, top)
    # The top file's own values, once the base's is mended by an override (which itself carries no file): a
    # fixed-length tuple checks its length (optim.betas: two floats), a list item reports its key's line.
    with pytest.raises(ConfigError, match=r"^\S*top\.yaml, line 4: optim\.betas: expected 2 values, got 1: \[1\]$"):
        load_config(Cfg, top, ["optim.lr=0.1"])
    with pytest.raises(ConfigError, match=r"^\S*top\.yaml, line 3: levels\[1\]: expected int, got True$"):
        load_config(Cfg, top, ["optim.lr=0.1", "optim.betas=[1, 2]"])
    with pytest.raises(ConfigError, match=r"^levels\[1\]: expected int"):
        load_config(Cfg, top, ["optim.lr=0.1", "optim.betas=[1, 2]", "levels=[0, true]"])
    # An override of a key the file set (or of a section holding it) is the user's, not the file's.
    with pytest.raises(ConfigError, match=r"^optim\.lr: expected float, got 'slow'$"):
        load_config(Cfg, top, ["optim.lr=slow"])
    with pytest.raises(ConfigError, match=r"^optim\.lr: expected float, got 'slow'$"):
        load_config(Cfg, top, ["optim={lr: slow}"])
    # A section's own check is the file's unless an override changed a key inside that section.
    (tmp_path / "w.yaml").write_text("steps: 3\nwindow:\n  lo: 1\n  hi: 0\n")
    with pytest.raises(ConfigError, match=r"^\S*w\.yaml, line 2: window: lo must be below hi$"):
        load_config(Windowed, tmp_path / "w.yaml")
    with pytest.raises(ConfigError, match=r"^window: lo must be below hi$"):
        load_config(Windowed, tmp_path / "w.yaml", ["window.lo=5", "window.hi=4"])
    # An optional section's error keeps its inner key: the base's line, not the top file's section.
    (tmp_path / "ob.yaml").write_text("optim: {lr: fast}\n")
    (tmp_path / "ot.yaml").write_text("base: ob.yaml\n\noptim: {betas: [1, 2]}\n")
    with pytest.raises(ConfigError, match=r"^\S*ob\.yaml, line 1 \(the base of \S*ot\.yaml\): optim\.lr"):
        load_config(MaybeOptim, tmp_path / "ot.yaml")
    # YAML keys that are not strings (1:, on:) are unknown keys like any other, as is a looping alias.
    (tmp_path / "k.yaml").write_text("steps: 3\noptim:\n  on: 2\n")
    with pytest.raises(ConfigError, match=r"^\S*k\.yaml, line 3: unknown config key optim\.True"):
        load_config(Cfg, tmp_path / "k.yaml")
    (tmp_path / "mixed.yaml").write_text("optim:\n  zz: 3\n  1: 2\n")  # keys of two types are still ordered
    with pytest.raises(ConfigError, match=r"^\S*mixed\.yaml, line 3: unknown config key optim\.1;"):
        load_config(Cfg, tmp_path / "mixed.yaml")
    (tmp_path / "loop.yaml").write_text("optim: &x {lr: 1, me: *x}\n")
    with pytest.raises(ConfigError, match=r"unknown config key optim\.me"):
        load_config(Cfg, tmp_path / "loop.yaml")
    # An unknown key and a section's key: the line that wrote them.
    (tmp_path / "u.yaml").write_text("steps: 3\noptim:\n  lr: 0.1\n  lrr: 2\n")
    with pytest.raises(ConfigError, match=r"^\S*u\.yaml, line 4: unknown config key optim\.lrr"):
        load_config(Cfg, tmp_path / "u.yaml")


@dataclass
class Labelled:
    pair: tuple[int, str] = (0, "a")
    many: tuple[int, ...] = (1, 2)


def test_a_tuple_checks_each_item_against_its_own_type():
    assert load_config(Labelled, None, ["pair=[3, b]", "many=[4, 5, 6]"]) == Labelled((3, "b"), (4, 5, 6))
    with pytest.raises(ConfigError, match=r"^pair\[1\]: expected str, got 4$"):
        load_config(Labelled, None, ["pair=[3, 4]"])
    with pytest.raises(ConfigError, match=r"^many\[2\]: expected int, got 'x'$"):
        load_config(Labelled, None, ["many=[4, 5, x]"])


def test_unknown_key_names_it_and_the_valid_ones(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(Cfg, None, ["stpes=3"])
    assert "stpes" in str(e.value) and "steps" in str(e.value) and "optim" in str(e.value)
    with pytest.raises(ConfigError, match=r"optim\.lrr.*valid keys of Optim: betas, lr"):
        load_config(Cfg, None, ["optim.lrr=3"])


def test_bad_files_are_reported(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(Cfg, tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: [1,\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(Cfg, bad)
    with pytest.raises(ConfigError, match="key=value"):
        load_config(Cfg, None, ["steps"])
    with pytest.raises(ConfigError, match="use_lora: expected true/false"):
        load_config(Cfg, None, ["use_lora=3"])
