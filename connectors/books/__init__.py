"""The collector's book path for every venue: one processor, small per-venue adapters (issue 14)."""
