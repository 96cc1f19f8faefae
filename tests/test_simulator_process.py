"""The simulator as a process: one JSON line of URLs, structlog on stderr, clean stop, clear start-up errors."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cryptoflow.servers import stop_process

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def test_cryptoflow_simulator_prints_one_line_and_stops_cleanly_on_sigterm() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "cryptoflow.cli", "simulator", "--port", "0", "--pairs", "BTC-USDT"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            env={"LOG_FORMAT": "json", "PATH": "/usr/bin:/bin"})
    try:
        assert proc.stdout is not None
        urls = json.loads(proc.stdout.readline())
        assert {"okx_ws_url", "okx_rest_url", "binance_ws_url", "binance_rest_url", "bybit_ws_url",
                "control_url"} <= set(urls)
        assert urls["okx_ws_url"] == f"ws://127.0.0.1:{urls['port']}/ws/v5/public"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        stop_process(proc)
    assert proc.returncode == 0
    assert out == b""  # exactly one line on stdout, already read
    events = [json.loads(line)["event"] for line in err.decode().splitlines() if line.startswith("{")]
    assert events[0] == "simulator_started" and events[-1] == "simulator_stopped"


@pytest.mark.parametrize(("args", "needle"), [
    (["--pairs", "btc/usdt"], "malformed instrument id"),
    (["--faults", "gap@x"], "fault time"),
    (["--pairs", "BTC-USDT", "--faults", "gap@1,inst=ETH-USDT"], "not one of --pairs"),
])
def test_bad_arguments_stop_start_up_with_one_line(args: list[str], needle: str) -> None:
    done = subprocess.run([sys.executable, "-m", "simulator", "--port", "0", *args], cwd=ROOT, capture_output=True,
                          timeout=60, check=False)
    assert done.returncode == 2 and done.stdout == b""
    assert needle in done.stderr.decode() and len(done.stderr.decode().strip().splitlines()) == 1
