"""Price alerts: validated user input, the stored record, and the email a fired alert sends. Pure, no I/O.

An alert watches one instrument: ``direction=True`` ("above") fires when a trade price rises to or above the
threshold, ``direction=False`` ("below") when it falls to or below it (docs/CONTRACTS.md, ``alert:{inst}:gt|lt``).
Every text that can reach an email header is checked here: CR/LF anywhere in the input is rejected, the
recipient must be a syntactically valid ASCII address, the subject is length-capped and single-line (by the
email library's own line rules), and a job's ``attempts`` is bounded (:func:`check_job`). The subject names
the trigger price (the trade price that fired the alert); the body shows the threshold and the trigger price.

The email text is produced from :data:`SUBJECT_TEMPLATE` / :data:`BODY_TEMPLATE`; the Redis matcher (a Lua
script) fills the same templates when it queues the job, so :func:`render_email` is what a user receives.
"""

from __future__ import annotations

import math
import re
import unicodedata
import uuid
from decimal import Decimal, InvalidOperation
from email.headerregistry import Address
from typing import Any, Literal

from email_validator import EmailNotValidError, validate_email
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from operators.events import EmailJob, iso_ms
from operators.instruments import InvalidInstrument, validate_instrument

ALERT_ID_RE = re.compile(r"^[0-9a-f]{32}$")
MAX_PRICE = Decimal("1e15")
MAX_SUBJECT = 200
_CRLF = re.compile(r"[\r\n]")

SUBJECT_TEMPLATE = "Price alert: {instrument} {verb} {price}"  # the trigger price; the body has both
BODY_TEMPLATE = (
    "Your price alert fired.\n"
    "\n"
    "Instrument:    {instrument}\n"
    "Condition:     price {verb_long} {threshold}\n"
    "Trigger price: {price}\n"
    "Trigger time:  {time}\n"
    "Alert id:      {alert_id}\n"
    "\n"
    "The alert has fired once and is now inactive; add a new one to be told again.\n"
)
VERBS = {True: ("rose to", "rose to or above"), False: ("fell to", "fell to or below")}


class AlertInputError(ValueError):
    """User input that cannot become (or change) an alert; ``str()`` is one clear line."""


def _no_crlf(name: str, value: str) -> str:
    if _CRLF.search(value):
        msg = "must be a single line (CR/LF found)"
        raise ValueError(msg)
    return value


def check_price(value: Any) -> Decimal:
    """A positive, finite threshold as an exact Decimal (floats go through their shortest repr)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        msg = f"must be a number, got {type(value).__name__}"
        raise ValueError(msg)
    if isinstance(value, str):
        _no_crlf("price", value)
    try:
        dec = Decimal(repr(value) if isinstance(value, float) else str(value).strip())
    except InvalidOperation:
        msg = f"must be a number, got {value!r}"
        raise ValueError(msg) from None
    if not dec.is_finite() or (isinstance(value, float) and not math.isfinite(value)):
        msg = f"must be finite, got {value!r}"
        raise ValueError(msg)
    if dec <= 0:
        msg = f"must be positive, got {value!r}"
        raise ValueError(msg)
    if dec >= MAX_PRICE:
        msg = f"must be below {MAX_PRICE:E}, got {value!r}"
        raise ValueError(msg)
    dec = dec.normalize()
    return Decimal(int(dec)) if dec == dec.to_integral_value() else dec


def check_email(value: Any) -> str:
    """A syntactically valid ASCII address (no DNS lookup), normalized."""
    if not isinstance(value, str):
        msg = "must be a string"
        raise ValueError(msg)
    _no_crlf("email", value)
    try:
        return validate_email(value, check_deliverability=False, allow_smtputf8=False).normalized
    except EmailNotValidError as err:
        msg = f"not a valid address {value!r}: {err}"
        raise ValueError(msg) from None


def check_instrument(value: Any) -> str:
    if not isinstance(value, str):
        msg = "must be an instrument id string"
        raise ValueError(msg)
    _no_crlf("crypto", value)
    try:
        return validate_instrument(value)
    except InvalidInstrument as err:
        raise ValueError(str(err)) from None


def check_alert_id(value: str) -> str:
    if not ALERT_ID_RE.fullmatch(value):
        msg = f"malformed alert id {value!r}: expected 32 lower-case hex digits"
        raise AlertInputError(msg)
    return value


def price_text(price: Decimal) -> str:
    """The threshold as stored and shown: plain notation, no exponent."""
    return format(price, "f")


class NewAlert(BaseModel):
    """The add-alert body ``{"price": 40000.0, "crypto": "BTC-USDT", "direction": false}`` plus an email."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=False)

    crypto: str
    price: Decimal
    direction: bool
    email: str

    _crypto = field_validator("crypto", mode="before")(lambda v: check_instrument(v))
    _price = field_validator("price", mode="before")(lambda v: check_price(v))
    _email = field_validator("email", mode="before")(lambda v: check_email(v))

    @field_validator("direction", mode="before")
    @classmethod
    def _direction(cls, value: Any) -> bool:
        if not isinstance(value, bool):
            msg = f"must be true (above) or false (below), got {value!r}"
            raise ValueError(msg)
        return value


