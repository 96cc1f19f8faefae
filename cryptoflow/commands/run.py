"""``cryptoflow run NAME``: start a dataflow as ``bytewax.yaml`` declares it (workers, processes, recovery), or
the service declared under ``services:`` (``cryptoflow run serve`` -> ``cryptoflow serve --host .. --port ..``).

SIGINT/SIGTERM are forwarded to every process of the cluster: each stops cleanly (``connectors/stopping.py``)
and ``run`` returns 0 once all of them exited 0. A second signal is forwarded too (the processes abort).
If one process ends by itself, the others are stopped and its exit code is returned.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from cryptoflow.allocator import with_allocator
from cryptoflow.deploy import DeployFileError, Deployment, load
from cryptoflow.servers import stop_process
from cryptoflow.settings import Settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("run", help="start a dataflow (or the service) as bytewax.yaml declares it")
    parser.add_argument("name", help="dataflow or service name (a key of bytewax.yaml)")
    parser.add_argument("--file", type=Path, default=Path("bytewax.yaml"))
    parser.add_argument("--dry-run", action="store_true", help="print the commands instead of running them")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        deployments = load(args.file).runnable()
    except DeployFileError as err:
        print(f"cryptoflow run: {err}", file=sys.stderr)
        return 2
    if args.name not in deployments:
        print(f"cryptoflow run: no dataflow {args.name!r} in {args.file}; known: {', '.join(deployments)}",
              file=sys.stderr)
        return 2
    dep = deployments[args.name]
    init = dep.init_recovery()
    commands = dep.commands()
    recovery = dep.recovery if isinstance(dep, Deployment) else None
    mkdir = ["mkdir", "-p", str(recovery.dir)] if init and recovery is not None else None
    if args.dry_run:
        for cmd in ([mkdir, init] if mkdir and init else []):
            print(shlex.join(cmd))
        for i, cmd in enumerate(commands):
            print(" ".join([*(f"{k}={v}" for k, v in dep.process_env(i).items()), shlex.join(cmd)]))
        return 0
    if init and recovery is not None:
        recovery.dir.mkdir(parents=True, exist_ok=True)  # bytewax.recovery refuses a missing directory
    if init and subprocess.run(init, check=False).returncode != 0:
        print(f"cryptoflow run: creating the recovery store failed: {shlex.join(init)}", file=sys.stderr)
        return 1
    procs: list[subprocess.Popen[bytes]] = []
    signals: list[int] = []

    def forward(signum: int, _frame: FrameType | None) -> None:
        """SIGINT/SIGTERM go to every process of the cluster (the first stops them cleanly, a second aborts)."""
        signals.append(signum)
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        env = with_allocator()  # jemalloc when installed (cryptoflow/allocator.py says why)
        procs.extend(subprocess.Popen(cmd, start_new_session=True, env={**env, **dep.process_env(i)})
                     for i, cmd in enumerate(commands))
        first = _wait_any(procs)
        if not signals:
            return first  # a member ended by itself: the others are stopped below
        return max((abs(code) for code in _wait_all(procs)), default=0)  # 0 after a clean stop of every member
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for p in procs:
            stop_process(p)


def _wait_any(procs: list[subprocess.Popen[bytes]]) -> int:
    """Wait until one process of the cluster exits (the others are then stopped); its exit code."""
    while True:
        for proc in procs:
            code = proc.poll()
            if code is not None:
                return code
        time.sleep(0.2)


def _wait_all(procs: list[subprocess.Popen[bytes]]) -> list[int]:
    """After a forwarded signal: every member's exit code (each stops by itself; a second signal aborts)."""
    return [proc.wait() for proc in procs]
