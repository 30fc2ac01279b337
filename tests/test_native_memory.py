"""``frugalft.native_memory``: the environment ``rl table --jobs N --bound-memory`` gives its seed
processes."""

from __future__ import annotations

from frugalft.native_memory import BOUNDS, bounded_environment


def test_the_bounds_are_added_and_a_users_own_values_win():
    assert bounded_environment({"PATH": "/bin"}) == {"PATH": "/bin", "ONEDNN_PRIMITIVE_CACHE_CAPACITY": "8",
                                                     "MALLOC_MMAP_THRESHOLD_": "131072",
                                                     "MALLOC_TRIM_THRESHOLD_": "131072"}
    mine = {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "1024", "MALLOC_MMAP_THRESHOLD_": "65536"}
    assert bounded_environment(mine) == {**mine, "MALLOC_TRIM_THRESHOLD_": "131072"}
    assert set(BOUNDS) == {"ONEDNN_PRIMITIVE_CACHE_CAPACITY", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"}
