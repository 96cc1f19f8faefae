"""Shared fixtures: real servers on free loopback ports (see tests/fixtures/)."""

import os

from hypothesis import HealthCheck, settings

pytest_plugins = [
    "tests.fixtures.redis",
    "tests.fixtures.influx",
    "tests.fixtures.smtp",
    "tests.fixtures.simulator",
]

# Shared 2-core machines are noisy: no per-example deadline. CI runs a fixed, reproducible set of examples.
settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", parent=settings.get_profile("default"), derandomize=True, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")
