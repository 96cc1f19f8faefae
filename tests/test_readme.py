"""The README documents every setting and both entry commands, its hand-run recipe works verbatim, its links
resolve inside the repository, and `make help` lists every target."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from cryptoflow.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_every_setting_is_documented() -> None:
    missing = [name.upper() for name in Settings.model_fields if f"`{name.upper()}`" not in README]
    assert missing == [], f"README lacks these settings: {missing}"


def test_the_two_commands_come_first() -> None:
    head = README[: README.index("## ")] if "## " in README else README
    assert "make demo" in head and "make test" in head


def _recipe() -> list[str]:
    """The command lines of the sh block under "## Running the dataflows"."""
    section = README[README.index("## Running the dataflows"):]
    block = section[section.index("```sh\n") + 6: section.index("\n```", section.index("```sh\n"))]
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_the_hand_run_recipe_works_verbatim(tmp_path: Path) -> None:
    """Run the recipe as a user would, from a directory laid out like the project (its .venv and bytewax.yaml),
    with a PATH that has no venv on it: each `bytewax.run` line is checked by parsing its arguments (`--help`)
    and importing its module, `cryptoflow run` with `--dry-run`; the rest (activation, export, the recovery
    store) runs as written."""
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    (tmp_path / "bytewax.yaml").symlink_to(ROOT / "bytewax.yaml")
    lines = _recipe()
    assert lines[0] == ". .venv/bin/activate", "the recipe must start by activating the project's venv"
    script = ["set -euo pipefail"]
    for line in lines:
        if line.startswith("python -m bytewax.run "):
            module = line.split()[3]
            script.append(f"{line} --help > /dev/null && python -c 'import {module}'")
        elif line.startswith("cryptoflow run "):
            script.append(f"{line} --dry-run")
        else:
            script.append(line)
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8"}
    proc = subprocess.run(["bash", "-c", "\n".join(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=240, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert any(tmp_path.glob("recovery/orderbook_analysis/part-*.sqlite3"))
    assert "-m bytewax.run dataflows.orderbook_analysis" in proc.stdout


def test_docs_link_only_to_files_of_the_repository() -> None:
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for doc in docs:
        text = doc.read_text()
        assert "../shared" not in text, f"{doc.name} points outside the repository"
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
            if "://" not in target:
                assert (doc.parent / target).exists(), f"{doc.name} links to missing {target}"
    assert "docs/CONTRACTS.md" in README


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_help_lists_every_target() -> None:
    makefile = (ROOT / "Makefile").read_text()
    phony = re.search(r"^\.PHONY: (.+)$", makefile, re.M)
    assert phony is not None
    out = subprocess.run(["make", "-s", "--no-print-directory"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, check=True, env={**os.environ, "MAKEFLAGS": ""}).stdout
    listed = {line.split()[0] for line in out.splitlines()[1:]}
    assert listed == set(phony.group(1).split())
    assert all(len(line) <= 120 for line in out.splitlines())
