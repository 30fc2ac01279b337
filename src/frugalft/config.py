"""Configs are dataclasses; YAML files and ``key=value`` overrides fill them, strictly.

A recipe declares ``@dataclass class FooConfig`` whose fields (with their comments) are the documentation of
its knobs. ``load_config(FooConfig, "configs/foo.yaml", ["lr=1e-3", "model.name=tiny"])`` reads the file,
applies the overrides in order, and rejects any key the dataclass does not have, naming the valid ones. A file
may start from another (``base: other.yaml``, relative to it) and state only what differs: its sections merge
into the base's key by key, other values replace the base's.

Values are checked at load, so a bad one is a one-line error naming its key (and the file and line that set
it) rather than a crash (or a silently meaningless run) hours later: types strictly (a bool is not an int, a
float is finite), and numeric ranges by the field's name through ``VALUE_RULES`` (``lr`` > 0, ``batch_size``
>= 1, ...). A field can override its rule with ``field(metadata={"min": 0})`` (keys ``min``, ``gt``, ``max``,
``lt``).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config mistake. ``key``: the dotted key it is about, where one is (``load_config`` adds where it was set)."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


# ---- YAML as users write numbers ----------------------------------------------------------------------------
class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-4``, ``3e-5``, ``1E3`` as floats.

    YAML 1.1 (PyYAML) wants a dot and a signed exponent (``1.0e-4``) and leaves ``1e-4`` a string; YAML 1.2
    and every user mean a float. The extra resolver runs after the standard ones, so it only claims scalars
    that would otherwise have been strings.
    """


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def safe_load(text: str) -> Any:
    """``yaml.safe_load`` with YAML 1.2's exponent floats (``1e-4``): the reader of config files and overrides."""
    return yaml.load(text, Loader=_Loader)  # safe: _Loader is a SafeLoader


# ---- value rules ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Bounds:
    """Allowed range of a numeric field (each bound optional): ``min <= x``, ``gt < x``, ``x <= max``, ``x < lt``."""

    min: float | None = None
    gt: float | None = None
    max: float | None = None
    lt: float | None = None

    def admits(self, x: float) -> bool:
        return ((self.min is None or x >= self.min) and (self.gt is None or x > self.gt)
                and (self.max is None or x <= self.max) and (self.lt is None or x < self.lt))

    def __str__(self) -> str:
        parts = [f"{op} {v:g}" for op, v in ((">=", self.min), (">", self.gt), ("<=", self.max), ("<", self.lt))
                 if v is not None]
        return " and ".join(parts) or "any number"


ANY = Bounds()
NON_NEGATIVE = Bounds(min=0)
POSITIVE = Bounds(gt=0)
AT_LEAST_1 = Bounds(min=1)
PROBABILITY = Bounds(min=0, max=1)
SHARE = Bounds(min=0, lt=1)  # a share held out or dropped: 1 would leave nothing

