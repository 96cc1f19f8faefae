"""connectors/email/smtp.py against real aiosmtpd servers: login when configured, error classification,
connection reuse, and a message built only from checked, single-line header values."""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from connectors.email.smtp import (
    SmtpConfig,
    SmtpConnection,
    SmtpPermanentError,
    SmtpTemporaryError,
    build_message,
)
from cryptoflow.servers import free_port
from operators.alerts import InvalidJob
from operators.events import EmailJob
from tests.fixtures.smtp import SmtpServer, _Inbox

JOB = EmailJob(id="j1", alert_id="a1", to="user@example.com", subject="Price alert: BTC-USDT rose to 36000",
               body="line 1\nline 2\n", created_at="2026-11-21T09:00:00.000Z")


@dataclass
class _Picky(_Inbox):
    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address.startswith("gone@"):
            return "550 5.1.1 no such user"
        if address.startswith("busy@"):
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"


def _auth(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (b"bot", b"s3cret")
    return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535 itself


@pytest.fixture
def auth_smtp() -> Iterator[SmtpServer]:
    inbox = _Picky()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, authenticator=_auth, auth_require_tls=False,
                            auth_exclude_mechanism=["LOGIN"])  # smtplib then uses PLAIN only
    controller.start()
    try:
        yield SmtpServer(port, inbox, controller)
    finally:
        controller.stop()


def _config(port: int, **kw: Any) -> SmtpConfig:
    return SmtpConfig(**{"host": "127.0.0.1", "port": port, "sender": "alerts@example.com", "timeout": 5.0, **kw})


def test_login_then_several_messages_on_one_connection(auth_smtp) -> None:
    conn = SmtpConnection(_config(auth_smtp.port, user="bot", password="s3cret"))
    conn.send(JOB)
    conn.send(EmailJob(**{**{f: getattr(JOB, f) for f in JOB.__struct_fields__}, "id": "j2"}))
    conn.close()
    got = auth_smtp.messages
    assert [m["X-Cryptoflow-Job"] for m in got] == ["j1", "j2"]
    assert got[0]["From"] == "alerts@example.com" and got[0]["To"] == "user@example.com"
    assert got[0].get_payload().replace("\r\n", "\n") == "line 1\nline 2\n"


def test_wrong_password_is_permanent_and_password_never_shown(auth_smtp) -> None:
    config = _config(auth_smtp.port, user="bot", password="wrong-pw")
    with pytest.raises(SmtpPermanentError, match="535") as err:
        SmtpConnection(config).send(JOB)
    assert "wrong-pw" not in repr(config)
    assert "wrong-pw" not in str(err.value)  # the error is logged and written to the dead list


def test_recipient_refusals_are_classified(auth_smtp) -> None:
    conn = SmtpConnection(_config(auth_smtp.port, user="bot", password="s3cret"))
    with pytest.raises(SmtpPermanentError, match="550"):
        conn.send(EmailJob(**{**{f: getattr(JOB, f) for f in JOB.__struct_fields__}, "to": "gone@example.com"}))
    with pytest.raises(SmtpTemporaryError, match="451"):
        conn.send(EmailJob(**{**{f: getattr(JOB, f) for f in JOB.__struct_fields__}, "to": "busy@example.com"}))
    conn.send(JOB)  # the connection recovers after a failure
    assert [m["X-Cryptoflow-Job"] for m in auth_smtp.messages] == ["j1"]


def test_server_down_is_temporary() -> None:
    with pytest.raises(SmtpTemporaryError):
        SmtpConnection(_config(free_port(), timeout=1.0)).send(JOB)


def _with(**kw: Any) -> EmailJob:
    return EmailJob(**{**{f: getattr(JOB, f) for f in JOB.__struct_fields__}, **kw})


@pytest.mark.parametrize(("bad", "why"), [
    ({"attempts": 99999999999999999999999}, "attempts"), ({"attempts": -1}, "attempts"),
    ({"attempts": 6}, "attempts"),  # above EMAIL_MAX_ATTEMPTS
    ({"subject": "Price alert\u2028Bcc: victim@example.com"}, "subject"),  # a line break to the email library
    ({"subject": "a\u2029b"}, "subject"), ({"subject": "a\x85b"}, "subject"), ({"subject": "a\x0bb"}, "subject"),
    ({"to": "user@example.com\r\nBcc: victim@example.com"}, "recipient"),
    ({"to": "user@example.com\u2028"}, "recipient"),
    ({"to": "Victim <user@example.com>"}, "recipient"), ({"to": "\u00fcser@example.com"}, "recipient"),
    ({"id": "j\u20281"}, "id"), ({"alert_id": "a" * 129}, "alert_id"),
])
def test_a_job_that_can_never_be_sent_is_invalid(bad: dict[str, Any], why: str) -> None:
    with pytest.raises(InvalidJob, match=why):
        build_message(_with(**bad), "alerts@example.com", max_attempts=5)


def test_a_bounded_job_renders() -> None:
    msg = build_message(_with(attempts=5, subject="Price alert: BTC-USDT rose to 36012.5 \u2191"),
                        "alerts@example.com", max_attempts=5)
    assert msg["Subject"] == "Price alert: BTC-USDT rose to 36012.5 \u2191" and msg["Message-ID"] == "<j1.5@cryptoflow>"


def test_message_builder_refuses_injection() -> None:
    msg = build_message(JOB, "alerts@example.com")
    assert msg["Subject"] == JOB.subject and msg["Message-ID"] == "<j1.0@cryptoflow>"
    bad = EmailJob(**{**{f: getattr(JOB, f) for f in JOB.__struct_fields__},
                      "subject": "x\r\nBcc: victim@example.com"})
    with pytest.raises(InvalidJob):
        build_message(bad, "alerts@example.com")


@pytest.fixture
def tls_smtp(tmp_path) -> Iterator[tuple[SmtpServer, Path]]:
    if shutil.which("openssl") is None:
        if os.environ.get("CI"):  # scripts/bootstrap.sh --servers installs it: in CI this test must run
            pytest.fail("openssl CLI missing in CI (Debian package openssl, installed by scripts/bootstrap.sh)")
        pytest.skip("openssl CLI not available to make a test certificate (scripts/bootstrap.sh --servers)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    inbox = _Picky()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, authenticator=_auth, tls_context=context,
                            require_starttls=True, auth_exclude_mechanism=["LOGIN"])
    controller.start()
    try:
        yield SmtpServer(port, inbox, controller), cert
    finally:
        controller.stop()


def test_starttls_then_login(tls_smtp, monkeypatch) -> None:
    server, cert = tls_smtp
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # trust the test CA the way an operator would
    SmtpConnection(_config(server.port, user="bot", password="s3cret", starttls=True)).send(JOB)
    assert [m["X-Cryptoflow-Job"] for m in server.messages] == ["j1"]
    with pytest.raises(SmtpPermanentError):  # the server demands STARTTLS; without it nothing is sent
        SmtpConnection(_config(server.port, user="bot", password="s3cret")).send(JOB)
    assert len(server.messages) == 1
