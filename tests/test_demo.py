"""`cryptoflow demo` (what `make demo` runs): live data soon after start, and nothing left running however it is
stopped: Ctrl-C, Ctrl-C to a whole `demo | tee` pipeline, SIGTERM, SIGHUP, a SIGKILL of the demo or of its parent."""

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
    live = re.compile(r"BTC-USDT\s+valid\s+\d[\d.]*/\d")  # the compact line of a piped stdout
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
        _check_dashboard(lines)
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
    assert any("stopped      serve (exit 0)" in line for line in lines), "\n".join(lines[-30:])
    assert survivors == [], "processes survived the demo"


def _check_dashboard(lines: list[str]) -> None:
    """The demo's `dashboard: URL` line names the running service, which serves the demo's live data."""
    import httpx

    found = [m for line in lines if (m := re.fullmatch(r"dashboard: (http://127\.0\.0\.1:\d+/)", line))]
    assert len(found) == 1, "\n".join(lines)
    url = found[0].group(1)
    book = httpx.get(f"{url}v1/orderbook/BTC-USDT", params={"depth": 5}, timeout=30).json()
    assert book["status"] == "valid" and len(book["bids"]) == 5, book
    assert httpx.get(f"{url}v1/status", timeout=30).json()["stores"]["redis"] == "ok"


def _wait_gone(marker: str, workdir: Path, timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := processes_with_marker(marker, workdir)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def _demo_env() -> tuple[dict[str, str], str]:
    env = {k: v for k, v in os.environ.items() if k not in ("INFLUX_URL", "REDIS_URL")}
    env["PYTHONUNBUFFERED"] = "1"
    env["CRYPTOFLOW_DEMO"] = uuid.uuid4().hex
    return env, env["CRYPTOFLOW_DEMO"]


def _demo_cmd(workdir: Path) -> list[str]:
    return [sys.executable, "-m", "cryptoflow.cli", "demo", "--workdir", str(workdir)]


def _cleanup(proc: subprocess.Popen[str], marker: str, workdir: Path) -> list[int]:
    """Whatever happened: kill the test's process group, then report (and kill) the demo's survivors."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    survivors = _wait_gone(marker, workdir, timeout=30)
    for pid in survivors:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return survivors


def _started(log: Path) -> bool:
    """The demo has started every process and watches (its 'live data below' line is out)."""
    return log.exists() and "live data below" in log.read_text(errors="replace")


@pytest.mark.slow
def test_demo_piped_into_tee_stops_on_ctrl_c_to_the_whole_pipeline(tmp_path: Path) -> None:
    """`make demo 2>&1 | tee log`, then Ctrl-C: the terminal sends SIGINT to the pipeline's process group, tee
    dies with it, and every later write of the demo meets EPIPE. The demo must still stop all it started."""
    from tests.waiting import wait_for

    env, marker = _demo_env()
    log, rc = tmp_path / "log", tmp_path / "rc"
    script = f'{" ".join(_demo_cmd(tmp_path / "w"))} 2>&1 | tee {log} >/dev/null; echo "${{PIPESTATUS[0]}}" > {rc}'
    proc = subprocess.Popen(["bash", "-c", script], env=env, start_new_session=True, text=True)
    try:
        wait_for("the demo to start", lambda: _started(log), timeout=120)
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: bash, the demo and tee alike
        proc.wait(60)
    finally:
        survivors = _cleanup(proc, marker, tmp_path / "w")
    assert survivors == [], "processes survived the demo"
    assert rc.read_text().strip() == "0", log.read_text()[-2000:]
    assert "\x1b[" not in log.read_text(), "ANSI escape codes in a piped log"


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_demo_stops_everything_on_sigterm_and_sighup(tmp_path: Path, sig: signal.Signals) -> None:
    from tests.waiting import wait_for

    env, marker = _demo_env()
    log = tmp_path / "log"
    with log.open("w") as out:
        proc = subprocess.Popen(_demo_cmd(tmp_path / "w"), env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, text=True)
    try:
        wait_for("the demo to start", lambda: _started(log), timeout=120)
        proc.send_signal(sig)
        proc.wait(60)
    finally:
        survivors = _cleanup(proc, marker, tmp_path / "w")
    assert survivors == [], "processes survived the demo"
    assert proc.returncode == 0, log.read_text()[-2000:]
    text = log.read_text()
    assert f"{sig.name}: stopping" in text and "stopped      redis" in text


@pytest.mark.slow
@pytest.mark.parametrize("victim", ["demo", "parent"])
def test_nothing_survives_a_sigkill_of_the_demo_or_of_its_parent(tmp_path: Path, victim: str) -> None:
    """SIGKILL of the demo: its children die with it (PR_SET_PDEATHSIG). SIGKILL of its parent (`make`):
    the demo gets SIGTERM and stops them."""
    from tests.waiting import wait_for

    env, marker = _demo_env()
    log = tmp_path / "log"
    # bash stays the demo's parent (a command follows), like make running the recipe line.
    script = f'{" ".join(_demo_cmd(tmp_path / "w"))} > {log} 2>&1; echo "demo exited $?" >> {log}'
    proc = subprocess.Popen(["bash", "-c", script], env=env, start_new_session=True, text=True)
    try:
        wait_for("the demo to start", lambda: _started(log), timeout=120)
        # the demo itself, not the service it starts (`cryptoflow.cli serve`)
        demo = [p for p in processes_with_marker(marker) if p != proc.pid and "cryptoflow.cli demo" in _cmdline(p)]
        assert len(demo) == 1
        os.kill(demo[0] if victim == "demo" else proc.pid, signal.SIGKILL)
        proc.wait(60)
        survivors = _wait_gone(marker, tmp_path / "w", timeout=60)
    finally:
        survivors = _cleanup(proc, marker, tmp_path / "w")
    assert survivors == [], "processes survived the demo"
    if victim == "parent":
        assert "SIGTERM: stopping" in log.read_text()


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
