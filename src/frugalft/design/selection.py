"""One registry of selection strategies, the ``Selection`` they return, and ``select_prompts`` that runs them.

A strategy is one function ``fn(ctx: Context) -> (indices, scores)`` registered with ``@strategy(name, ...)``:
``indices`` are pool row positions in pick order, ``scores`` the score or marginal gain of each pick. The
context hands out the budget, a seeded RNG, validated parameters, and features computed (and cached) on
first use, so a strategy asks for ``ctx.embeddings()`` or ``ctx.uncertainty()`` and never loads models itself.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from frugalft.atomic import atomic_path
from frugalft.design.pools import DesignError, Pool


@dataclass
class Selection:
    """The chosen prompts, in pick order."""

    indices: np.ndarray  # pool row positions, in pick order
    ids: list[str]  # pool ids, same order
    scores: np.ndarray  # score (uncertainty strategies) or marginal gain (greedy ones) of each pick
    strategy: str
    params: dict[str, Any] = field(default_factory=dict)  # the full parameters used, defaults included
    extras: dict[str, Any] = field(default_factory=dict)  # e.g. gains curve data, sigma chosen

    def __len__(self) -> int:
        return len(self.indices)

    def save(self, path: str | Path) -> None:
        """JSONL, one row per pick: id, rank (1 = first pick), index, strategy, score, params."""
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            for rank, (i, pid, s) in enumerate(zip(self.indices, self.ids, self.scores, strict=True), start=1):
                f.write(json.dumps({"id": pid, "rank": rank, "index": int(i), "strategy": self.strategy,
                                    "score": _finite(s), "params": self.params}, ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Selection:
        rows = []
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    rows.append((int(row["rank"]), int(row["index"]), str(row["id"]), row.get("score"),
                                 row["strategy"], row.get("params") or {}))
                except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                    raise DesignError(f"{path}:{lineno}: not a selection row ({e})") from None
        if not rows:
            raise DesignError(f"{path}: the selection is empty")
        rows.sort()
        return cls(np.array([r[1] for r in rows], dtype=np.int64), [r[2] for r in rows],
                   np.array([np.nan if r[3] is None else r[3] for r in rows], dtype=np.float64),
                   rows[0][4], rows[0][5])


def _finite(x: float) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


@dataclass
class Context:
    """What a strategy may use. Features are computed lazily and cached on disk by pool content and model."""

    pool: Pool
    budget: int
    seed: int
    params: dict[str, Any]
    model: str | None
    cache: bool
    extras: dict[str, Any] = field(default_factory=dict)  # strategies put diagnostics here (gains, sigma)

    @property
    def rng(self) -> np.random.Generator:
        return np.random.default_rng(self.seed)

    def embeddings(self, kind: str | None = None) -> np.ndarray:
        """(n, d) float32 unit-norm rows: ``sentence`` (MiniLM) or ``lm`` (pooled base-model hidden states)."""
        from frugalft.design.features import embeddings

        kind = kind or self.params.get("features", "sentence")
        return embeddings(self.pool, kind=kind, model=self.model, cache=self.cache,
                          batch_size=int(self.params.get("batch_size", 64)))

    def uncertainty(self) -> dict[str, np.ndarray]:
        from frugalft.design.uncertainty import pool_uncertainty

        if self.model is None:
            raise DesignError("uncertainty strategies need the base model: pass model= (e.g. --model tiny)")
        return pool_uncertainty(self.pool, self.model, max_new_tokens=int(self.params.get("max_new_tokens", 32)),
                                batch_size=int(self.params.get("batch_size", 32)), cache=self.cache)


StrategyFn = Callable[[Context], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Strategy:
    name: str
    fn: StrategyFn
    defaults: dict[str, Any]  # every accepted parameter with its default; others are refused by name
    about: str


STRATEGIES: dict[str, Strategy] = {}


def strategy(name: str, about: str, **defaults: Any) -> Callable[[StrategyFn], StrategyFn]:
    """Register ``fn`` under ``name``; keyword arguments are its parameters and their defaults."""

    def register(fn: StrategyFn) -> StrategyFn:
        if name in STRATEGIES:
            raise ValueError(f"strategy {name!r} registered twice")
        STRATEGIES[name] = Strategy(name, fn, dict(defaults), about)
        return fn

    return register


def select_prompts(
    pool: Pool,
    strategy: str,
    budget: int,
    seed: int = 0,
    params: dict[str, Any] | None = None,
    model: str | None = None,
    cache: bool = True,
) -> Selection:
    """Choose ``budget`` prompts of ``pool`` with a registered strategy (``STRATEGIES`` lists them; the package
    ``frugalft.design`` registers the built-in ones when it is imported, before this module is reachable)."""
    if strategy not in STRATEGIES:
        raise DesignError(f"unknown strategy {strategy!r}; choose from {', '.join(sorted(STRATEGIES))}")
    spec = STRATEGIES[strategy]
    n = len(pool)
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)):
        raise DesignError(f"budget must be an integer, got {budget!r}")
    if budget <= 0:
        raise DesignError(f"budget must be at least 1, got {budget}")
    if budget > n:
        raise DesignError(f"budget {budget} is larger than the pool ({n} prompts in {pool.source})")
    given = dict(params or {})
    unknown = sorted(set(given) - set(spec.defaults))
    if unknown:
        valid = ", ".join(sorted(spec.defaults)) or "none"
        raise DesignError(f"strategy {strategy!r} has no parameter(s) {', '.join(unknown)}; valid: {valid}")
    full = {**spec.defaults, **given}
    ctx = Context(pool, int(budget), seed, full, model, cache)
    indices, scores = spec.fn(ctx)
    indices = np.asarray(indices, dtype=np.int64)
    if len(indices) != budget or len(np.unique(indices)) != budget:
        raise RuntimeError(f"strategy {strategy!r} returned {len(indices)} picks ({len(np.unique(indices))} "
                           f"distinct) for budget {budget}")
    ids = [str(x) for x in pool.table.column("id").take(indices).to_pylist()]
    record = {**full, "seed": seed, **({"model": model} if model else {})}
    # Scalars a strategy chose itself (e.g. the automatic sigma) belong with the parameters.
    for k, v in ctx.extras.items():
        if isinstance(v, (int, float, str)):
            record[f"{k}_chosen" if k in record else k] = v
    return Selection(indices, ids, np.asarray(scores, dtype=np.float64), strategy, record, ctx.extras)
