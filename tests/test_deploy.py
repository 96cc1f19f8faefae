"""bytewax.yaml declares every dataflow module, and `cryptoflow run --dry-run` prints runnable commands."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import dataflows
from cryptoflow.deploy import Deployment, Recovery, load
from tests.fixtures.redis import RedisServer

ROOT = Path(__file__).resolve().parents[1]


def test_every_dataflow_module_is_declared() -> None:
    declared = load(ROOT / "bytewax.yaml").dataflows
    modules = {m.name for m in pkgutil.iter_modules(dataflows.__path__) if not m.name.startswith("_")}
    assert modules <= set(declared), f"undeclared in bytewax.yaml: {modules - set(declared)}"
    for name, dep in declared.items():
        assert dep.module == f"dataflows.{name}"


def test_cluster_commands() -> None:
    dep = Deployment(module="dataflows.x", workers=2, processes=2, base_port=3000,
                     recovery=Recovery(dir=Path("/nonexistent/rec"), partitions=2, snapshot_interval=5))
    assert dep.commands(python="py") == [
        ["py", "-m", "bytewax.run", "dataflows.x", "-w", "2", "-r", "/nonexistent/rec", "-s", "5", "-b", "0",
         "-i", str(i), "-a", "127.0.0.1:3000;127.0.0.1:3001"] for i in range(2)
    ]
    assert dep.init_recovery(python="py") == ["py", "-m", "bytewax.recovery", "/nonexistent/rec", "2"]
    assert [dep.process_env(i) for i in range(2)] == [{}, {}]  # no metrics_port: METRICS_PORT left as it is
    dep = Deployment(module="dataflows.x", processes=2, metrics_port=9500)
    assert [dep.process_env(i) for i in range(2)] == [{"METRICS_PORT": "9500"}, {"METRICS_PORT": "9501"}]


def test_metrics_ports_of_two_dataflows_may_not_overlap() -> None:
    import pytest
    from pydantic import ValidationError

    from cryptoflow.deploy import DeployFile

    flows = {"a": {"module": "dataflows.a", "processes": 3, "metrics_port": 9500},
             "b": {"module": "dataflows.b", "metrics_port": 9502}}
    with pytest.raises(ValidationError, match="b's metrics port 9502 is also a's"):
        DeployFile.model_validate({"dataflows": flows})
    DeployFile.model_validate({"dataflows": {**flows, "b": {**flows["b"], "metrics_port": 9503}}})


def test_run_dry_run_prints_the_commands() -> None:
    proc = subprocess.run([sys.executable, "-m", "cryptoflow.cli", "run", "market_data", "--dry-run"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "-m bytewax.run dataflows.market_data -w 1 -r recovery/market_data" in proc.stdout
    metrics_port = load(ROOT / "bytewax.yaml").dataflows["market_data"].metrics_port
    assert proc.stdout.splitlines()[-1].startswith(f"METRICS_PORT={metrics_port} ")  # its own /metrics port
    proc = subprocess.run([sys.executable, "-m", "cryptoflow.cli", "run", "nope", "--dry-run"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2 and "no dataflow 'nope'" in proc.stderr


def test_run_creates_the_recovery_store_on_first_start(tmp_path: Path) -> None:
    """bytewax.recovery refuses a directory that does not exist: `cryptoflow run` must create it first."""
    store = tmp_path / "recovery" / "x"
    spec = tmp_path / "bytewax.yaml"
    # A module that does not exist: the dataflow itself fails at once, after the store was made.
    spec.write_text(f"dataflows:\n  x:\n    module: dataflows.no_such_flow\n    recovery:\n      dir: {store}\n")
    proc = subprocess.run([sys.executable, "-m", "cryptoflow.cli", "run", "x", "--file", str(spec)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    assert "creating the recovery store failed" not in proc.stderr, proc.stderr
    assert (store / "part-0.sqlite3").is_file(), proc.stderr
    assert proc.returncode != 0  # the missing module
    assert load(spec).dataflows["x"].init_recovery() is None  # the next start reuses the store


def test_run_outside_the_project_says_so_in_one_line(tmp_path: Path) -> None:
    """No bytewax.yaml in the working directory: one line naming it and what to do, exit 2, no traceback."""
    proc = subprocess.run([sys.executable, "-m", "cryptoflow.cli", "run", "market_data"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"cryptoflow run: bytewax.yaml not found in {tmp_path}: run from the cryptoflow "
                                   "project directory or pass --file PATH")


def test_run_with_a_broken_deploy_file_says_what_is_wrong(tmp_path: Path) -> None:
    spec = tmp_path / "bytewax.yaml"
    for text, expected in (("dataflows: [", "is not valid YAML"),
                           ("dataflows:\n  x:\n    module: dataflows.x\n    workers: 0\n",
                            "dataflows.x.workers: Input should be greater than or equal to 1")):
        spec.write_text(text)
        proc = subprocess.run([sys.executable, "-m", "cryptoflow.cli", "run", "x", "--file", str(spec)],
                              cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 2
        assert len(proc.stderr.strip().splitlines()) == 1 and expected in proc.stderr, proc.stderr


def test_the_service_is_declared_beside_the_dataflows() -> None:
    services = load(ROOT / "bytewax.yaml").services
    assert set(services) == {"serve"}
    proc = subprocess.run([sys.executable, "-m", "cryptoflow.cli", "run", "serve", "--dry-run"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("-m cryptoflow.cli serve --host 127.0.0.1 --port 8000 --workers 1")


def test_cryptoflow_run_serve_listens_and_stops_on_ctrl_c(tmp_path: Path, redis_server: RedisServer) -> None:
    """`cryptoflow run serve` starts the real service (its listening line on stdout) and a SIGINT to `run` stops
    it cleanly: exit 0."""
    import os
    import re
    import signal

    import httpx

    from tests.fixtures.service import read_listening

    spec = tmp_path / "bytewax.yaml"
    spec.write_text("dataflows: {}\nservices:\n  serve:\n    port: 0\n")
    env = {**os.environ, "REDIS_URL": redis_server.url, "DATA_DIR": str(tmp_path / "data"), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "cryptoflow.cli", "run", "serve", "--file", str(spec)], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    try:
        url, _ = read_listening(proc, 60)
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
        assert httpx.get(f"{url}/v1/status").json()["stores"]["redis"] == "ok"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def test_a_name_both_dataflow_and_service_is_refused(tmp_path: Path) -> None:
    spec = tmp_path / "bytewax.yaml"
    spec.write_text("dataflows:\n  serve:\n    module: dataflows.x\nservices:\n  serve: {}\n")
    proc = subprocess.run([sys.executable, "-m", "cryptoflow.cli", "run", "serve", "--file", str(spec)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert "'serve' is both a dataflow and a service" in proc.stderr and len(proc.stderr.splitlines()) == 1
