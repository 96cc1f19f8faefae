"""service.heap: once started, the service's start-up heap is frozen out of the collector's walks."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import gc
from cryptoflow.settings import Settings
from service.app import create_app
from service import heap
create_app(Settings())
before = len(gc.get_objects())
heap.settle()
print(before, len(gc.get_objects()), gc.get_freeze_count(), gc.get_threshold()[0])
"""


def test_settle_freezes_the_start_up_heap_and_spaces_out_young_collections() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True, timeout=120)
    before, walked, frozen, gen0 = map(int, out.stdout.split())
    assert before > 50_000, before  # the app's start-up heap: what each full collection walked before
    assert frozen >= before // 2 and walked < before // 20, (before, walked, frozen)
    assert gen0 == 50_000