# Numeric ranges by field name: the first pattern (fnmatch) that matches ``Class.field`` or ``field`` wins, so
# the exceptions, by class, come first. Elements of list and mapping fields (seeds, budgets, extra_seeds) are
# checked one by one. A field no pattern matches is only type-checked; tests/test_config_values.py requires a
# rule for every numeric field of the packaged configs. Where 0 or a negative value means something, the
# comment says what.
VALUE_RULES: tuple[tuple[str, Bounds], ...] = (
    # -- exceptions (a name pattern below would be too strict)
    ("RLConfig.eval_interval", NON_NEGATIVE),  # 0: no evaluation during training
    ("SFTConfig.eval_every", NON_NEGATIVE),  # 0: held-out loss only at the end
    ("SFTConfig.save_every", ANY),  # 0: checkpoint only at the end; < 0: never
    ("SFTConfig.max_steps", NON_NEGATIVE),  # 0: run `epochs` instead
    ("SFTConfig.eval_max", NON_NEGATIVE),  # 0: no held-out loss
    ("TeacherConfig.temperature", NON_NEGATIVE),  # sent to a chat endpoint; 0: the same answer every time
    ("reflection_temperature", NON_NEGATIVE),  # 0: greedy reflections
    # -- optimisation
    ("lr", POSITIVE),
    ("*_lr", POSITIVE),
    ("weight_decay", NON_NEGATIVE),
    ("max_grad_norm", POSITIVE),  # clipping to 0 would zero every gradient
    ("grad_clip", POSITIVE),
    ("warmup_ratio", PROBABILITY),
    ("*_coef", NON_NEGATIVE),  # entropy, value, KL: 0 switches the term off
    ("ppo_clip", POSITIVE),
    ("gamma", PROBABILITY),
    ("gae_lambda", PROBABILITY),
    ("temperature", POSITIVE),  # logits are divided by it (greedy decoding has its own switch)
    # -- sizes and counts
    ("batch_size", AT_LEAST_1),
    ("*_batch_size", AT_LEAST_1),
    ("minibatch", AT_LEAST_1),
    ("num_envs", AT_LEAST_1),
    ("group_size", AT_LEAST_1),  # GRPO's own check asks for >= 2
    ("length_groups", AT_LEAST_1),  # 1: off
    ("iterations", AT_LEAST_1),
    ("epochs", AT_LEAST_1),
    ("*_epochs", AT_LEAST_1),
    ("*_steps", AT_LEAST_1),
    ("*_interval", AT_LEAST_1),  # a modulus
    ("*_every", AT_LEAST_1),  # a modulus
    ("repeats", AT_LEAST_1),
    ("episodes_per_task", AT_LEAST_1),
    ("replay_episodes", AT_LEAST_1),
    ("replay_capacity", NON_NEGATIVE),  # 0: no success replay
    ("negatives_per_episode", NON_NEGATIVE),  # 0: no corrective examples
    ("patience", NON_NEGATIVE),  # 0: never stop early
    ("policy_patience", NON_NEGATIVE),  # null: patience
    ("val_max_examples", AT_LEAST_1),
    ("val_generate", NON_NEGATIVE),  # 0: skip the exact-match check
    ("*_tokens", AT_LEAST_1),
    ("max_len", AT_LEAST_1),
    ("max_length", AT_LEAST_1),
    ("max_words", AT_LEAST_1),
    ("*max_tasks*", AT_LEAST_1),  # max_tasks, eval_max_tasks, max_tasks_per_level; null: all
    ("tasks_per_level", AT_LEAST_1),  # null: all
    ("pool_subsample", NON_NEGATIVE),  # 0: the whole pool
    ("eval_per_task", NON_NEGATIVE),  # 0: every eval row
    ("budgets", AT_LEAST_1),
    ("reference_budget", NON_NEGATIVE),  # 0: the largest budget
    ("levels", NON_NEGATIVE),
    # -- LoRA
    ("r", AT_LEAST_1),
    ("alpha", AT_LEAST_1),
    ("dropout", SHARE),
    ("*_dropout", SHARE),
    # -- shares and probabilities
    ("val_fraction", SHARE),  # 0: no validation
    ("eval_fraction", SHARE),  # 0: no held-out split
    ("explore_prob", PROBABILITY),
    # -- seeds (numpy's generators refuse negative ones)
    ("seed", NON_NEGATIVE),
    ("*_seed", NON_NEGATIVE),
    ("*seeds", NON_NEGATIVE),  # seeds, extra_seeds
    # -- scale-out and the teacher's endpoint
    ("workers", NON_NEGATIVE),  # 0: in this process
    ("cpus_per_worker", NON_NEGATIVE),
    ("gpus_per_worker", NON_NEGATIVE),
    ("timeout_s", POSITIVE),
    ("backoff_s", NON_NEGATIVE),
    ("max_retries", NON_NEGATIVE),
)

_BOUND_KEYS = ("min", "gt", "max", "lt")


def value_rule(cls: type, f: dataclasses.Field) -> Bounds | None:
    """The range ``f`` of ``cls`` must hold: its ``metadata`` bounds, else the first matching ``VALUE_RULES`` row."""
    if any(k in f.metadata for k in _BOUND_KEYS):
        return Bounds(**{k: f.metadata[k] for k in _BOUND_KEYS if k in f.metadata})
    for name in (f"{cls.__name__}.{f.name}", f.name):
        for pattern, bounds in VALUE_RULES:
            if fnmatch.fnmatchcase(name, pattern):
                return bounds
    return None


