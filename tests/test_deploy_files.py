"""deploy/ (compose, Kubernetes, Dockerfile) starts exactly what bytewax.yaml declares.

Containers cannot run on the test machines, so these files are checked, not run: every dataflow of
bytewax.yaml appears with the command `cryptoflow run NAME --dry-run` would use (python -m bytewax.run ...),
one compose service per cluster member and one StatefulSet replica per process, with a recovery store
created exactly where one is declared; and nothing else is started. Prometheus scrapes exactly those processes
(each on the METRICS_PORT bytewax.yaml gives it) and the service; the Grafana dashboard asks only for series
the README documents, in PromQL that promtool accepts, from the data sources that are provisioned.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from cryptoflow.deploy import Deployment, load
from tests.test_prometheus import documented_metrics

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
INFRA = {"redis", "influxdb", "serve", "prometheus", "grafana"}


@pytest.fixture(scope="module")
def declared() -> dict[str, Deployment]:
    return dict(load(ROOT / "bytewax.yaml").dataflows)


def _strip_cluster(cmd: list[str]) -> list[str]:
    """A command without its -i/-a arguments (checked separately)."""
    out, skip = [], False
    for arg in cmd:
        if skip:
            skip = False
        elif arg in ("-i", "-a"):
            skip = True
        else:
            out.append(arg)
    return out


def _run_command(command: list[str]) -> tuple[list[str], str | None]:
    """The bytewax.run command of a compose service, and its shell prelude (recovery init) if any."""
    if command[:2] != ["sh", "-c"]:
        return command, None
    prelude, _, run = command[2].rpartition("exec ")
    return shlex.split(run), prelude


def test_compose_starts_every_member_of_every_dataflow_and_nothing_else(declared: dict[str, Deployment]) -> None:
    services: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    expected = {f"{name}-{i}" if dep.processes > 1 else name
                for name, dep in declared.items() for i in range(dep.processes)}
    assert set(services) - INFRA == expected
    for name, dep in declared.items():
        want = dep.commands(python="python")
        for i, member in enumerate(sorted(s for s in services if s == name or s.startswith(f"{name}-"))):
            cmd, prelude = _run_command(services[member]["command"])
            assert _strip_cluster(cmd) == _strip_cluster(want[i]), member
            if dep.processes > 1:
                assert cmd[cmd.index("-i") + 1] == str(i)
                assert len(cmd[cmd.index("-a") + 1].split(";")) == dep.processes
            if dep.recovery is None:
                assert prelude is None, f"{member} creates a recovery store bytewax.yaml does not declare"
            else:
                init = f"python -m bytewax.recovery {dep.recovery.dir} {dep.recovery.partitions}"
                assert prelude is not None and init in prelude, member
    assert services["serve"]["command"][:2] == ["cryptoflow", "serve"]


def _k8s() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((DEPLOY / "k8s" / "cryptoflow.yaml").read_text()) if d]


def test_kubernetes_has_one_statefulset_per_dataflow_shaped_like_bytewax_helm_chart(
        declared: dict[str, Deployment]) -> None:
    docs = _k8s()
    sets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "StatefulSet"}
    headless = {d["metadata"]["name"] for d in docs if d["kind"] == "Service" and d["spec"].get("clusterIP") == "None"}
    assert set(sets) == {name.replace("_", "-") for name in declared}
    for name, dep in declared.items():
        sts = sets[name.replace("_", "-")]
        spec, pod = sts["spec"], sts["spec"]["template"]["spec"]
        assert spec["replicas"] == dep.processes
        assert spec["serviceName"] in headless
        (container,) = pod["containers"]
        # -i comes from the pod ordinal and -a from the hostfile (bytewax.run reads both from the environment).
        assert container["command"] == _strip_cluster(dep.commands(python="python")[0])
        env = {e["name"]: e for e in container["env"]}
        assert env["BYTEWAX_POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        assert env["BYTEWAX_STATEFULSET_NAME"]["value"] == sts["metadata"]["name"]
        assert env["BYTEWAX_REPLICAS"]["value"] == str(dep.processes)
        assert "BYTEWAX_HOSTFILE_PATH" in env
        inits = {c["name"]: c for c in pod["initContainers"]}
        assert "hostfile" in inits
        if dep.recovery is None:
            assert "recovery-init" not in inits and "volumeClaimTemplates" not in spec
        else:
            assert f"python -m bytewax.recovery {dep.recovery.dir} {dep.recovery.partitions}" in \
                inits["recovery-init"]["command"][-1]
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            assert f"/app/{dep.recovery.dir}" in mounts
            assert [c["metadata"]["name"] for c in spec["volumeClaimTemplates"]] == ["recovery"]
    serve = [d for d in docs if d["kind"] == "Deployment"]
    assert [d["spec"]["template"]["spec"]["containers"][0]["command"][:2] for d in serve] == [["cryptoflow", "serve"]]


def test_hostfile_init_container_lists_every_replica(tmp_path: Path) -> None:
    """Run the init container's script as Kubernetes would for a 3-replica set: 3 addresses, ordinal order."""
    sts = next(d for d in _k8s() if d["kind"] == "StatefulSet")
    init = next(c for c in sts["spec"]["template"]["spec"]["initContainers"] if c["name"] == "hostfile")
    target = tmp_path / "hostfile.txt"
    code = init["command"][-1].replace("/etc/bytewax/hostfile.txt", str(target))
    env = {"BYTEWAX_REPLICAS": "3", "BYTEWAX_STATEFULSET_NAME": "market-data", "POD_NAMESPACE": "prod"}
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
    assert target.read_text().splitlines() == [
        f"market-data-{i}.market-data.prod.svc.cluster.local:9999" for i in range(3)]


