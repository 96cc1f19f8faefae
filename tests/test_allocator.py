"""The dataflows' allocator (cryptoflow/allocator.py): jemalloc preloaded where installed, opt-out honoured."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cryptoflow.allocator import jemalloc, with_allocator


def test_opt_out_and_an_existing_preload_are_honoured() -> None:
    lib = jemalloc()
    if lib is None:
        assert with_allocator({"PATH": "/bin"}) == {"PATH": "/bin"}
        return
    assert with_allocator({"CRYPTOFLOW_ALLOCATOR": "glibc"}).get("LD_PRELOAD") is None
    env = with_allocator({"LD_PRELOAD": "/x/libother.so"})
    assert env["LD_PRELOAD"].split() == [str(lib), "/x/libother.so"]
    assert with_allocator(env)["LD_PRELOAD"] == env["LD_PRELOAD"]  # not preloaded twice


def test_a_process_started_with_it_runs_on_jemalloc() -> None:
    lib = jemalloc()
    if lib is None:
        why = "libjemalloc2 is not installed: `make test` installs it from Debian when run as root"
        if _ci():
            pytest.fail(why)
        pytest.skip(why)
    code = "import sys; print(open('/proc/self/maps').read())"
    maps = subprocess.run([sys.executable, "-c", code], env=with_allocator({}), capture_output=True, text=True,
                          check=True).stdout
    assert str(lib) in maps
    plain = subprocess.run([sys.executable, "-c", code], env=with_allocator({"CRYPTOFLOW_ALLOCATOR": "glibc"}),
                           capture_output=True, text=True, check=True).stdout
    assert "jemalloc" not in plain


def _ci() -> bool:
    import os

    return bool(os.environ.get("CI")) or os.geteuid() == 0
