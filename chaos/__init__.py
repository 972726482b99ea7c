"""Jepsen-style chaos harness: real processes, nemeses, workloads and checkers."""
