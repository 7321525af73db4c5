"""Benchmarks: the spec's single-process benchmark and raw-client baselines (``ctx bench``)."""
