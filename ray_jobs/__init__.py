"""Wiring: runs stages over planned shards (in-process now, on Ray Data next), the job commands
and the ``pairforge`` command line. The only package that may import ray at module level."""
