"""A dataflow as a real process in a test: ``python -m bytewax.run dataflows.NAME`` with its output in a log file,
and the structlog JSON events read back from that log."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]


def start_dataflow(name: str, env: Mapping[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    """``dataflows.NAME`` with ``env`` over this process's environment (whose ``INFLUX_URL`` is left out unless
    ``env`` names one: a test writes only to its own stores), ``args`` after the flow (``-r DIR``, ``-w N``),
    stdout and stderr appended to ``log``, in a session of its own (``os.killpg`` / ``stop_process`` end it all)."""
    full = {**os.environ, **env}
    if "INFLUX_URL" not in env:
        full.pop("INFLUX_URL", None)
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "bytewax.run", f"dataflows.{name}", *args], cwd=ROOT,
                                env=full, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def log_events(log: Path, name: str) -> list[dict[str, Any]]:
    """Every JSON log line of ``log`` whose ``event`` is ``name`` (``LOG_FORMAT=json``), in order."""
    out = []
    for line in log.read_bytes().splitlines():
        with contextlib.suppress(orjson.JSONDecodeError):
            event = orjson.loads(line)
            if isinstance(event, dict) and event.get("event") == name:
                out.append(event)
    return out
