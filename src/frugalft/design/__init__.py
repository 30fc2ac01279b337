"""Experimental design for label-efficient SFT: choose, once and with the base model only, which prompts to label.

``load_pool`` reads a pool; ``select_prompts(pool, strategy, budget)`` returns a ``Selection``; ``STRATEGIES``
is the registry (add one with ``@strategy(name, about, **defaults)``).
"""

# The built-in strategies register themselves into STRATEGIES on import: importing them here (strategies imports
# selection, never the other way) fills the registry before anyone can look it up, with no import circle.
import frugalft.design.strategies  # noqa: F401
from frugalft.design.pools import DesignError, Pool, PoolReport, load_pool, pool_from_rows
from frugalft.design.selection import STRATEGIES, Context, Selection, select_prompts, strategy

__all__ = [
    "STRATEGIES",
    "Context",
    "DesignError",
    "Pool",
    "PoolReport",
    "Selection",
    "load_pool",
    "pool_from_rows",
    "select_prompts",
    "strategy",
]
