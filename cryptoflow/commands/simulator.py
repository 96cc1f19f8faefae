"""``cryptoflow simulator ...``: run the exchange simulator; every argument goes to ``python -m simulator``."""

from __future__ import annotations

import argparse

from cryptoflow.settings import Settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("simulator", help="run the local exchange simulator (see `cryptoflow simulator -h`)",
                            add_help=False, prefix_chars="+")  # every "-" argument is the simulator's
    parser.add_argument("args", nargs=argparse.REMAINDER, help="arguments of python -m simulator")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from simulator.app import main  # the simulator is only imported when asked for

    return main(list(args.args))
