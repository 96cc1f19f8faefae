"""`cryptoflow demo` (what `make demo` runs): live data soon after start, clean exit on Ctrl-C, no process left."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest


def processes_with_marker(marker: str, workdir: Path | None = None) -> list[int]:
    """Processes carrying the demo's marker in their environment, or (``workdir``) running inside it:
    redis-server rewrites its environment area with its process title, so only its cwd (--dir) tells."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            cwd = os.readlink(f"/proc/{pid}/cwd") if workdir is not None else ""
        except OSError:
            continue
        if f"CRYPTOFLOW_DEMO={marker}".encode() in environ or (workdir is not None and
                                                                cwd.startswith(str(workdir))):
            found.append(int(pid))
    return found


@pytest.mark.slow
def test_demo_shows_live_data_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("INFLUX_URL", "REDIS_URL")}
    env["PYTHONUNBUFFERED"] = "1"
    marker = env["CRYPTOFLOW_DEMO"] = uuid.uuid4().hex
    proc = subprocess.Popen([sys.executable, "-m", "cryptoflow.cli", "demo", "--workdir", str(tmp_path)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    assert proc.stdout is not None
    lines: list[str] = []
    live = re.compile(r"BTC-USDT\s+book valid\s+bid\s+\d")
    # Usually ~15 s; generous because four dataflow processes start at once on a loaded 2-core CI machine.
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip())
            if live.search(line):
                break
        assert any(live.search(line) for line in lines), "\n".join(lines)
        assert any("running without InfluxDB" in line for line in lines)
        children = [pid for pid in processes_with_marker(marker) if pid != proc.pid]
        assert len(children) >= 3, "expected redis, the simulator and dataflows to be running"
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
        lines.extend(rest.splitlines())
    finally:
        if proc.poll() is None:  # the test failed before Ctrl-C: let the demo stop its children, then force
            proc.send_signal(signal.SIGINT)
            try:
                proc.communicate(timeout=60)  # keep reading: a full stdout pipe would block its shutdown
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        survivors = _wait_gone(marker, tmp_path)
        for pid in survivors:  # never leave them running on a shared machine, whatever the outcome
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert proc.returncode == 0, "\n".join(lines[-30:])
    assert any("stopped      redis" in line for line in lines)
    assert survivors == [], "processes survived the demo"


def _wait_gone(marker: str, workdir: Path, timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := processes_with_marker(marker, workdir)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left
