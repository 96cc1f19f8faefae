"""Hypothesis strategies for parser fuzzing: what a venue's socket could send instead of a good frame."""

from __future__ import annotations

import json
from collections.abc import Sequence

from hypothesis import strategies as st


def json_values(keys: Sequence[str], *, max_leaves: int, max_keys: int) -> st.SearchStrategy[object]:
    """Nested JSON built from the venues' own keys, so decoders get past their first checks."""
    scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=10)
    return st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(
        st.sampled_from(list(keys)), c, max_size=max_keys), max_leaves=max_leaves)


def _mutate(frame: str, cut: int, junk: str) -> str:
    return frame[:cut] + junk + frame[cut + len(junk):]


def junk_frames(frames: Sequence[str], keys: Sequence[str], *, cut_max: int, max_leaves: int = 20,
                max_keys: int = 6) -> st.SearchStrategy[bytes | str]:
    """Random bytes and text, JSON of ``keys``, and real ``frames`` spliced, with digits or quotes broken."""
    real = st.sampled_from(list(frames))
    return st.one_of(
        st.binary(max_size=200),
        st.text(max_size=200),
        json_values(keys, max_leaves=max_leaves, max_keys=max_keys).map(json.dumps),
        st.builds(_mutate, real, st.integers(0, cut_max), st.text(max_size=8)),
        real.map(lambda f: f.replace('"', "'", 3)),
        real.map(lambda f: f.replace('"', "", 2)),
        real.map(lambda f: f.replace("1", "x")),
    )
