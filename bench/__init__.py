"""Benchmarks that measure ringlock beside its anchors in the same run (see bench/README.md)."""
