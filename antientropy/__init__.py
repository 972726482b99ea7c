"""Merkle-tree anti-entropy between replicas."""
