"""deploy/ (compose, Kubernetes, Dockerfile) starts exactly what bytewax.yaml declares.

Containers cannot run on the test machines, so these files are checked, not run: every dataflow of
bytewax.yaml appears with the command `cryptoflow run NAME --dry-run` would use (python -m bytewax.run ...),
one compose service per cluster member and one StatefulSet replica per process, with a recovery store
created exactly where one is declared; and nothing else is started.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from cryptoflow.deploy import Deployment, load

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
INFRA = {"redis", "influxdb", "serve"}


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
