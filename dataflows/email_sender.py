"""Email sender dataflow: ``queue:email`` -> SMTP.

``python -m bytewax.run dataflows.email_sender``

Jobs are taken FIFO from ``queue:email`` by :class:`connectors.redis.list_source.ReliableRedisListSource` in explicit
ack mode: each job moves atomically to ``queue:email:processing:0`` and stays there until the SMTP server
accepted it (then LREM), or it is moved to ``queue:email:dead`` (``EMAIL_MAX_ATTEMPTS`` temporary failures,
a permanent 5xx, or a job that can never be sent: at once). Jobs left in the processing list by a crash are sent
first on restart; one delivered ``LIST_MAX_DELIVERIES`` times without an outcome (a job that crashes or wedges
the sender) goes to ``queue:email:dead`` instead of looping on every start. SIGINT/SIGTERM stop cleanly
(installed by :func:`cryptoflow.entry.lazy_flow`): the source ends, the conversations in progress finish and
are acked, jobs not started go back to ``queue:email``.
Sending happens in :class:`connectors.email.sink.EmailSink`'s thread pool (``EMAIL_CONCURRENCY``), never in
the Bytewax worker, so a slow SMTP server cannot freeze the dataflow; at most ``EMAIL_MAX_IN_FLIGHT`` jobs are
held at once. No recovery store is needed: the processing list is the state.
"""

from __future__ import annotations

import bytewax.operators as op
from bytewax.dataflow import Dataflow

from connectors.redis.keys import EMAIL_QUEUE
from connectors.redis.list_source import ReliableRedisListSource
from connectors.redis.lists import AckMode
from cryptoflow.connector_configs import email_sink
from cryptoflow.entry import lazy_flow
from cryptoflow.logs import configure_logging, get_logger
from cryptoflow.settings import Settings, mask_url, settings_or_exit

log = get_logger("email_sender")


def build(settings: Settings, *, queue_key: str = EMAIL_QUEUE) -> Dataflow:
    flow = Dataflow("email_sender")
    source = ReliableRedisListSource(
        str(settings.redis_url), queue_key, partitions=1, ack=AckMode.EXPLICIT, batch_size=100,
        poll_interval=0.05, max_in_flight=settings.email_max_in_flight, max_deliveries=settings.list_max_deliveries,
        suspect_wait=settings.smtp_timeout * 3 + 5.0,
    )
    jobs = op.input("read", flow, source)
    op.output("send", jobs, email_sink(settings))
    return flow


def _flow_from_env() -> Dataflow:
    settings = settings_or_exit()
    configure_logging(settings.log_level, settings.log_format)
    log.info("starting", redis=mask_url(str(settings.redis_url)), smtp_host=settings.smtp_host,
             smtp_port=settings.smtp_port, starttls=settings.smtp_starttls, concurrency=settings.email_concurrency,
             max_attempts=settings.email_max_attempts)
    return build(settings)


__getattr__ = lazy_flow(__name__, _flow_from_env)
