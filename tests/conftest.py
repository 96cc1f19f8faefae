"""Shared fixtures: real servers on free loopback ports (see tests/fixtures/)."""

pytest_plugins = [
    "tests.fixtures.redis",
    "tests.fixtures.influx",
    "tests.fixtures.smtp",
    "tests.fixtures.simulator",
]
