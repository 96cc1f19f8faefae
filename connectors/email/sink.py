"""The Bytewax sink that sends email jobs taken by the reliable list source (explicit-ack mode).

``write_batch`` only hands the jobs to a small pool of sender threads (``concurrency``, each with its own
reused SMTP connection) and returns at once: a slow or hung SMTP server never freezes the Bytewax worker
(each SMTP call is bounded by ``SMTP_TIMEOUT``; the source stops taking jobs once ``max_in_flight`` are held).

Per job, in a sender thread:

* validated fully first: decoded through :func:`connectors.untrusted.decode` (at most :data:`MAX_JOB_BYTES`,
  typed, depth-bounded), then :func:`connectors.email.smtp.build_message` (``attempts`` in ``0..EMAIL_MAX_ATTEMPTS``,
  recipient and subject header-safe by our rules and the email library's own). A job that can never be sent
  (bad JSON, too large or deep, non-UTF-8, bad recipient, a subject the library refuses such as one holding
  U+2028) is moved to ``queue:email:dead`` at once, with ``reason`` and ``last_error``: no retry, no traceback;
* accepted by the server -> removed from the processing list (LREM) as the very next step, retried while Redis
  fails (nothing that can raise runs between the acceptance and the ack; the log line comes after): done;
* temporary failure (4xx, connection refused/dropped, timeout) -> ``attempts + 1`` written back into the
  processing list (atomically replacing the held element) and retried after a capped, jittered exponential
  backoff (``EMAIL_BACKOFF_INITIAL`` doubling up to ``EMAIL_BACKOFF_MAX``); once ``attempts`` reaches
  ``EMAIL_MAX_ATTEMPTS`` the job is moved to ``queue:email:dead`` (with ``last_error``);
* permanent failure (5xx) -> moved to the dead list at once.

Dead-list entries: a valid job that could not be delivered is the job itself plus ``reason``
(``rejected``/``attempts_exhausted``), ``last_error`` and ``dead_at`` (replayable as is); a job that can never
be sent is ``{"raw", "reason", "last_error", "dead_at"[, "id", "bytes"]}`` with the text as received (a sample
when larger than the limit). A job the source delivered ``LIST_MAX_DELIVERIES`` times without an outcome is
dead-lettered by the source (:mod:`connectors.redis.lists`).

Delivery: at-least-once per job, at most once per successful SMTP acceptance except when the process dies
between the server's acceptance and the LREM (then that one job is sent again on restart: at most
``concurrency`` duplicates per crash). A crash loses no job: what was held is re-delivered by the source.
A clean stop waits (bounded by ``SMTP_TIMEOUT``) for the conversations in progress and their acks, and gives
jobs not started yet (or waiting for a retry) back to ``queue:email`` atomically.
Unit of parallelism: one sink partition (and its thread pool) per worker.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import random
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import msgspec
import orjson
import redis
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from connectors import metrics
from connectors.email.smtp import SmtpConfig, SmtpConnection, SmtpPermanentError, SmtpTemporaryError, build_message
from connectors.redis.keys import EMAIL_QUEUE
from connectors.redis.lists import ListAcker, ListItem
from connectors.untrusted import Rejected, decode, sample
from cryptoflow.logs import get_logger
from operators.alerts import MAX_JOB_ID, InvalidJob
from operators.events import EmailJob

log = get_logger("email_sender")

MAX_JOB_BYTES = 64 * 1024  # an alert email is well under 2 KB; anything larger is not ours
_JOB = msgspec.json.Decoder(EmailJob)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    initial_s: float = 1.0
    max_s: float = 60.0

    def delay(self, attempts: int) -> float:
        base = min(self.max_s, self.initial_s * 2 ** max(attempts - 1, 0))
        return float(base * random.uniform(0.8, 1.0))  # jitter


@dataclass(frozen=True)
class _Outcome:
    """``sent``: accepted (ack). ``dead``: move this to the dead list. ``retry``: hold this, try later."""

    dead: bytes | None = None
    retry: bytes | None = None
    delay: float = 0.0
    sent: EmailJob | None = None
    duration_ms: float = 0.0


class _Pool:
    """Sender threads over a due-time heap; jobs wait there (still held in Redis) between retries."""

    def __init__(self, acker: ListAcker, smtp: SmtpConfig, policy: RetryPolicy, dead_key: str,
                 concurrency: int) -> None:
        self._acker = acker
        self._smtp = smtp
        self._policy = policy
        self._dead = dead_key
        self._heap: list[tuple[float, int, ListItem]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._stopping = False
        self._threads = [threading.Thread(target=self._run, name=f"smtp-{i}", daemon=True)
                         for i in range(concurrency)]
        for t in self._threads:
            t.start()

    def submit(self, items: list[ListItem], delay: float = 0.0) -> None:
        due = time.monotonic() + delay
        with self._cond:
            for item in items:
                heapq.heappush(self._heap, (due, next(self._seq), item))
            self._cond.notify(len(items))

    def _next(self) -> ListItem | None:
        with self._cond:
            while not self._stopping:
                if self._heap:
                    wait = self._heap[0][0] - time.monotonic()
                    if wait <= 0:
                        return heapq.heappop(self._heap)[2]
                    self._cond.wait(wait)
                else:
                    self._cond.wait()
            return None

    def _run(self) -> None:
        conn = SmtpConnection(self._smtp)
        try:
            while (item := self._next()) is not None:
                try:
                    outcome = self._attempt(conn, item)
                    if outcome.sent is not None:
                        self._ack(item)  # first thing after the server's acceptance: nothing can stop it
                        self._log_sent(outcome.sent, outcome.duration_ms)
                    else:
                        self._settle(item, outcome)
                    kind = "sent" if outcome.sent is not None else "dead" if outcome.dead is not None else "retried"
                    metrics.EMAILS.labels(kind).inc()  # cryptoflow_email_jobs_total{outcome}
                except Exception:  # never let one job end this sender thread (the pool would shrink silently)
                    log.exception("email_worker_error", sample=sample(item.raw))  # still held: delivered again
        finally:
            conn.close()

    def _attempt(self, conn: SmtpConnection, item: ListItem) -> _Outcome:
        """Validate the job fully, then try the SMTP delivery once (no Redis here) and say what to do with the
        held element. A job that can never be sent is dead at once: no retry, no traceback."""
        job = decode(_JOB, item.raw, max_bytes=MAX_JOB_BYTES)
        if isinstance(job, Rejected):
            log.error("email_job_invalid", reason=job.reason, detail=job.detail, sample=job.sample)
            return _Outcome(dead=_dead_invalid(item.raw, job.reason, job.detail, None))
        try:
            msg = build_message(job, self._smtp.sender, max_attempts=self._policy.max_attempts)
        except InvalidJob as err:
            log.error("email_job_invalid", reason="invalid_job", job=sample(job.id, 80), error=str(err))
            return _Outcome(dead=_dead_invalid(item.raw, "invalid_job", str(err), job.id))
        started = time.monotonic()
        try:
            conn.send(job, msg)
        except SmtpPermanentError as err:
            log.error("email_rejected", job=job.id, to=job.to, error=str(err))
            return _Outcome(dead=_dead_job(job, "rejected", str(err), job.attempts + 1))
        except SmtpTemporaryError as err:
            return self._retry_or_dead(item, job, str(err))
        except Exception as err:  # unforeseen (a library error): retried, then dead
            log.exception("email_send_error", job=job.id)
            return self._retry_or_dead(item, job, f"{type(err).__name__}: {err}")
        return _Outcome(sent=job, duration_ms=(time.monotonic() - started) * 1000)

    def _ack(self, item: ListItem) -> None:
        """Remove the accepted job from the processing list, retrying while Redis fails (even while stopping:
        a job the server accepted must not be sent again). Only Redis calls and a sleep here."""
        delay, failed = 0.2, False
        while True:
            try:
                self._acker.ack([item])
                if failed:
                    with contextlib.suppress(Exception):
                        log.warning("email_ack_recovered")
                return
            except redis.RedisError:
                if not failed:  # one line per outage or failover, not per attempt
                    with contextlib.suppress(Exception):
                        log.warning("email_ack_retry", retry_in_s=delay)
                failed = True
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    @staticmethod
    def _log_sent(job: EmailJob, duration_ms: float) -> None:
        with contextlib.suppress(Exception):  # acked already; a logging failure must not look like a send error
            log.info("email_sent", job=job.id, alert_id=job.alert_id, attempts=job.attempts + 1,
                     duration_ms=round(duration_ms, 1))

    def _retry_or_dead(self, item: ListItem, job: EmailJob, error: str) -> _Outcome:
        attempts = job.attempts + 1
        if attempts >= self._policy.max_attempts:
            log.error("email_dead", job=job.id, attempts=attempts, error=error)
            return _Outcome(dead=_dead_job(job, "attempts_exhausted", error, attempts))
        delay = self._policy.delay(attempts)
        log.warning("email_retry", job=job.id, attempts=attempts, error=error, retry_in_s=round(delay, 2))
        raw = msgspec.json.encode(msgspec.structs.replace(job, attempts=attempts))
        return _Outcome(retry=raw, delay=delay)

    def _settle(self, item: ListItem, outcome: _Outcome) -> None:
        """Apply the outcome in Redis, retrying while Redis is unreachable (never re-sending the email)."""
        delay, failed = 0.2, False
        while True:
            try:
                if outcome.dead is not None:
                    self._acker.move_to(item, self._dead, outcome.dead)
                elif outcome.retry is not None:
                    self.submit([self._acker.replace(item, outcome.retry)], outcome.delay)
                return
            except redis.RedisError as err:  # unreachable, failing over, or refusing writes (OOM): keep trying
                if self._stopping:
                    return  # still held in the processing list: re-delivered at the next start
                if not failed:  # one line per outage or failover, not per attempt
                    log.warning("email_redis_unavailable", error=str(err), retry_in_s=delay)
                failed = True
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def stop(self) -> None:
        """Stop taking jobs; wait (bounded by the SMTP timeout) for the conversations in progress to finish
        and be acked, so a clean shutdown does not re-send them at the next start; then give the jobs not
        started (or waiting for a retry) back to the queue's consuming end, atomically, so they are the first
        taken at the next start and are not counted as deliveries that never finished."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        deadline = time.monotonic() + self._smtp.timeout + 2.0
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        with self._cond:
            waiting = [entry[2] for entry in sorted(self._heap)]
            self._heap.clear()
        released = 0
        try:
            for item in waiting:
                released += self._acker.release(item)
        except redis.RedisError as err:  # still held in the processing list: delivered again at the next start
            log.warning("email_release_failed", error=str(err), released=released, held=len(waiting) - released)
        if waiting:
            log.info("email_released", jobs=released)
        self._acker.close()


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _dead_job(job: EmailJob, reason: str, error: str, attempts: int) -> bytes:
    """The dead-list entry of a valid job that could not be delivered: the job (replayable) plus why."""
    return msgspec.json.encode({**msgspec.structs.asdict(job), "attempts": attempts, "reason": reason,
                                "last_error": error, "dead_at": _now_iso()})


