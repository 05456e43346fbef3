"""Local CPU processes of a multi-host run in the tests (gloo collectives, one free port)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def cpu_env(host_devices: int = 1) -> dict:
    """The environment of a CPU process with `host_devices` devices (the repo importable)."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
    if host_devices > 1:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={host_devices}"
    return env


def launch(args: list[str], *, host_devices: int = 1) -> subprocess.Popen:
    """`python ARGS` from the repository root (e.g. ["-m", "experiments.localize", ...])."""
    return subprocess.Popen([sys.executable, *map(str, args)], cwd=REPO,
                            env=cpu_env(host_devices), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def launch_flags(port: int, process_id: int, num_processes: int = 2) -> list[str]:
    return [f"--coordinator_address=localhost:{port}", f"--num_processes={num_processes}",
            f"--process_id={process_id}"]


def launch_processes(args_of, num_processes: int = 2) -> list[subprocess.Popen]:
    """One process per id, `args_of(process_id)` plus the launch flags of one shared port."""
    port = free_port()
    return [launch([*args_of(pid), *launch_flags(port, pid, num_processes)])
            for pid in range(num_processes)]


def wait(procs: list[subprocess.Popen], *, timeout: float = 400,
         expect_rc: int = 0) -> list[tuple[str, str]]:
    """(stdout, stderr) of each process, once all ended with `expect_rc`."""
    results = [p.communicate(timeout=timeout) for p in procs]
    for p, (_, err) in zip(procs, results):
        assert p.returncode == expect_rc, err[-3000:]
    return results
