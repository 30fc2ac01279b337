"""Shared test setup: an isolated cache, offline hub, and one thread per op for repeatable float sums."""

from __future__ import annotations

import os

import pytest

# Nothing in the suite may reach a hub; make any attempt fail fast instead of timing out.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True, scope="session")
def _threads():
    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    yield


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module (opt in with ``pytest.mark.usefixtures("one_thread")``).

    Tiny models gain nothing from a second thread, and on a busy 2-core machine a second OpenMP thread makes
    every op wait for a descheduled partner (measured: 6-9x slower rollouts).
    """
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