def _dead_invalid(raw: bytes, reason: str, error: str, job_id: str | None) -> bytes:
    """The dead-list entry of a job that can never be sent: the text as received (a sample when larger than
    :data:`MAX_JOB_BYTES`), never parsed again, plus why."""
    entry: dict[str, object] = {"raw": raw.decode("utf-8", "replace") if len(raw) <= MAX_JOB_BYTES else sample(raw),
                                "reason": reason, "last_error": error, "dead_at": _now_iso()}
    if len(raw) > MAX_JOB_BYTES:
        entry["bytes"] = len(raw)
    if job_id is not None:
        entry["id"] = job_id[:MAX_JOB_ID]
    return orjson.dumps(entry)


class _Partition(StatelessSinkPartition[ListItem]):
    def __init__(self, pool: _Pool) -> None:
        self._pool = pool

    def write_batch(self, items: list[ListItem]) -> None:
        self._pool.submit(items)

    def close(self) -> None:
        self._pool.stop()


class EmailSink(DynamicSink[ListItem]):
    """Sends each job over SMTP from a thread pool; acks after acceptance; retries; dead-letters."""

    def __init__(self, redis_url: str, smtp: SmtpConfig, policy: RetryPolicy, *, queue_key: str = EMAIL_QUEUE,
                 concurrency: int = 2) -> None:
        self._url = redis_url
        self._smtp = smtp
        self._policy = policy
        self._queue = queue_key
        self._concurrency = concurrency

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Partition:
        acker = ListAcker(self._url, self._queue)
        return _Partition(_Pool(acker, self._smtp, self._policy, f"{self._queue}:dead", self._concurrency))
