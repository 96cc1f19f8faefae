"""``cryptoflow demo``: what `make demo` runs (see cryptoflow/demo.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from cryptoflow.settings import Settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("demo", help="run the whole pipeline locally against the exchange simulator")
    parser.add_argument("--workdir", type=Path, default=Path(".demo"), help="logs and Redis files (default .demo)")
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from cryptoflow import demo

    return demo.run(settings, args.workdir, args.duration)
