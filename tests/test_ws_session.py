"""The generic WebSocket machinery in-process (a ShardRunner and its connections) against the simulator:
connection age roll, request budget, rejection after retries, unsubscribe diffing, shard stagger."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import replace
from typing import Any

from connectors.okx.protocol import OKX_LIMITS, OkxHooks
from connectors.ws.events import (
    Connected,
    Crashed,
    Disconnected,
    Frame,
    Rejected,
    Subscribed,
    Unsubscribed,
    WsEvent,
)
from connectors.ws.hooks import Ack, Control
from connectors.ws.shard import ShardRunner
from cryptoflow.servers import free_port
from tests.waiting import wait_for


class StaticTopics:
    """A TopicSource whose wanted set the test changes directly."""

    interval = 0.2

    def __init__(self, topics: set[str]) -> None:
        self.topics = set(topics)
        self.rejected: dict[str, str] = {}

    async def poll(self) -> frozenset[str] | None:
        return frozenset(self.topics - set(self.rejected))

    async def report_rejected(self, topic: str, reason: str) -> None:
        self.rejected[topic] = reason

    async def close(self) -> None:
        pass


def _runner(sim, topics: set[str], events: deque, **limits) -> tuple[ShardRunner, StaticTopics]:
    hooks = OkxHooks(sim.okx_ws_url, channel="books", limits=replace(OKX_LIMITS, **limits))
    source = StaticTopics(topics)
    runner = ShardRunner(index=0, shards=1, hooks=hooks, source=source, emit=events.append, per_connection=2,
                         backoff_initial=0.1, backoff_max=0.5)
    return runner, source


def _of(events: deque, kind: type) -> list:
    return [e for e in list(events) if isinstance(e, kind)]


def test_subscribe_diff_reject_and_pack_connections(start_simulator) -> None:
    sim = start_simulator("--pairs", "BTC-USDT,ETH-USDT,SOL-USDT", "--rate", "10")
    events: deque = deque()
    runner, source = _runner(sim, {"BTC-USDT", "ETH-USDT", "SOL-USDT", "FOO-BAR"}, events)
    runner.start()
    try:
        wait_for("3 subscribed", lambda: {e.topic for e in _of(events, Subscribed)} == {"BTC-USDT", "ETH-USDT",
                                                                                        "SOL-USDT"})
        rejected = wait_for("FOO-BAR rejected", lambda: _of(events, Rejected))
        assert rejected[0].topic == "FOO-BAR" and rejected[0].reason.startswith("60018")
        assert source.rejected == {"FOO-BAR": rejected[0].reason}  # reported after 1 + 3 retries
        wait_for("2 connections (2 pairs per connection)", lambda: runner.connections == 2)
        wait_for("frames", lambda: len(_of(events, Frame)) > 10)
        source.topics.discard("ETH-USDT")
        wait_for("ETH unsubscribed", lambda: [e.topic for e in _of(events, Unsubscribed)] == ["ETH-USDT"])
        subs = {s["inst"] for s in sim.status()["subscriptions"]}
        assert subs == {"BTC-USDT", "SOL-USDT"}  # only the difference was touched on the live connections
        assert len(_of(events, Connected)) == 2 and not _of(events, Disconnected)
    finally:
        runner.stop()


def test_connection_age_roll_and_hourly_request_budget(start_simulator) -> None:
    sim = start_simulator("--pairs", "BTC-USDT,ETH-USDT", "--rate", "10")
    events: deque = deque()
    # max_age 1 s: the connection is rolled and its topics subscribed again; 3 requests per hour (kept across
    # reconnects of the same connection slot, conservatively): the fourth subscribe waits for the budget.
    runner, _ = _runner(sim, {"BTC-USDT"}, events, max_age=1.0, requests_per_hour=3)
    runner.start()
    try:
        wait_for("rolled twice", lambda: len(_of(events, Disconnected)) >= 2, timeout=20)
        assert all("older than" in e.reason for e in _of(events, Disconnected))
        wait_for("budget used up", lambda: len(_of(events, Subscribed)) == 3)
        time.sleep(2.5)  # further rolls may not subscribe again within the hour
        assert len(_of(events, Subscribed)) == 3
        assert len(_of(events, Connected)) >= 4
    finally:
        runner.stop()


class _BuggyHooks(OkxHooks):
    def classify(self, text: str):  # a bug in venue code on a data frame
        if text.startswith('{"arg"'):
            msg = "boom"
            raise ValueError(msg)
        return super().classify(text)


def test_a_connection_dying_of_a_bug_is_reported_not_silent(start_simulator) -> None:
    sim = start_simulator("--pairs", "BTC-USDT", "--rate", "10")
    events: deque = deque()
    hooks = _BuggyHooks(sim.okx_ws_url, channel="books")
    runner = ShardRunner(index=0, shards=1, hooks=hooks, source=StaticTopics({"BTC-USDT"}), emit=events.append,
                         per_connection=2)
    runner.start()
    try:
        (crash,) = wait_for("the crash reported", lambda: _of(events, Crashed))
        assert "ValueError: boom" in crash.error
    finally:
        runner.stop()


class _OplessAcks(OkxHooks):
    """Acks that do not say which op they answer (as Binance's ``{"result":null,"id":7}`` does)."""

    def classify(self, text: str) -> Control | None:
        ctl = super().classify(text)
        return Ack(None, ctl.topics, ctl.req_id) if isinstance(ctl, Ack) else ctl


def test_an_ack_without_its_op_counts_as_its_requests_op(start_simulator: Any) -> None:
    sim = start_simulator("--pairs", "BTC-USDT,ETH-USDT", "--rate", "10")
    events: deque[WsEvent] = deque()
    source = StaticTopics({"BTC-USDT", "ETH-USDT"})
    runner = ShardRunner(index=0, shards=1, hooks=_OplessAcks(sim.okx_ws_url, channel="books"), source=source,
                         emit=events.append, per_connection=2)
    runner.start()
    try:
        wait_for("both subscribed", lambda: {e.topic for e in _of(events, Subscribed)} == {"BTC-USDT", "ETH-USDT"})
        source.topics.discard("ETH-USDT")
        wait_for("ETH unsubscribed", lambda: [e.topic for e in _of(events, Unsubscribed)] == ["ETH-USDT"])
        assert {s["inst"] for s in sim.status()["subscriptions"]} == {"BTC-USDT"}
    finally:
        runner.stop()


def test_stop_right_after_start_ends_the_thread() -> None:
    port = free_port()  # nobody listens: the connection is retrying when stop() comes
    runner = ShardRunner(index=0, shards=1, hooks=OkxHooks(f"ws://127.0.0.1:{port}", channel="books"),
                         source=StaticTopics({"BTC-USDT"}), emit=deque().append, per_connection=2)
    runner.start()
    runner.stop(timeout=30)
    assert not [t for t in threading.enumerate() if t.name == "ws-okx-0" and t.is_alive()]


def test_a_worker_that_falls_behind_holds_a_bounded_backlog_and_loses_nothing(start_simulator) -> None:
    """Backpressure: with nobody draining, the shard stops reading at max_backlog events (the rest waits in
    the socket); once drained, reading resumes and every frame arrives, in order, on the same connection."""
    from connectors.ws.events import EventQueue

    sim = start_simulator("--pairs", "BTC-USDT,ETH-USDT", "--rate", "200")
    events = EventQueue(max_backlog=50)
    hooks = OkxHooks(sim.okx_ws_url, channel="books", limits=OKX_LIMITS)
    runner = ShardRunner(index=0, shards=1, hooks=hooks, source=StaticTopics({"BTC-USDT", "ETH-USDT"}),
                         emit=events, per_connection=2, backoff_initial=0.1, backoff_max=0.5)
    runner.start()
    try:
        wait_for("backlog full", events.full)
        steps_at_full = sim.status()["steps"]
        # The simulator keeps producing; the shard does not read, so its backlog stays where it stopped: wait
        # until the simulator has sent 5x the backlog more (into the socket buffers), then look.
        wait_for("simulator moved on", lambda: sim.status()["steps"] > steps_at_full + 250)
        # at most the one frame read before the check (lifecycle events such as TopicsChecked still come)
        assert len(_of(events, Frame)) <= 50 + 1
        seen: list[Frame] = []
        wait_for("drained and resumed", lambda: (seen.extend(
            e for e in [events.popleft() for _ in range(len(events))] if isinstance(e, Frame)),
            len(seen) > 400)[1], timeout=30)
        assert not _of(events, Disconnected)
        assert {f.conn for f in seen} == {seen[0].conn}  # one connection throughout: paused, never dropped
    finally:
        runner.stop()
