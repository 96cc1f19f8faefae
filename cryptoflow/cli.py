"""The ``cryptoflow`` command. Each subcommand is a module in ``cryptoflow/commands/`` exposing
``register(subparsers)``, which adds its parser and sets ``run(args, settings) -> int`` as a default."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import redis

from cryptoflow import commands
from cryptoflow.logs import configure_logging
from cryptoflow.settings import mask_url, settings_or_exit


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cryptoflow", description="Real-time crypto market-data pipeline.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"cryptoflow.commands.{info.name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = settings_or_exit()
    configure_logging(settings.log_level, settings.log_format)
    try:
        return int(args.run(args, settings) or 0)
    except KeyboardInterrupt:
        return 130
    except redis.ConnectionError as err:
        print(f"cryptoflow: cannot reach Redis at {mask_url(str(settings.redis_url))}: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
