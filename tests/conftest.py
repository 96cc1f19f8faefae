"""Shared fixtures: real servers on free loopback ports (see tests/fixtures/)."""

import os
import signal

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