class AlertChange(BaseModel):
    """What ``alerts update`` may change; unset fields stay."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    crypto: str | None = None
    price: Decimal | None = None
    direction: bool | None = None
    email: str | None = None

    _crypto = field_validator("crypto", mode="before")(lambda v: None if v is None else check_instrument(v))
    _price = field_validator("price", mode="before")(lambda v: None if v is None else check_price(v))
    _email = field_validator("email", mode="before")(lambda v: None if v is None else check_email(v))


def _one_line(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    reason = str(first["msg"]).removeprefix("Value error, ")
    return f"{where}: {reason}" if where else reason


def parse_new_alert(data: dict[str, Any]) -> NewAlert:
    """Validate an add-alert request; raises :class:`AlertInputError` with one clear line."""
    try:
        return NewAlert.model_validate(data)
    except ValidationError as err:
        raise AlertInputError(_one_line(err)) from None


def parse_change(data: dict[str, Any]) -> AlertChange:
    try:
        change = AlertChange.model_validate({k: v for k, v in data.items() if v is not None})
    except ValidationError as err:
        raise AlertInputError(_one_line(err)) from None
    if not change.model_fields_set:
        msg = "nothing to update: give at least one of --crypto, --above/--below, --price, --email"
        raise AlertInputError(msg)
    return change


Status = Literal["active", "fired"]


class Alert(BaseModel):
    """An alert as stored in ``alert:{id}`` (all hash fields are strings)."""

    model_config = ConfigDict(frozen=True)

    id: str
    crypto: str
    price: Decimal
    direction: bool
    email: str
    created_at: str
    status: Status = "active"
    fired_price: str | None = None
    fired_at: str | None = None

    def to_hash(self) -> dict[str, str]:
        out = {"id": self.id, "crypto": self.crypto, "price": price_text(self.price),
               "direction": "true" if self.direction else "false", "email": self.email,
               "created_at": self.created_at, "status": self.status}
        if self.fired_price is not None:
            out["fired_price"] = self.fired_price
        if self.fired_at is not None:
            out["fired_at"] = self.fired_at
        return out

    @classmethod
    def from_hash(cls, fields: dict[str, str]) -> Alert:
        data: dict[str, Any] = dict(fields)
        data["direction"] = fields.get("direction") == "true"
        return cls.model_validate(data)

    @property
    def side(self) -> str:
        return side_of(self.direction)


def side_of(direction: bool) -> str:
    """The sorted-set suffix: ``gt`` for above, ``lt`` for below."""
    return "gt" if direction else "lt"


def new_alert_id() -> str:
    return uuid.uuid4().hex




def create_alert(spec: NewAlert, now_ms: int, alert_id: str | None = None) -> Alert:
    return Alert(id=alert_id or new_alert_id(), crypto=spec.crypto, price=spec.price, direction=spec.direction,
                 email=spec.email, created_at=iso_ms(now_ms))


def template_values(alert_id: str, instrument: str, direction: bool, threshold: str, price: str,
                    time_iso: str) -> dict[str, str]:
    verb, verb_long = VERBS[direction]
    return {"alert_id": alert_id, "instrument": instrument, "verb": verb, "verb_long": verb_long,
            "threshold": threshold, "price": price, "time": time_iso}


def render_email(alert_id: str, instrument: str, direction: bool, threshold: str, price: str,
                 time_iso: str) -> tuple[str, str]:
    """(subject, body) of the email for a fired alert."""
    values = template_values(alert_id, instrument, direction, threshold, price, time_iso)
    return SUBJECT_TEMPLATE.format_map(values), BODY_TEMPLATE.format_map(values)


class InvalidJob(ValueError):
    """An email job that must not be sent (it goes to the dead list)."""


def _one_header_line(value: str) -> bool:
    """True when ``value`` stays one line for the email library: no CR/LF nor anything else that
    ``str.splitlines`` (which :mod:`email` uses) breaks at (U+2028, U+2029, U+0085, VT, FF, FS, GS, RS), and no
    other control character."""
    return len(value.splitlines()) <= 1 and not any(
        unicodedata.category(c) in ("Cc", "Zl", "Zp") and c != "\t" for c in value)


MAX_JOB_ID = 128
MAX_ATTEMPTS_CEILING = 1000  # attempts above this are nonsense whatever EMAIL_MAX_ATTEMPTS says


def check_job(job: EmailJob, *, max_attempts: int | None = None) -> EmailJob:
    """Every rule a job must meet to be sendable, applied right before sending; raises :class:`InvalidJob`
    (the job can never be sent: it goes to the dead list at once) with one line saying what was wrong.

    ``attempts`` is an int in ``0..max_attempts`` (``EMAIL_MAX_ATTEMPTS``); the recipient a valid ASCII address
    by ``email-validator`` and :class:`email.headerregistry.Address`; the subject one non-empty line of at most
    :data:`MAX_SUBJECT` characters by the email library's line rules; ids single lines of at most
    :data:`MAX_JOB_ID` characters. The message builder then applies the library's own header checks."""
    ceiling = MAX_ATTEMPTS_CEILING if max_attempts is None else max_attempts
    if not 0 <= job.attempts <= ceiling:
        msg = f"attempts must be an integer from 0 to {ceiling}, got {str(job.attempts)[:24]}"
        raise InvalidJob(msg)
    try:
        address = check_email(job.to)
        Address(addr_spec=job.to)
    except ValueError as err:
        msg = f"recipient {err}"
        raise InvalidJob(msg) from None
    if address != job.to and address.lower() != job.to.lower():
        msg = f"recipient {job.to[:80]!r} is not in normal form (expected {address!r})"
        raise InvalidJob(msg)
    if not job.subject.strip() or len(job.subject) > MAX_SUBJECT or not _one_header_line(job.subject):
        msg = f"subject must be one non-empty line of at most {MAX_SUBJECT} characters without control characters"
        raise InvalidJob(msg)
    for name, value in (("id", job.id), ("alert_id", job.alert_id)):
        if not value or len(value) > MAX_JOB_ID or not _one_header_line(value):
            msg = f"job {name} must be one non-empty line of at most {MAX_JOB_ID} characters"
            raise InvalidJob(msg)
    return job
