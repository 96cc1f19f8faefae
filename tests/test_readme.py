"""The README documents every setting and both entry commands."""

from __future__ import annotations

from pathlib import Path

from cryptoflow.settings import Settings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_every_setting_is_documented() -> None:
    missing = [name.upper() for name in Settings.model_fields if f"`{name.upper()}`" not in README]
    assert missing == [], f"README lacks these settings: {missing}"


def test_the_two_commands_come_first() -> None:
    head = README[: README.index("## ")] if "## " in README else README
    assert "make demo" in head and "make test" in head
