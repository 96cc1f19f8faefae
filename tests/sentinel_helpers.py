"""A real Redis Sentinel setup on loopback for tests: ``redis-server`` x2 (master, and a replica through
``--replicaof``) and ``redis-sentinel`` x3 (quorum 2), each on a free port, all in their own sessions."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import redis.sentinel

from cryptoflow.servers import free_port, redis_server_binary, start_redis, stop_process, wait_for_port

SERVICE = "cf"
DOWN_AFTER_MS = 1000


def sentinel_binary() -> str | None:
    return shutil.which("redis-sentinel")


@dataclass
class SentinelCluster:
    workdir: Path
    master_port: int = 0
    replica_port: int = 0
    sentinel_ports: list[int] = field(default_factory=list)
    servers: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)  # port -> redis-server
    sentinels: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis+sentinel://{','.join(f'127.0.0.1:{p}' for p in self.sentinel_ports)}/{SERVICE}/0"

    def sentinel(self) -> redis.sentinel.Sentinel:
        return redis.sentinel.Sentinel([("127.0.0.1", p) for p in self.sentinel_ports],  # type: ignore[no-untyped-call]
                                       socket_timeout=1.0, socket_connect_timeout=1.0)

    def master_address(self) -> tuple[str, int]:
        """What the sentinels say now (each asked in turn; the first that answers)."""
        return self.sentinel().discover_master(SERVICE)  # type: ignore[no-untyped-call,no-any-return]

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, decode_responses=True, socket_timeout=2, socket_connect_timeout=2)

    def start(self) -> None:
        self.master_port, self.replica_port = free_port(), free_port()
        self.servers[self.master_port] = start_redis(self.master_port, self.workdir / "master")
        replica = subprocess.Popen(
            [redis_server_binary(), "--port", str(self.replica_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir), "--loglevel", "warning",
             "--replicaof", "127.0.0.1", str(self.master_port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.servers[self.replica_port] = replica
        wait_for_port(self.replica_port, proc=replica)
        binary = sentinel_binary()  # Debian's redis-sentinel (make bootstrap); else redis-server in sentinel mode
        for i in range(3):
            port = free_port()
            conf = self.workdir / f"sentinel-{i}.conf"  # sentinel rewrites its file: one each, writable
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.workdir}\nlogfile {self.workdir}/sentinel-{i}.log\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.master_port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {SERVICE} 3000\n"
                f"sentinel parallel-syncs {SERVICE} 1\n")
            cmd = [binary, str(conf)] if binary else [redis_server_binary(), str(conf), "--sentinel"]
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            self.sentinels.append(proc)
            self.sentinel_ports.append(port)
            wait_for_port(port, proc=proc)
        self.wait_ready()

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until the replica is in sync and every sentinel knows the replica and the two other sentinels (a
        failover needs both; sentinels find each other through hello messages every 2 s)."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError):
                link = self.client(self.replica_port).info("replication").get("master_link_status")
                states: list[dict[str, Any]] = [self.client(p).sentinel_master(SERVICE)  # type: ignore[misc]
                                                for p in self.sentinel_ports]
                last = (link, [(s.get("num-other-sentinels"), s.get("num-slaves")) for s in states])
                if link == "up" and all(int(s["num-other-sentinels"]) == 2 and int(s["num-slaves"]) == 1
                                        for s in states):
                    return
            time.sleep(0.2)
        msg = f"sentinel setup not ready within {timeout} s: replica link, (other sentinels, replicas) = {last!r}"
        raise AssertionError(msg)

    def kill_master(self) -> int:
        """SIGKILL the current master (no shutdown, no last write to the replica); returns its port."""
        port = self.master_address()[1]
        proc = self.servers[port]
        proc.kill()
        proc.wait(10)
        return port

    def restart_as_replica(self, port: int, timeout: float = 30.0) -> None:
        """Start the killed server again on its port as a replica of the current master; wait until in sync and
        every sentinel sees it again (the setup can then fail over once more)."""
        master = self.master_address()[1]
        proc = subprocess.Popen(
            [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir), "--loglevel", "warning", "--replicaof", "127.0.0.1", str(master)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.servers[port] = proc
        wait_for_port(port, proc=proc)
        self.master_port, self.replica_port = master, port
        self.wait_ready(timeout)

    def stop(self) -> None:
        for proc in [*self.sentinels, *self.servers.values()]:
            stop_process(proc)


@contextlib.contextmanager
def sentinel_cluster(workdir: Path) -> Iterator[SentinelCluster]:
    cluster = SentinelCluster(workdir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
