"""cryptoflow.heap: once started, the service and each dataflow freeze their start-up heap out of the cyclic
collector's walks and space out its young collections."""

from __future__ import annotations

import os
import subprocess
import sys

SERVICE = """
import gc
from cryptoflow.settings import Settings
from service.app import create_app
from cryptoflow import heap
create_app(Settings())
before = len(gc.get_objects())
heap.settle()
print(before, len(gc.get_objects()), gc.get_freeze_count(), gc.get_threshold()[0])
"""

# What `python -m bytewax.run dataflows.orderbook_collector` does first: it asks the module for `flow`.
DATAFLOW = """
import gc
import dataflows.orderbook_collector as module
before = len(gc.get_objects())
threshold = gc.get_threshold()[0]
module.flow
print(before, len(gc.get_objects()), gc.get_freeze_count(), threshold, gc.get_threshold()[0])
"""


def _run(script: str) -> list[int]:
    env = {**os.environ, "METRICS_PORT": "0"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120,
                         env=env)
    return [int(x) for x in out.stdout.split()]


def test_settle_freezes_the_start_up_heap_and_spaces_out_young_collections() -> None:
    before, walked, frozen, gen0 = _run(SERVICE)
    assert before > 50_000, before  # the app's start-up heap: what each full collection walked before
    assert frozen >= before // 2 and walked < before // 20, (before, walked, frozen)
    assert gen0 == 50_000


def test_a_dataflow_settles_its_heap_once_its_flow_is_built() -> None:
    before, walked, frozen, gen0_before, gen0 = _run(DATAFLOW)
    assert gen0_before == 700 and gen0 == 50_000, (gen0_before, gen0)  # CPython's default, then ours
    assert frozen >= before // 2 and walked < before // 20, (before, walked, frozen)
