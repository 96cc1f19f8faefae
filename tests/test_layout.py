"""The layout's rules, checked on the source (README "Development"; issue 14).

Connectors take small frozen configs, never the whole :class:`cryptoflow.settings.Settings`: the mapping from
settings to those configs lives in :mod:`cryptoflow.connector_configs`, outside ``connectors/``. Helpers of
``cryptoflow.settings`` that are not ``Settings`` (``mask_url``) may still be imported.

Modules stay under ~400 lines, one concept each, and a dataflow module is wiring only (sources -> steps -> sinks):
no module of the code's packages over :data:`MAX_MODULE_LINES`, no dataflow over :data:`MAX_DATAFLOW_LINES`.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS_MODULE = "cryptoflow.settings"
SIZED_PACKAGES = ("operators", "connectors", "dataflows", "cryptoflow", "service", "simulator")
MAX_MODULE_LINES = 400
MAX_DATAFLOW_LINES = 90


def settings_imports(source: str) -> list[int]:
    """The lines of ``source`` that bring ``Settings`` in: ``from cryptoflow.settings import Settings`` (or ``*``),
    or the module itself (``import cryptoflow.settings``, ``from cryptoflow import settings``) when the file
    then reads ``.Settings`` off it."""
    tree = ast.parse(source)
    direct: list[int] = []
    module: list[int] = []
    reads_attribute = False
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0:
            if node.module == SETTINGS_MODULE and any(a.name in ("Settings", "*") for a in node.names):
                direct.append(node.lineno)
            elif node.module == "cryptoflow" and any(a.name in ("settings", "*") for a in node.names):
                module.append(node.lineno)
        elif isinstance(node, ast.Import) and any(a.name == SETTINGS_MODULE for a in node.names):
            module.append(node.lineno)
        elif isinstance(node, ast.Attribute) and node.attr == "Settings":
            reads_attribute = True
    return sorted(direct + (module if reads_attribute else []))


def test_the_check_sees_every_way_of_importing_settings() -> None:
    assert settings_imports("from cryptoflow.settings import Settings\n") == [1]
    assert settings_imports("from cryptoflow.settings import mask_url, Settings as S\n") == [1]
    assert settings_imports("from cryptoflow.settings import *\n") == [1]
    assert settings_imports("if True:\n    from cryptoflow.settings import Settings\n") == [2]  # TYPE_CHECKING too
    assert settings_imports("import cryptoflow.settings\nx: cryptoflow.settings.Settings\n") == [1]
    assert settings_imports("from cryptoflow import settings\nx: settings.Settings\n") == [1]
    assert settings_imports("from cryptoflow.settings import mask_url\n") == []
    assert settings_imports("from cryptoflow.settings_extra import Settings\n") == []
    assert settings_imports("import cryptoflow.settings\nmask = cryptoflow.settings.mask_url\n") == []


def test_no_connector_imports_settings() -> None:
    files = sorted((ROOT / "connectors").rglob("*.py"))
    assert files, f"no Python files under {ROOT / 'connectors'}"
    found = [f"{path.relative_to(ROOT)}:{line}" for path in files
             for line in settings_imports(path.read_text(encoding="utf-8"))]
    assert not found, ("connectors take small frozen configs, not cryptoflow.settings.Settings (build them in "
                       f"cryptoflow/connector_configs.py); Settings imported at: {', '.join(found)}")


def oversized(root: Path) -> list[str]:
    """Each module under :data:`SIZED_PACKAGES` of ``root`` with more lines than its limit (a module directly in
    ``dataflows/``: :data:`MAX_DATAFLOW_LINES`, any other: :data:`MAX_MODULE_LINES`), as ``path (N lines > limit)``."""
    found = []
    for package in SIZED_PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            lines = len(path.read_text(encoding="utf-8").splitlines())
            limit = MAX_DATAFLOW_LINES if path.parent == root / "dataflows" else MAX_MODULE_LINES
            if lines > limit:
                found.append(f"{path.relative_to(root)} ({lines} lines > {limit})")
    return found


def test_the_size_check_names_each_module_over_its_limit(tmp_path: Path) -> None:
    def write(relative: str, lines: int) -> None:
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x = 1\n" * lines, encoding="utf-8")

    write("operators/at_limit.py", 400)
    write("operators/book/deep.py", 401)
    write("service/big.py", 650)
    write("dataflows/at_limit.py", 90)
    write("dataflows/long.py", 91)
    write("dataflows/steps/helper.py", 300)  # a package under dataflows/ is not a dataflow module
    write("tests/test_huge.py", 2000)  # not one of the code's packages
    write("operators/notes.txt", 5000)
    assert oversized(tmp_path) == ["operators/book/deep.py (401 lines > 400)", "dataflows/long.py (91 lines > 90)",
                                   "service/big.py (650 lines > 400)"]


def test_no_module_over_its_size_limit() -> None:
    missing = [p for p in SIZED_PACKAGES if not (ROOT / p).is_dir()]
    assert not missing, f"packages not found under {ROOT}: {missing}"
    found = oversized(ROOT)
    assert not found, ("modules stay under ~400 lines, one concept each, and dataflows are wiring only (helpers, "
                       "parsers and reports go to connectors/ or operators/); over the limit: " + ", ".join(found))


def connector_imports(source: str) -> list[str]:
    """The ``connectors...`` modules ``source`` imports (``from connectors.x import y`` gives ``connectors.x.y``,
    which names the module when ``y`` is one)."""
    names: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("connectors"):
            names += [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names += [a.name for a in node.names if a.name.startswith("connectors")]
    return names


def test_the_import_check_sees_sources() -> None:
    assert connector_imports("from connectors.ws.source import WsShardSource\n") == [
        "connectors.ws.source.WsShardSource"]
    assert connector_imports("import connectors.redis.list_source\n") == ["connectors.redis.list_source"]
    assert connector_imports("from connectors.redis import list_source\n") == ["connectors.redis.list_source"]


def test_no_sink_imports_a_source() -> None:
    """Connectors are grouped by store and venue (connectors/redis/, influx/, email/, market/, books/, <venue>/);
    a sink writes what it is given and never reaches into a source (README "Development")."""
    sinks = sorted(p for p in (ROOT / "connectors").rglob("*.py") if "sink" in p.stem)
    assert len(sinks) >= 5, sinks  # redis/sink, book_sink, analysis_sink, market_sink, email/sink
    found = [f"{path.relative_to(ROOT)}: {name}" for path in sinks
             for name in connector_imports(path.read_text(encoding="utf-8"))
             if any("source" in part for part in name.split(".")[1:])]
    assert not found, found
