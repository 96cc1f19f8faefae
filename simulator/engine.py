"""The simulator's clock: steps every synthetic market ``--rate`` times a second, hands each step to every
venue, applies faults, and flushes the connections once per wake-up."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from cryptoflow.logs import get_logger
from simulator.conn import Conn, Sub
from simulator.faults import FRAME_FAULTS, VENUES, FaultError, FaultState, raw_text
from simulator.instrument import InstrumentSpec
from simulator.market import Step, SyntheticMarket
from simulator.pregen import Cycle
from simulator.replay import Recordings

log = get_logger("simulator.engine")


class Venue(Protocol):
    name: str
    conns: set[Conn]

    def on_step(self, inst: str, market: SyntheticMarket, step: Step) -> None: ...

    def on_idle(self, inst: str, market: SyntheticMarket) -> None: ...

    def book(self, inst: str) -> dict[str, Any]: ...

    def malformed(self, inst: str | None) -> int: ...

    def raw(self, inst: str | None, text: str, count: int = 1) -> int: ...

    def shutdown_notice(self) -> int: ...


@runtime_checkable
class OkxWarm(Protocol):
    def warm(self, inst: str, market: SyntheticMarket, step: Step) -> None: ...


class Engine:
    def __init__(self, pairs: list[str], seed: int, rate: float, recordings: Recordings, pregenerate: int = 0) -> None:
        now_ms = int(time.time() * 1000)
        self.seed = seed
        self.rate = rate
        self.recordings = recordings
        self.specs = {p: InstrumentSpec.for_instrument(p, seed) for p in pairs}
        self.markets = {p: SyntheticMarket(self.specs[p], seed, now_ms) for p in pairs}
        self.venues: dict[str, Venue] = {}
        self.cycles = {p: Cycle(m, pregenerate, now_ms) for p, m in self.markets.items()} if pregenerate else {}
        self.faults = FaultState()
        # a venue's own book faults (kind -> handler(kind, inst) -> record), registered by the venue
        self.book_faults: dict[str, Callable[[str, str], dict[str, Any]]] = {}
        self.paused = False
        self.steps = 0
        self.replays_finished = 0  # replay subscriptions that sent their last recorded frame
        self._resync_clock = True

    def add_venue(self, venue: Venue) -> None:
        self.venues[venue.name] = venue

    def warm_cycles(self) -> None:
        """``--pregenerate``: one dry lap of every cycle, so the OKX text of every step is encoded up front."""
        if not self.cycles:
            return
        okx = self.venues.get("okx")
        started = time.perf_counter()
        for inst, cycle in self.cycles.items():
            for _ in range(len(cycle.steps)):
                step = cycle.next(0)
                if isinstance(okx, OkxWarm):
                    okx.warm(inst, self.markets[inst], step)
        log.info("cycles_encoded", pairs=len(self.cycles), seconds=round(time.perf_counter() - started, 2))

    def all_conns(self) -> list[Conn]:
        return [c for v in self.venues.values() for c in v.conns]

    def subs(self) -> list[Sub]:
        return [s for c in self.all_conns() for s in c.subs.values()]

    # --- the clock ------------------------------------------------------------------------------------------
    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        interval = max(0.004, min(0.05, 1.0 / self.rate))
        t0 = last_idle = 0.0
        done = 0
        while True:
            await asyncio.sleep(interval)
            now = loop.time()
            if self._resync_clock:
                t0, done, self._resync_clock = now, 0, False
            if self.paused:
                self._resync_clock = True
                if now - last_idle >= 1.0:
                    last_idle = now
                    for inst, market in self.markets.items():
                        for venue in self.venues.values():
                            venue.on_idle(inst, market)
                self.flush()
                continue
            due = int((now - t0) * self.rate) - done
            if due > self.rate:  # more than a second behind: skip ahead rather than burst
                log.warning("clock_behind", steps_skipped=due - int(self.rate))
                done += due - int(self.rate)
                due = int(self.rate)
            # Frames carry the time they are made (as an exchange stamps its events), not the step's
            # scheduled time, so a client's measured latency does not include the clock's wake-up granularity.
            ts_ms = int(time.time() * 1000)
            cycles = self.cycles
            for _ in range(due):
                for inst, market in self.markets.items():
                    self.publish(inst, cycles[inst].next(ts_ms) if cycles else market.step(ts_ms))
            done += due
            self.steps += due
            self.flush()

    def publish(self, inst: str, step: Step) -> None:
        market = self.markets[inst]
        for venue in self.venues.values():
            venue.on_step(inst, market, step)

    def flush(self) -> None:
        for conn in self.all_conns():
            if conn.buffer:
                conn.flush()

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        self._resync_clock = True

    # --- faults ---------------------------------------------------------------------------------------------
    def _market(self, params: dict[str, Any]) -> tuple[str, SyntheticMarket]:
        inst = params.get("inst")
        if self.cycles and params.get("kind") in ("crossed_book", "liquidity_drain", "depth_spike", "trade_gap"):
            msg = f"market fault {params['kind']!r} is not available with --pregenerate (a fixed cycle of steps)"
            raise FaultError(msg)
        if inst not in self.markets:
            msg = f"fault {params['kind']!r} needs inst= one of the synthetic pairs {sorted(self.markets)}, "
            msg += f"got {inst!r}"
            raise FaultError(msg)
        return str(inst), self.markets[str(inst)]

    def _venues(self, params: dict[str, Any], default: str | None) -> list[Venue]:
        name = params.get("venue", default)
        if name in (None, "all", "*"):
            return list(self.venues.values())
        if name not in VENUES or name not in self.venues:
            msg = f"fault {params['kind']!r}: unknown venue {name!r}, expected one of {VENUES} or all"
            raise FaultError(msg)
        return [self.venues[str(name)]]

    def apply_fault(self, params: dict[str, Any]) -> dict[str, Any]:
        """Apply one fault now; returns what was done (raises :class:`FaultError` on bad parameters)."""
        kind = params.get("kind")
        now_ms = int(time.time() * 1000)
        result: dict[str, Any] = {"kind": kind}
        if kind in FRAME_FAULTS:
            inst, _ = self._market(params)
            default = "bybit" if kind == "bybit_u1" else "okx"
            for venue in self._venues(params, default):
                self.faults.add_frame_fault(venue.name, inst, FRAME_FAULTS[str(kind)])
            result["inst"] = inst
        elif kind in self.book_faults:
            inst, _ = self._market(params)
            result.update(inst=inst, **self.book_faults[str(kind)](str(kind), inst))
        elif kind == "drop_connection":
            conns = [c for v in self._venues(params, None) for c in v.conns]
            for conn in conns:
                conn.abort()
            result["connections"] = len(conns)
        elif kind == "malformed":
            result["connections"] = sum(v.malformed(params.get("inst")) for v in self._venues(params, "okx"))
        elif kind == "raw":
            text, count = raw_text(params), int(params.get("count", 1))
            result["connections"] = sum(v.raw(params.get("inst"), text, count) for v in self._venues(params, "okx"))
            result["bytes"] = len(text.encode())
        elif kind == "shutdown_notice":
            venues = self._venues(params, None)
            result["connections"] = sum(v.shutdown_notice() for v in venues)
            close_after = float(params.get("close_after", 1.0))
            conns = [c for v in venues for c in v.conns]

            def close_all() -> None:
                for conn in conns:
                    conn.abort()

            asyncio.get_running_loop().call_later(close_after, close_all)
        elif kind == "pong_delay":
            for venue in self._venues(params, None):
                self.faults.pong_delay[venue.name] = float(params.get("delay", 5.0))
        elif kind == "no_pong":
            for venue in self._venues(params, None):
                self.faults.no_pong.add(venue.name)
        elif kind == "hold":
            for venue in self._venues(params, None):
                self.faults.held.add(venue.name)
                for conn in venue.conns:
                    conn.hold = True
                result.setdefault("connections", 0)
                result["connections"] += len(venue.conns)
        elif kind == "refuse":
            seconds = float(params.get("seconds", 5.0))
            self.faults.refuse_until = time.monotonic() + seconds
            result["seconds"] = seconds
        elif kind == "crossed_book":
            inst, market = self._market(params)
            self.publish(inst, market.crossed(now_ms))
        elif kind == "liquidity_drain":
            inst, market = self._market(params)
            fraction, band = float(params.get("fraction", 0.05)), float(params.get("band", 0.01))
            self.publish(inst, market.start_drain(now_ms, fraction, band))
            result.update(inst=inst, fraction=fraction, band=band)
        elif kind == "depth_spike":
            inst, market = self._market(params)
            side = str(params.get("side", "bid"))
            if side not in ("bid", "ask"):
                msg = f"depth_spike side must be bid or ask, got {side!r}"
                raise FaultError(msg)
            self.publish(inst, market.depth_spike(now_ms, side == "bid", float(params.get("multiple", 200)),
                                                  int(params.get("distance", 2))))
            result.update(inst=inst, side=side)
        elif kind == "trade_gap":
            inst, market = self._market(params)
            count = int(params.get("count", 1))
            if count < 1:
                msg = f"trade_gap count must be at least 1, got {count}"
                raise FaultError(msg)
            market.hidden_trades += count
            result.update(inst=inst, count=count)
        elif kind == "clear":
            target = params.get("target")
            self.faults.clear(target)
            for conn in self.all_conns():  # a venue no longer held sends what it held, in order, at the next flush
                conn.hold = conn.hold and conn.venue in self.faults.held
            if target in (None, "liquidity_drain"):
                for inst, market in self.markets.items():
                    if params.get("inst") in (None, inst) and market.drain is not None:
                        self.publish(inst, market.stop_drain(now_ms))
            if target in (None, "depth_spike"):
                for inst, market in self.markets.items():
                    if params.get("inst") in (None, inst) and market.pinned:
                        self.publish(inst, market.clear_spikes(now_ms))
        else:
            msg = f"unknown fault kind {kind!r}"
            raise FaultError(msg)
        self.flush()
        record = {**params, **result, "at_ms": now_ms}
        self.faults.history.append(record)
        log.info("fault_applied", **{k: v for k, v in record.items() if k != "kind"}, fault=kind)
        return record

    def schedule_faults(self, faults: list[tuple[float, dict[str, Any]]]) -> None:
        """Apply each fault ``delay`` seconds from now; an instrument that is not a synthetic pair stops here."""
        loop = asyncio.get_running_loop()
        for _, params in faults:
            if "inst" in params and params["inst"] not in self.markets:
                msg = f"fault {params['kind']!r}: inst {params['inst']!r} is not one of --pairs {sorted(self.markets)}"
                raise FaultError(msg)
        for delay, params in faults:
            loop.call_later(delay, self._apply_logged, params)

    def _apply_logged(self, params: dict[str, Any]) -> None:
        try:
            self.apply_fault(params)
        except FaultError as err:  # a scheduled fault that cannot apply (e.g. unknown inst) is logged, not fatal
            log.error("fault_rejected", error=str(err))
