"""``bytewax.yaml``: how each dataflow (and the service beside them) is deployed, and the commands that start it."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class Recovery(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    dir: Path
    partitions: int = Field(1, ge=1)
    snapshot_interval: float = Field(10, gt=0)
    backup_interval: float = Field(0, ge=0)


class Deployment(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    module: str
    description: str = ""
    workers: int = Field(1, ge=1)
    processes: int = Field(1, ge=1)
    base_port: int = Field(2101, ge=1024, le=65000)
    metrics_port: int | None = Field(None, ge=1024, le=65000)  # process i serves /metrics on metrics_port + i
    recovery: Recovery | None = None

    def commands(self, python: str = sys.executable) -> list[list[str]]:
        """One ``python -m bytewax.run`` command per process of the cluster."""
        base = [python, "-m", "bytewax.run", self.module, "-w", str(self.workers)]
        if self.recovery is not None:
            base += ["-r", str(self.recovery.dir), "-s", f"{self.recovery.snapshot_interval:g}",
                     "-b", f"{self.recovery.backup_interval:g}"]
        if self.processes == 1:
            return [base]
        addresses = ";".join(f"127.0.0.1:{self.base_port + i}" for i in range(self.processes))
        return [[*base, "-i", str(i), "-a", addresses] for i in range(self.processes)]

    def metrics_ports(self) -> list[int]:
        """Each process's ``METRICS_PORT`` (none when ``metrics_port`` is not declared)."""
        return [] if self.metrics_port is None else [self.metrics_port + i for i in range(self.processes)]

    def process_env(self, index: int) -> dict[str, str]:
        """The environment process ``index`` is started with beyond the caller's: its ``METRICS_PORT``."""
        ports = self.metrics_ports()
        return {"METRICS_PORT": str(ports[index])} if ports else {}

    def init_recovery(self, python: str = sys.executable) -> list[str] | None:
        """The command that creates the recovery store, or None when there is none or it exists.

        ``bytewax.recovery`` needs the directory to exist already (the caller creates it), so "exists" means
        the store's partition files are there, not merely the directory.
        """
        if self.recovery is None or any(self.recovery.dir.glob("part-*.sqlite3")):
            return None
        return [python, "-m", "bytewax.recovery", str(self.recovery.dir), str(self.recovery.partitions)]


class ServiceDeployment(BaseModel):
    """A long-running service beside the dataflows (``cryptoflow serve``): one command, no Bytewax cluster."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    command: str = Field("serve", pattern=r"^serve$")  # the cryptoflow subcommand
    description: str = ""
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    workers: int = Field(1, ge=1)

    def commands(self, python: str = sys.executable) -> list[list[str]]:
        return [[python, "-m", "cryptoflow.cli", self.command, "--host", self.host, "--port", str(self.port),
                 "--workers", str(self.workers)]]

    def init_recovery(self, python: str = sys.executable) -> list[str] | None:
        return None  # stateless: Redis, SQL and InfluxDB hold everything

    def process_env(self, index: int) -> dict[str, str]:
        return {}  # its /metrics is on its own HTTP port


class DeployFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    dataflows: dict[str, Deployment]
    services: dict[str, ServiceDeployment] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _unique_names(self) -> DeployFile:
        both = sorted(set(self.dataflows) & set(self.services))
        if both:
            msg = f"{both[0]!r} is both a dataflow and a service; `cryptoflow run NAME` needs one meaning"
            raise ValueError(msg)
        owner: dict[int, str] = {}
        for name, dep in self.dataflows.items():
            for port in dep.metrics_ports():
                if port in owner:
                    msg = f"{name}'s metrics port {port} is also {owner[port]}'s (process i uses metrics_port + i)"
                    raise ValueError(msg)
                owner[port] = name
        return self

    def runnable(self) -> dict[str, Deployment | ServiceDeployment]:
        """Every name ``cryptoflow run`` starts: the dataflows, then the services."""
        return {**self.dataflows, **self.services}


class DeployFileError(Exception):
    """``bytewax.yaml`` is missing, unreadable or not of the expected shape (the message is one line)."""


def load(path: Path = Path("bytewax.yaml")) -> DeployFile:
    try:
        text = path.read_text()
    except FileNotFoundError:
        msg = (f"{path} not found in {Path.cwd()}: run from the cryptoflow project directory "
               "or pass --file PATH")
        raise DeployFileError(msg) from None
    except OSError as err:
        msg = f"cannot read {path}: {err.strerror or err}"
        raise DeployFileError(msg) from None
    try:
        return DeployFile.model_validate(yaml.safe_load(text))
    except yaml.YAMLError as err:
        msg = f"{path} is not valid YAML: {' '.join(str(err).split())}"
        raise DeployFileError(msg) from None
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        msg = f"{path}: {where}: {first['msg']}"
        raise DeployFileError(msg) from None
