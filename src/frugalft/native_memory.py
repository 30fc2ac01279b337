"""Keep CPU training processes that share a machine from climbing in resident memory under bf16 autocast.

Under bf16 autocast on a CPU, matmuls go through oneDNN, which caches a compiled primitive per new shape (1,024
by default), and glibc keeps the freed blocks of those shapes' buffers in its heap (its mmap threshold rises as
large blocks are freed). Batches whose length changes at every step (ALFWorld's text-head policy warm-up:
prompts of 300-1,000 tokens plus every listed command) then grow a process by tens of MB a step: two ALFWorld
seed processes of ``rl table --jobs 2`` reached 11-13 GB each and one was killed for memory; calling glibc's
``malloc_trim`` in one at 9.7 GB brought it to 3.4 GB (docs/results.md).

``bounded_environment`` is the environment for such a process: a handful of oneDNN primitives and a fixed
mmap threshold, so that large buffers go back to the system when freed. Both are read when the process starts
(glibc) or builds its first primitive (oneDNN), hence an environment for a child, not a call. Neither changes a
computed number (the same loss at every step), but both cost speed (``benchmarks/bench_native_memory.py``, one
thread, batch 16, ``tiny-env``): at 300-1,000 tokens +33 MB and 3.39 s a step without them, +5 MB and 3.82 s with
them (0.89x); at 60-200 tokens +15 MB and 0.20 s against +4 MB and 0.38 s (0.52x). Hence opt-in:
``rl table --jobs N --bound-memory``, where several seed processes share the machine's memory. A user's own
value of any of these variables wins.
"""

from __future__ import annotations

from collections.abc import Mapping

BOUNDS = {
    "ONEDNN_PRIMITIVE_CACHE_CAPACITY": "8",  # primitives kept (oneDNN's default: 1,024)
    "MALLOC_MMAP_THRESHOLD_": str(128 * 1024),  # glibc's own starting value, fixed: larger blocks are mmapped
    "MALLOC_TRIM_THRESHOLD_": str(128 * 1024),  # free heap above this goes back to the system
}


def bounded_environment(base: Mapping[str, str]) -> dict[str, str]:
    """``base`` with each of ``BOUNDS`` added where ``base`` does not set it already."""
    return {**BOUNDS, **base}
