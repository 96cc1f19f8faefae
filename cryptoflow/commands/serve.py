"""``cryptoflow serve``: the REST API, the push gateway and the browser monitor under uvicorn.

It binds the socket itself, so ``--port 0`` picks a free port, and prints exactly one line on stdout once the
app has started and the socket listens: ``cryptoflow serve: listening on http://HOST:PORT``. SIGINT/SIGTERM
stop it gracefully (requests in flight finish, the lifespan closes the stores) with exit 0. A failed start
(e.g. the database cannot be opened) is one line on stderr and exit 1.

``--workers N`` runs N processes on the shared socket (uvicorn's supervisor; each worker builds the app from
the environment); one worker is one process, the right unit for replicas behind a load balancer.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import socket
import sys
from collections.abc import Iterator
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from cryptoflow.settings import Settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("serve", help="run the REST API, push gateway and browser monitor")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.set_defaults(run=run)


class _Server(uvicorn.Server):
    """uvicorn's server that says when it listens and exits 0 on a stop signal.

    uvicorn re-raises a captured SIGINT/SIGTERM after its graceful shutdown (the process then dies of it);
    a stop requested by the operator is a success here, so the signal is only recorded."""

    def __init__(self, config: uvicorn.Config, url: str) -> None:
        super().__init__(config)
        self.url = url

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and not self.should_exit:
            print(f"cryptoflow serve: listening on {self.url}", flush=True)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


class _Supervisor(Multiprocess):
    """uvicorn's supervisor, with a worker's death seen at once and a stop signal obeyed at once.

    uvicorn keeps the parent's copy of each worker's end of the health-check pipe open, so a check of a
    worker that died never sees EOF and waits out the whole timeout (60 s here); and its signal handler
    only queues the signal, read after the checks."""

    def __init__(self, config: uvicorn.Config, sockets: list[socket.socket]) -> None:
        super().__init__(config, sockets)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self.should_exit.set())

    def keep_subprocess_alive(self) -> None:
        for process in self.processes:  # started: the worker holds its own copy (passed at spawn)
            process.child_conn.close()
        super().keep_subprocess_alive()


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.workers < 1:
        print("cryptoflow serve: --workers must be at least 1", file=sys.stderr)
        return 2
    # No access log: a line per request would cost more than the hot routes themselves.
    common: dict[str, Any] = {"host": args.host, "port": args.port, "access_log": False, "log_config": None,
              "lifespan": "on", "timeout_graceful_shutdown": 10}
    if args.workers > 1:
        return _run_workers(args.workers, common)
    from service.app import create_app

    config = uvicorn.Config(create_app(settings), **common)
    try:
        sock = config.bind_socket()
    except SystemExit:  # uvicorn logs the bind error and exits 1
        print(f"cryptoflow serve: cannot listen on {args.host}:{args.port}", file=sys.stderr)
        return 1
    server = _Server(config, _url(sock))
    server.run(sockets=[sock])
    if not server.started:
        print("cryptoflow serve: the service did not start (see the log above)", file=sys.stderr)
        return 1
    return 0


def _run_workers(workers: int, common: dict[str, Any]) -> int:
    # A worker that has not finished its start (imports, migrations) within the health-check timeout is killed
    # and restarted by uvicorn: 5 s by default, which a loaded machine exceeds, restarting workers forever.
    config = uvicorn.Config("service.app:app_from_env", factory=True, workers=workers,
                            timeout_worker_healthcheck=60, **common)
    sock = config.bind_socket()
    print(f"cryptoflow serve: listening on {_url(sock)}", flush=True)  # the workers accept on it as they start
    supervisor = _Supervisor(config, sockets=[sock])
    supervisor.run()
    if any(p.exitcode == STARTUP_FAILURE for p in supervisor.processes):
        print("cryptoflow serve: a worker did not start (see the log above)", file=sys.stderr)
        return 1
    return 0
