"""Where frugalft keeps files it can rebuild: converted models, generated games, feature caches."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """``$FRUGALFT_CACHE`` (default ``~/.cache/frugalft``) joined with ``parts``, created on demand."""
    root = Path(os.environ.get("FRUGALFT_CACHE", Path.home() / ".cache" / "frugalft"))
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