def test_dockerfile_copies_every_package_the_project_installs() -> None:
    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {p.rstrip("*") for p in include}
    copied = set(re.findall(r"^COPY (\w+) \1$", (DEPLOY / "Dockerfile").read_text(), re.MULTILINE))
    assert packages == copied


def _members(declared: dict[str, Deployment]) -> dict[str, tuple[str, int]]:
    """compose service -> (dataflow, its METRICS_PORT), one per cluster member."""
    out = {}
    for name, dep in declared.items():
        for i, port in enumerate(dep.metrics_ports()):
            out[f"{name}-{i}" if dep.processes > 1 else name] = (name, port)
    return out


def _promtool() -> str:
    promtool = shutil.which("promtool")
    assert promtool, "promtool (Debian's prometheus package) is not installed: run scripts/bootstrap.sh --servers"
    return promtool


def test_prometheus_scrapes_every_process_on_its_metrics_port_and_the_service(
        declared: dict[str, Deployment]) -> None:
    members = _members(declared)
    assert set(members) == {m for name, dep in declared.items()
                            for m in ([name] if dep.processes == 1 else [f"{name}-{i}" for i in range(dep.processes)])}
    services: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    for member, (_, port) in members.items():
        assert services[member]["environment"]["METRICS_PORT"] == str(port), member
        assert services[member]["environment"]["REDIS_URL"] == services["serve"]["environment"]["REDIS_URL"]
    serve_port = services["serve"]["command"][services["serve"]["command"].index("--port") + 1]
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    scraped = {(job["job_name"], target) for job in config["scrape_configs"]
               for static in job["static_configs"] for target in static["targets"]}
    assert scraped == {(name, f"{member}:{port}") for member, (name, port) in members.items()} | \
        {("serve", f"serve:{serve_port}")}
    check = subprocess.run([_promtool(), "check", "config", str(DEPLOY / "prometheus.yml")], capture_output=True,
                           text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr


def test_kubernetes_pods_expose_their_metrics_port_for_prometheus(declared: dict[str, Deployment]) -> None:
    docs = _k8s()
    for d in docs:
        if d["kind"] not in ("StatefulSet", "Deployment"):
            continue
        template = d["spec"]["template"]
        (container,) = template["spec"]["containers"]
        notes = template["metadata"]["annotations"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        if d["kind"] == "Deployment":  # the service: /metrics on its HTTP port
            assert notes["prometheus.io/port"] == str(ports["http"])
        else:
            dep = declared[d["metadata"]["name"].replace("-", "_")]
            env = {e["name"]: e.get("value") for e in container["env"]}
            # every replica is its own pod (own address): the same port, metrics_port (process 0's)
            assert env["METRICS_PORT"] == str(dep.metrics_port) == str(ports["metrics"]) == notes["prometheus.io/port"]
        assert (notes["prometheus.io/scrape"], notes["prometheus.io/path"]) == ("true", "/metrics")
    relabel = yaml.safe_load((DEPLOY / "k8s" / "prometheus.yml").read_text())["scrape_configs"][0]["relabel_configs"]
    keeps = {r["source_labels"][0]: r["regex"] for r in relabel if r.get("action") == "keep"}
    assert keeps == {"__meta_kubernetes_pod_label_app_kubernetes_io_name": "cryptoflow",
                     "__meta_kubernetes_pod_annotation_prometheus_io_scrape": "true"}


def test_grafana_dashboard_uses_provisioned_sources_and_documented_series(tmp_path: Path) -> None:
    grafana = DEPLOY / "grafana"
    sources = yaml.safe_load((grafana / "provisioning" / "datasources" / "cryptoflow.yml").read_text())["datasources"]
    uids = {s["uid"]: s["type"] for s in sources}
    dashboard = json.loads((grafana / "dashboards" / "cryptoflow.json").read_text())
    exprs, documented = [], documented_metrics()
    assert documented, "README: no Prometheus metrics table"
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            ds = target["datasource"]
            assert uids.get(ds["uid"]) == ds["type"], panel["title"]
            if ds["type"] == "prometheus":
                exprs.append(target["expr"])
                for name in re.findall(r"cryptoflow_\w+", target["expr"]):
                    assert re.sub(r"_(bucket|sum|count)$", "", name) in documented, (panel["title"], name)
            else:
                assert "from(bucket: v.defaultBucket)" in target["query"], panel["title"]
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"panel:expr{i}", "expr": e}
                                                        for i, e in enumerate(exprs)]}]}
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    check = subprocess.run([_promtool(), "check", "rules", str(tmp_path / "rules.yml")], capture_output=True,
                           text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    provider = yaml.safe_load((grafana / "provisioning" / "dashboards" / "cryptoflow.yml").read_text())
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{provider['providers'][0]['options']['path']}:ro" in compose
