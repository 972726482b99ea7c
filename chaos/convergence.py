"""Convergence of the Dynamo store: after the heal and anti-entropy, every replica of every key
holds the same siblings (shared/DESIGN.md, "Promises").

The harness asks each key's N primary replicas (the ring's preference list, from `/ring`)
for their own state through the internal API (`POST /internal/v1/get`), and compares the
canonical encodings (`vclock.encode` sorts clock entries and siblings, so equal states are
equal bytes). Before each comparison it asks every node to run an anti-entropy exchange now,
without its rate limit (`POST /admin/v1/aae/exchange`), so the check waits for repair, not
for the next scheduled round.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from kvstore import vclock, wire
from kvstore.ring import partition_of

N = 3


def preference_list(ring: dict[str, Any], key: bytes, n: int = N) -> list[str]:
    """The first `n` distinct owners clockwise from the key's partition (Ring.walk)."""
    owners, size = ring["owners"], ring["ring_size"]
    start = partition_of(key, size)
    seen: dict[str, None] = {}
    for step in range(size):
        seen.setdefault(owners[(start + step) % size])
        if len(seen) == n:
            break
    return list(seen)


async def replica_states(session: aiohttp.ClientSession, ring: dict[str, Any],
                         keys: list[bytes]) -> dict[bytes, dict[str, bytes | str]]:
    """key -> {replica: its encoded state, or the error text if it did not answer}."""
    out: dict[bytes, dict[str, bytes | str]] = {}
    for key in keys:
        out[key] = {}
        for node in preference_list(ring, key):
            try:
                async with session.post(f"http://{node}/internal/v1/get",
                                        data=wire.encode_request(wire.GetRequest(key)),
                                        headers={"Content-Type": wire.CONTENT_TYPE}) as r:
                    body = await r.read()
                    if r.status != 200:
                        out[key][node] = f"HTTP {r.status}"
                        continue
                out[key][node] = vclock.encode(wire.decode_state_reply(body))
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                out[key][node] = f"{type(exc).__name__}: {exc}"
    return out


def diverged(states: dict[bytes, dict[str, bytes | str]]) -> list[str]:
    """Keys whose replicas do not all hold the same state (or did not all answer)."""
    return sorted(k.decode(errors="replace") for k, per_node in states.items()
                  if len(set(per_node.values())) != 1
                  or any(isinstance(v, str) for v in per_node.values()))


async def converge(nodes: list[str], keys: list[bytes], *, attempts: int = 12,
                   pause_s: float = 2.0) -> list[str]:
    """Trigger exchanges and compare until every key's replicas agree; the keys that still
    differ after `attempts` rounds (empty: converged)."""
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        left = [k.decode() for k in keys]
        for _ in range(attempts):
            ring = await _ring(session, nodes)
            left = diverged(await replica_states(session, ring, keys))
            if not left:
                return []
            await asyncio.gather(*(_exchange(session, n) for n in nodes))
            await asyncio.sleep(pause_s)
        return left


async def _ring(session: aiohttp.ClientSession, nodes: list[str]) -> dict[str, Any]:
    for node in nodes:
        try:
            async with session.get(f"http://{node}/ring") as r:
                return json.loads(await r.read())
        except (aiohttp.ClientError, TimeoutError, ValueError):
            continue
    raise RuntimeError("no node answered /ring")


async def _exchange(session: aiohttp.ClientSession, node: str) -> None:
    try:
        async with session.post(f"http://{node}/admin/v1/aae/exchange",
                                json={"limited": False}) as r:
            await r.read()
    except (aiohttp.ClientError, TimeoutError):
        pass  # a node that cannot exchange now is compared anyway
