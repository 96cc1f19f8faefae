"""The layout's rules, checked on the source (README "Development"; issue 14).

Connectors take small frozen configs, never the whole :class:`cryptoflow.settings.Settings`: the mapping from
settings to those configs lives in :mod:`cryptoflow.connector_configs`, outside ``connectors/``. Helpers of
``cryptoflow.settings`` that are not ``Settings`` (``mask_url``) may still be imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS_MODULE = "cryptoflow.settings"


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
