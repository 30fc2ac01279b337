"""Test helper: run a module under ``accelerate launch`` with 2 CPU processes while the test computes its
one-process reference, then return what the launched run printed."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable


def launch_two_cpu_processes(module_args: list[str], reference: Callable[[], None], timeout: float = 300) -> str:
    """``python -m <module_args>`` on 2 processes (gloo); ``reference()`` runs here meanwhile. Returns stdout.

    On CPU, `accelerate launch --cpu` spawns several processes only through MPI; --multi_gpu is accelerate's
    torchrun launcher, and device=cpu in the run's config makes each process use gloo on the CPU.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
           str(port), "-m", *module_args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    # Its own session, so that a hung run's workers die with the launcher (killing the launcher alone left a
    # worker rank waiting on the dead rendezvous for good: seen once in CI, 2026-12-06).
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:  # the reference runs while the launched processes start up
        reference()
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        raise AssertionError(f"accelerate launch timed out after {timeout} s; its stderr:\n{stderr[-3000:]}") from None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, stderr[-3000:]
    return stdout
