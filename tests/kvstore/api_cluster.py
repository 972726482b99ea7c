"""Real local clusters for the API, client and CLI tests (kvstore/local_cluster.py).

`running_cluster(folder, nodes)` starts real `kv serve` processes on free consecutive ports
of 127.0.0.1, waits until the ring has formed, and always stops them (SIGTERM, then
SIGKILL) on the way out, so no process outlives the test that started it.
"""

from __future__ import annotations

import http.client
import json
import random
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kvstore.local_cluster import LocalCluster


def free_base_port(count: int) -> int:
    """A port p such that p..p+count-1 are all free on 127.0.0.1 right now."""
    rng = random.Random()
    for _ in range(200):
        # Below Linux's ephemeral range (32768-60999), which bind(0) and outgoing
        # connections draw from: a port found free here is not handed out meanwhile.
        base = rng.randrange(20000, 32700 - count)
        socks = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port range")


@contextmanager
def running_cluster(folder: Path, nodes: int = 3, *, lock_members: int = 0,
                    serve_args: tuple[str, ...] = ()) -> Iterator[LocalCluster]:
    cluster = LocalCluster(folder, nodes=nodes, base_port=free_base_port(nodes),
                           lock_members=lock_members, serve_args=serve_args)
    try:
        cluster.up()
        yield cluster
    finally:
        cluster.down()


def request(node: str, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One raw HTTP exchange (no client library in between): status, headers, body."""
    host, port = node.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return (response.status, {k.lower(): v for k, v in response.getheaders()},
                response.read())
    finally:
        conn.close()


def error_of(answer: tuple[int, dict[str, str], bytes]) -> dict:
    """The JSON error body of an answer; fails the test unless it is one."""
    _status, headers, body = answer
    assert headers.get("content-type", "").startswith("application/json"), (headers, body)
    doc = json.loads(body)
    assert isinstance(doc.get("error"), str) and doc["error"], doc
    assert isinstance(doc.get("message"), str) and len(doc["message"]) > 10, doc
    return doc
