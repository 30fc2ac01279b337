"""Test helper: run a module under ``accelerate launch`` with 2 CPU processes while the test computes its
one-process reference, then return what the launched run printed."""

from __future__ import annotations

import os
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
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:  # the reference runs while the launched processes start up
        reference()
        stdout, stderr = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr[-3000:]
    return stdout
