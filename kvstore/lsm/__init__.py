"""The log-structured merge storage engine that each node keeps its replicas in."""
