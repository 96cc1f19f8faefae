"""Shared fixtures: real servers on free loopback ports (see tests/fixtures/)."""

import os
import signal

import pytest
from hypothesis import HealthCheck, settings

pytest_plugins = [
    "tests.fixtures.redis",
    "tests.fixtures.influx",
    "tests.fixtures.smtp",
    "tests.fixtures.simulator",
    "tests.fixtures.postgres",
    "tests.fixtures.service",
    "tests.fixtures.browser",
]

# Shared 2-core machines are noisy: no per-example deadline. CI runs a fixed, reproducible set of examples.
settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", parent=settings.get_profile("default"), derandomize=True, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")

# A runner that starts the suite as a background job of a non-interactive shell hands it SIGINT ignored, and
# every process a test starts would inherit that (exec keeps an ignored signal): the tests that press Ctrl-C on
# a dataflow, as a user at a terminal does, would then signal a process that cannot hear it. Give the suite the
# terminal's default, so its children start with SIGINT as a foreground command has it.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Files whose tests wait minutes of wall clock (real minutes of klines, a 3-minute outage, browser sweeps) run
# first: pytest-xdist hands files to its processes in collection order, and one of these started last would be
# the suite's tail alone.
LONG_FIRST = ("test_market_data_outage.py", "test_trade_ids.py", "test_web.py", "test_orderbook_properties.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONG_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order