def _check_range(value: Any, bounds: Bounds, key: str) -> None:
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_range(v, bounds, f"{key}[{i}]")
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_range(v, bounds, f"{key}.{k}")
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and not bounds.admits(value):
        raise ConfigError(f"{key}: must be {bounds}, got {value!r}", key)


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; convert the harmless cases (int -> float, list -> tuple)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors: list[ConfigError] = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(e)
        if len(errors) == 1:  # ``X | None``: X's own error (and the key inside X it is about) says more
            raise errors[0]
        raise ConfigError(f"{key}: {value!r} does not fit {tp}")
    if origin is typing.Literal:
        if isinstance(value, bool) and value not in typing.get_args(tp):
            # YAML 1.1 reads off / on / no / yes as booleans: `--set warmup.autocast=off` means the choice "off".
            spelled = [c for c in typing.get_args(tp) if isinstance(c, str)
                       and c.lower() in (("on", "yes", "true") if value else ("off", "no", "false"))]
            value = spelled[0] if len(spelled) == 1 else value
        if value not in typing.get_args(tp):
            raise ConfigError(f"{key}: {value!r} is not one of {list(typing.get_args(tp))}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            value = [value]
        args = typing.get_args(tp) or (Any,)
        if origin is tuple and Ellipsis not in args and len(value) != len(args):  # tuple[float, float]: two
            raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}: {list(value)!r}")
        item_types = args if origin is tuple and Ellipsis not in args else (args[0],) * len(value)
        items = [_coerce(v, t, f"{key}[{i}]") for i, (v, t) in enumerate(zip(value, item_types, strict=True))]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        (_, inner) = typing.get_args(tp) or (Any, Any)
        return {k: _coerce(v, inner, f"{key}.{k}") for k, v in value.items()}
    if _is_dataclass_type(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping for {tp.__name__}, got {value!r}")
        return _build(tp, value, prefix=f"{key}.")
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is bool and not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    # bool is a subclass of int: `batch_size: true` would otherwise be a batch of 1.
    if tp in (int, float, str) and (not isinstance(value, tp) or isinstance(value, bool)):
        raise ConfigError(f"{key}: expected {tp.__name__}, got {value!r}")
    if tp is float and not math.isfinite(value):
        raise ConfigError(f"{key}: expected a finite float, got {value!r}")
    return value


def _build(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    types_ = _field_types(cls)
    unknown = sorted(set(data) - set(types_), key=str)  # YAML keys may be ints or booleans beside strings
    renamed: dict[str, str] = getattr(cls, "RENAMED", {})
    if unknown and unknown[0] in renamed:
        raise ConfigError(f"unknown config key {prefix}{unknown[0]}: {renamed[unknown[0]]}", f"{prefix}{unknown[0]}")
    if unknown:
        raise ConfigError(
            f"unknown config key {prefix}{unknown[0]!s}; valid keys of {cls.__name__}: {', '.join(sorted(types_))}",
            f"{prefix}{unknown[0]}",  # YAML keys may be ints or booleans (`on:`)
        )
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for k, v in data.items():
        try:
            kwargs[k] = _coerce(v, types_[k], prefix + k)
        except ConfigError as e:
            e.key = e.key or prefix + k  # the innermost section's key, where a section failed
            if k not in renamed or isinstance(v, dict):  # a mapping is the new spelling: its own error says it
                raise
            raise ConfigError(f"{e} ({renamed[k]})", e.key) from None
        bounds = value_rule(cls, fields[k])
        if bounds is not None:
            _check_range(kwargs[k], bounds, prefix + k)
    try:
        return cls(**kwargs)
    except ConfigError as e:
        e.key = e.key or prefix.rstrip(".") or None
        raise
    except ValueError as e:  # a __post_init__ check (e.g. GRPO's group_size): still a config mistake
        # A message that starts with one of this section's keys ("variant_warmup.noreflect: ...") is about it.
        named = re.match(r"([A-Za-z_]\w*)([\w.]*): ", str(e))
        key = prefix + named.group(1) + named.group(2) if named and named.group(1) in fields else prefix.rstrip(".")
        raise ConfigError(f"{prefix.rstrip('.') or cls.__name__}: {e}", key or None) from e


def build(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """``cls`` from plain values, checked as a config file's are (unknown keys, types, value ranges: a
    ConfigError naming ``prefix`` + the key)."""
    return _build(cls, data, prefix)


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = data
    for p in parents:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted}: {p} is not a section")
    node[last] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``"a.b=3"`` -> ``("a.b", 3)``; the value is read as YAML, so ``true``, ``1e-3`` and ``[1, 2]`` work."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value")
    key, raw = text.split("=", 1)
    if not raw.strip():
        return key.strip(), ""
    try:
        return key.strip(), safe_load(raw)
    except yaml.YAMLError as e:
        raise ConfigError(f"override {text!r}: not valid YAML: {' '.join(str(e).split())}") from e


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    where: dict[str, str | None] = {}  # dotted key -> "file, line N" that set its value; None: an override
    data: dict[str, Any] = _read_file(cls, Path(path), where=where) if path is not None else {}
    for text in overrides or []:
        key, value = parse_override(text)
        _set_dotted(data, key, value)
        for k in [k for k in where if k.startswith(key + ".")]:  # the override replaced them
            del where[k]
        where[key] = None  # the user just typed it: the key says where
    try:
        # Nested sections merge with their defaults rather than replacing them.
        return _build(cls, _merge_defaults(cls, data))
    except ConfigError as e:
        origin = _where_set(e.key, where)
        if origin is None:
            raise
        raise ConfigError(f"{origin}: {e}", e.key) from None


def _where_set(key: str | None, where: dict[str, str | None]) -> str | None:
    """Where ``key`` (or the nearest section above it) was set; ``seeds[2]`` is the line of ``seeds``. None for an
    override, and for a section's own check (``rl: grpo needs ...``) where an override changed a key inside it."""
    parts = re.sub(r"\[\d+\]", "", key or "").split(".")
    for n in range(len(parts), 0, -1):
        section = ".".join(parts[:n])
        if section in where:
            overridden = any(v is None and k.startswith(section + ".") for k, v in where.items())
            return None if overridden else where[section]
    return None


def _key_lines(node: yaml.Node, prefix: str = "", seen: frozenset[int] = frozenset()) -> dict[str, int]:
    """Dotted key -> 1-based line of every key in a composed YAML mapping, nested mappings included; a merge
    (``<<: *defaults``) gives its keys to the mapping it sits in. ``seen``: the nodes above (an alias may loop)."""
    out: dict[str, int] = {}
    if not isinstance(node, yaml.MappingNode) or id(node) in seen:
        return out
    seen = seen | {id(node)}
    for key_node, value_node in node.value:
        if key_node.value == "<<":  # merged keys first: the mapping's own keys win, as in the values
            merged = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            out = {**{k: v for m in merged for k, v in _key_lines(m, prefix, seen).items()}, **out}
            continue
        key = f"{prefix}{_key_name(key_node)}"
        out[key] = key_node.start_mark.line + 1
        out.update(_key_lines(value_node, key + ".", seen))
    return out


def _key_name(node: yaml.Node) -> str:
    """A mapping key as the loaded data spells it: an unquoted ``on`` is True, ``1`` is 1."""
    if not isinstance(node, yaml.ScalarNode) or node.style:  # quoted: a string as written
        return str(node.value)
    try:
        return str(safe_load(node.value))
    except yaml.YAMLError:
        return str(node.value)


def _read_file(cls: type, path: Path, chain: tuple[Path, ...] = (),
               where: dict[str, str | None] | None = None) -> dict[str, Any]:
    """A config file's mapping, laid over the file its ``base:`` key names (a path relative to this file), so a
    config that differs from another in a few settings states only those and cannot drift from the rest.
    ``where`` gets, for each dotted key, the file and line that set it (a base's keys first, then this file's)."""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}" + (f" (the base of {chain[-1]})" if chain else ""))
    if path.resolve() in chain:
        raise ConfigError("a cycle of base: files: " + " -> ".join(map(str, (*chain, path.resolve()))))
    loader = _Loader(path.read_text(encoding="utf-8"))
    try:  # one parse: the node tree gives the keys' lines, then the values (what ``safe_load`` does in one call)
        node = loader.get_single_node()
        loaded = (loader.construct_document(node) if node is not None else None) or {}
        lines = _key_lines(node)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    finally:
        loader.dispose()
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    # A config may name the command that runs it; that key is documentation, not a setting.
    loaded.pop("command", None)
    base = loaded.pop("base", None)
    if base is not None and (not isinstance(base, str) or not base.strip()):
        raise ConfigError(f"{path}: base must be the path of another config file, got {base!r}")
    under = _read_file(cls, path.parent / base, (*chain, path.resolve()), where) if base is not None else None
    if where is not None:
        of = f" (the base of {chain[-1]})" if chain else ""
        where.update({k: f"{path}, line {n}{of}" for k, n in lines.items()})
    return loaded if under is None else _overlay(cls, under, loaded)


def _overlay(cls: type, base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``: a config section (a dataclass field, optional or not) merges key by key; any other
    value, a list or a plain mapping such as ``env_kwargs`` included, replaces the base's whole."""
    types_ = _field_types(cls)
    out = dict(base)
    for k, v in top.items():
        section = [a for a in (types_.get(k), *typing.get_args(types_.get(k))) if _is_dataclass_type(a)]
        if section and isinstance(v, dict) and isinstance(base.get(k), dict):
            out[k] = _overlay(section[0], base[k], v)
        else:
            out[k] = v
    return out


def _merge_defaults(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    types_ = _field_types(cls)
    out = dict(data)
    for name, tp in types_.items():
        if _is_dataclass_type(tp) and isinstance(data.get(name), dict):
            default = _default_of(cls, name)
            base = dataclasses.asdict(default) if default is not None else {}
            out[name] = {**base, **_merge_defaults(tp, data[name])}
    return out


def _default_of(cls: type, name: str) -> Any:
    for f in dataclasses.fields(cls):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                return f.default_factory()  # type: ignore[misc]
    return None


def to_dict(config: Any) -> dict[str, Any]:
    """A config dataclass (or an already plain mapping) as plain data."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    return dict(config)


def dump_yaml(config: Any) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)
