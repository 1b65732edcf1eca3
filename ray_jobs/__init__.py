"""Wiring: runs stages over planned shards (in-process, or on Ray actors), the jobs, the demo, status,
plan, benchmarks and the ``pairforge`` command line. The only package that may import ray at module level."""
