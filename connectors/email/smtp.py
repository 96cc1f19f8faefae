"""SMTP delivery of email jobs: the message builder and one reusable, blocking connection (smtplib).

Header injection is impossible: the job is checked (:func:`operators.alerts.check_job`: attempts bounded,
recipient a valid ASCII address, subject and ids one line by the email library's line rules) and the message is
built with :class:`email.message.EmailMessage` under the strict default policy, which refuses CR/LF in any
header value, and rendered once before sending; whatever the library refuses is an
:class:`operators.alerts.InvalidJob` (never retried).

Errors are classified for the caller: :class:`SmtpPermanentError` (a 5xx reply, or login configured but no
AUTH offered: retrying will not help) and
:class:`SmtpTemporaryError` (4xx, refused or dropped connection, timeout: retry later).
"""

from __future__ import annotations

import re
import smtplib
import ssl
import time
from dataclasses import dataclass
from email.errors import MessageError
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate

from operators.alerts import InvalidJob, check_job
from operators.events import EmailJob


class SmtpError(Exception):
    pass


class SmtpTemporaryError(SmtpError):
    pass


class SmtpPermanentError(SmtpError):
    pass


@dataclass(frozen=True)
class SmtpConfig:
    """The server and sender (``SMTP_*``, ``EMAIL_FROM``; :func:`cryptoflow.connector_configs.smtp_config`)."""

    host: str
    port: int
    sender: str
    user: str | None = None
    password: str = ""
    starttls: bool = False
    timeout: float = 10.0

    def __repr__(self) -> str:  # never show the password
        return f"SmtpConfig(host={self.host!r}, port={self.port}, user={self.user!r}, starttls={self.starttls})"


_ID_CHARS = re.compile(r"[^A-Za-z0-9._-]")


def build_message(job: EmailJob, sender: str, *, max_attempts: int | None = None) -> EmailMessage:
    """The plain-text message for a job, checked by our rules (:func:`operators.alerts.check_job`) and then by
    the email library's own: the headers are set under the strict default policy and the whole message is
    rendered once the way smtplib will send it. Raises :class:`operators.alerts.InvalidJob` for anything that
    can never be sent."""
    check_job(job, max_attempts=max_attempts)
    try:
        msg = EmailMessage()
        msg["From"] = sender
        msg["To"] = job.to
        msg["Subject"] = job.subject
        msg["Date"] = formatdate(usegmt=True)
        msg["Message-ID"] = f"<{_ID_CHARS.sub('', job.id)[:64] or 'job'}.{job.attempts}@cryptoflow>"
        msg["X-Cryptoflow-Job"] = _ID_CHARS.sub("", job.id)[:128]
        msg.set_content(job.body)
        msg.as_bytes(policy=SMTP)
    except (ValueError, TypeError, LookupError, MessageError) as err:  # UnicodeError is a ValueError
        text = f"not a valid message: {type(err).__name__}: {err}"
        raise InvalidJob(text[:300]) from None
    return msg


class SmtpConnection:
    """One SMTP session, opened lazily and reused; any failure closes it (the next send reconnects)."""

    IDLE_CHECK_S = 10.0

    def __init__(self, config: SmtpConfig) -> None:
        self._config = config
        self._smtp: smtplib.SMTP | None = None
        self._last_used = 0.0

    def _connect(self) -> smtplib.SMTP:
        cfg = self._config
        smtp = smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout)
        try:
            smtp.ehlo()
            if cfg.starttls:
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if cfg.user:
                smtp.login(cfg.user, cfg.password)
        except BaseException:
            smtp.close()
            raise
        return smtp

    def _session(self) -> smtplib.SMTP:
        if self._smtp is not None and time.monotonic() - self._last_used > self.IDLE_CHECK_S:
            try:
                code, _ = self._smtp.noop()
                if code != 250:
                    self.close()
            except (smtplib.SMTPException, OSError):
                self.close()
        if self._smtp is None:
            self._smtp = self._connect()
        return self._smtp

    def send(self, job: EmailJob, msg: EmailMessage | None = None) -> None:
        """Deliver ``job`` (as ``msg`` when already built by :func:`build_message`); returns once the server
        accepted it for every recipient."""
        if msg is None:
            msg = build_message(job, self._config.sender)
        try:
            refused = self._session().send_message(msg, from_addr=self._config.sender, to_addrs=[job.to])
        except smtplib.SMTPResponseException as err:
            self.close()
            text = err.smtp_error.decode(errors="replace") if isinstance(err.smtp_error, bytes) else err.smtp_error
            detail = f"{err.smtp_code} {text}"
            if 500 <= err.smtp_code < 600:
                raise SmtpPermanentError(detail) from None
            raise SmtpTemporaryError(detail) from None
        except smtplib.SMTPRecipientsRefused as err:
            self.close()
            codes = [code for code, _ in err.recipients.values()]
            detail = f"recipient refused: {err.recipients}"
            if codes and all(500 <= c < 600 for c in codes):
                raise SmtpPermanentError(detail) from None
            raise SmtpTemporaryError(detail) from None
        except smtplib.SMTPNotSupportedError as err:  # e.g. login configured, AUTH not offered: a config error
            self.close()
            raise SmtpPermanentError(str(err)) from None
        except (smtplib.SMTPException, OSError) as err:  # OSError covers refused, reset and timeouts
            self.close()
            detail = f"{type(err).__name__}: {err}"
            raise SmtpTemporaryError(detail) from None
        finally:
            self._last_used = time.monotonic()
        if refused:
            msg_text = f"recipient refused: {refused}"
            raise SmtpPermanentError(msg_text)

    def close(self) -> None:
        if self._smtp is not None:
            try:
                self._smtp.quit()
            except (smtplib.SMTPException, OSError):
                self._smtp.close()
            self._smtp = None
