"""Every write to the collector's book and BBO hashes, as Redis itself saw them (MONITOR), in a thread.

Polling a hash shows only where it is when it is read; MONITOR shows each HSET/DEL the sink sent, in order,
so a test can say that a book NEVER left ``valid`` and that it kept updating. Used by the collector's
multi-venue tests only (MONITOR costs Redis some throughput).
"""

from __future__ import annotations

import codecs
import json
import re
import socket
import threading
from collections import defaultdict
from dataclasses import dataclass

_ARG = re.compile(r'"((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Write:
    """One write of a hash: its ``status`` (``deleted`` for a DEL), ``seq_id`` and best levels when written."""

    status: str
    seq_id: int | None = None
    bid: tuple[str, str] | None = None
    ask: tuple[str, str] | None = None
    fields: dict[str, str] | None = None  # all fields (bbo: hashes only)


class BookWatch:
    """``writes[key]``: every write to ``orderbook:*`` / ``bbo:*`` keys since :meth:`start`, in order."""

    def __init__(self, port: int) -> None:
        self._port = port
        self.writes: dict[str, list[Write]] = defaultdict(list)
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.errors: list[str] = []

    def start(self) -> BookWatch:
        self._thread.start()
        assert self._ready.wait(10), "MONITOR did not start"
        return self

    def stop(self) -> None:
        """The thread ends at the next command Redis reports (a daemon: it never holds the test up)."""
        self._stop.set()

    def marks(self) -> dict[str, int]:
        return {k: len(v) for k, v in list(self.writes.items())}

    def since(self, key: str, marks: dict[str, int]) -> list[Write]:
        return list(self.writes.get(key, []))[marks.get(key, 0):]

    def _run(self) -> None:
        # A plain socket: MONITOR's replies are one "+..." line per command, read as they come (no client
        # timeout can cut a long line in two and leave a parser out of step)
        with socket.create_connection(("127.0.0.1", self._port)) as sock, sock.makefile("rb") as lines:
            sock.sendall(b"MONITOR\r\n")
            if lines.readline().strip() != b"+OK":
                self.errors.append("MONITOR refused")
                return
            self._ready.set()
            for raw in lines:
                if self._stop.is_set():
                    return
                try:
                    self._line(raw.decode("utf-8", "replace"))
                except (ValueError, IndexError, KeyError, TypeError) as err:
                    self.errors.append(f"{type(err).__name__}: {err}")

    def _line(self, line: str) -> None:
        head = line.find('] "')
        if head < 0:
            return
        args = [codecs.decode(a, "unicode_escape") for a in _ARG.findall(line[head + 2:])]
        cmd = args[0].lower()
        if len(args) < 2 or not (args[1].startswith(("orderbook:", "bbo:"))):
            return
        key = args[1]
        if cmd == "del":
            for k in args[1:]:
                self.writes[k].append(Write("deleted"))
            return
        if cmd != "hset":
            return
        fields = dict(zip(args[2::2], args[3::2], strict=False))
        if key.startswith("bbo:"):
            self.writes[key].append(Write("bbo", fields=fields))
            return
        seq = fields.get("seq_id")
        bids = json.loads(fields["bids"]) if "bids" in fields else None
        asks = json.loads(fields["asks"]) if "asks" in fields else None
        self.writes[key].append(Write(fields.get("status", ""), int(seq) if seq else None,
                                      tuple(bids[0]) if bids else None, tuple(asks[0]) if asks else None))
