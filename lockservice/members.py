"""HTTP calls to a lock-service group with failover across its members (client side).

Every member answers every request of the API (a follower forwards to the leader), so the
client sticks to one member while it answers and moves to the next one when it cannot:
a connection error, an attempt that timed out, or 503 (`no_leader`, or an outcome the
member could not learn). After a full round of failures it pauses briefly before the next
round, until the caller's deadline. Any other answer (2xx, 4xx, other 5xx) is returned.

Retrying after a timeout or a 503 may apply a request twice. The lock API is safe under
that (a retried Acquire returns the same grant; a retried Release finds no lock to free);
a retried conditional write may report a version mismatch for the write it made itself,
which the caller sees as a lost race.

TLS: members named `https://host:port`, or a `tls` context (`client_context(ca, cert,
key)`: the CA that signed the members' certificates and an optional client certificate),
make every call HTTPS with the member's certificate and host name verified. (This mirrors
kvstore/tls.py's client_context: lockservice does not import kvstore.)
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import yarl

from lockservice.client_errors import MembersUnavailable

log = logging.getLogger(__name__)

ROUND_PAUSE_S = 0.05  # between rounds of failures: a new leader needs an election timeout
MAX_ROUND_PAUSE_S = 0.5


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: dict[str, Any]
    member: str


SCHEMES = ("http://", "https://")


def parse_members(text: str) -> list[str]:
    """`"127.0.0.1:7001,127.0.0.1:7002"` (ids allowed: `1=h:p`; `https://h:p` too)
    -> ["h:p", ...] (a scheme given is kept: Members reads it)."""
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        address = part.split("=", 1)[1] if "=" in part else part
        bare = next((address[len(s):] for s in SCHEMES if address.startswith(s)), address)
        host, sep, port = bare.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"not a member address host:port: {part!r}")
        out.append(address)
    if not out:
        raise ValueError("no lock-service members given")
    return out


def client_context(ca: str | None = None, cert: str | None = None,
                   key: str | None = None) -> ssl.SSLContext:
    """TLS 1.2+ client context: members verified against `ca` (None: the system's CAs),
    `cert` + `key` presented when asked. ValueError (naming the file) when unusable."""
    if (cert is None) != (key is None):
        raise ValueError("a client certificate needs its key, and a key its certificate")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        if ca is None:
            ctx.load_default_certs()
        else:
            ctx.load_verify_locations(cafile=str(ca))
        if cert is not None and key is not None:
            ctx.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"TLS files (ca {ca}, cert {cert}, key {key}) cannot be used: "
                         f"{exc}") from None
    return ctx


def split_scheme(addresses: Sequence[str], tls: ssl.SSLContext | None) -> tuple[str, list[str]]:
    """("http" or "https", the addresses without a scheme); ValueError for a mix."""
    given = {a.split("://", 1)[0] for a in addresses if "://" in a}
    if len(given) > 1 or (tls is not None and given == {"http"}):
        raise ValueError("lock-service members mix http:// and https:// (or TLS options)")
    scheme = "https" if tls is not None or given == {"https"} else "http"
    return scheme, [a.split("://", 1)[1] if "://" in a else a for a in addresses]


class Members:
    """The members of one lock-service group and a pooled HTTP session to them."""

    def __init__(self, addresses: Sequence[str], *, token: str | None = None,
                 connect_timeout_s: float = 1.0,
                 tls: ssl.SSLContext | None = None) -> None:
        self.scheme, bare = split_scheme(addresses, tls)
        self.tls = tls
        self.addresses = list(dict.fromkeys(bare))
        if not self.addresses:
            raise ValueError("no lock-service members given")
        self.current = 0  # index of the member that answered last
        self.connect_timeout_s = connect_timeout_s
        # the bearer token sent with every request (kvstore/auth_http.py); None: none
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout_s)
            connector = aiohttp.TCPConnector(ssl=self.tls if self.tls is not None else True)
            self._http = aiohttp.ClientSession(headers=self.headers, timeout=timeout,
                                               connector=connector)
        return self._http

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None, *,
                   timeout_s: float, attempt_timeout_s: float | None = None,
                   params: dict[str, str] | None = None, long_poll: bool = False) -> Reply:
        """One request, retried on the next member until an answer or `timeout_s` passes.

        `attempt_timeout_s` bounds one try at one member; raises MembersUnavailable when
        the deadline passes without an answer. With `long_poll`, an attempt that times out
        was held by the member, not failed by it: the error is raised at once and the next
        call goes to the same member.
        """
        deadline = time.monotonic() + timeout_s
        pause = ROUND_PAUSE_S
        failures = 0
        last = "no attempt"
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise MembersUnavailable(
                    f"{method} {path}: no lock-service member answered in {timeout_s:.1f} s"
                    f" (last: {last})"
                )
            member = self.addresses[self.current]
            limit = left if attempt_timeout_s is None else min(left, attempt_timeout_s)
            try:
                reply = await self._once(member, method, path, body, params, limit)
            except TimeoutError:
                if long_poll:
                    raise MembersUnavailable(f"{method} {path}: held by {member} past "
                                             f"{limit:.2f} s") from None
                last = f"{member}: TimeoutError"
            except (aiohttp.ClientError, OSError, ValueError) as exc:
                last = f"{member}: {type(exc).__name__} {exc}".strip()
            else:
                if reply.status != 503:
                    return reply
                last = f"{member}: 503 {reply.body.get('error', '')}"
            log.debug("%s %s failed at %s; trying the next member", method, path, last)
            self.current = (self.current + 1) % len(self.addresses)
            failures += 1
            if failures % len(self.addresses) == 0:
                await asyncio.sleep(min(pause, max(0.0, deadline - time.monotonic())))
                pause = min(pause * 2, MAX_ROUND_PAUSE_S)

    async def race(self, method: str, path: str, body: dict[str, Any] | None, *,
                   timeout_s: float, attempt_timeout_s: float | None = None) -> Reply:
        """The same request to every member at once; the first answer that is not 503 wins.

        For a session in jeopardy: a stopped member cannot hold up the others. Each member
        is retried after a failure or after `attempt_timeout_s` (a connection that went
        silent is replaced by a new one). The losers are cancelled.
        """
        deadline = time.monotonic() + timeout_s

        async def one(member: str) -> Reply:
            pause = ROUND_PAUSE_S
            while (left := deadline - time.monotonic()) > 0:
                limit = left if attempt_timeout_s is None else min(left, attempt_timeout_s)
                try:
                    reply = await self._once(member, method, path, body, None, limit)
                except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
                    pass
                else:
                    if reply.status != 503:
                        return reply
                await asyncio.sleep(min(pause, max(0.0, deadline - time.monotonic())))
                pause = min(pause * 2, MAX_ROUND_PAUSE_S)
            raise MembersUnavailable(f"{member} did not answer {method} {path}")

        tasks = [asyncio.create_task(one(m)) for m in self.addresses]
        try:
            for next_done in asyncio.as_completed(tasks):
                try:
                    reply = await next_done
                except MembersUnavailable:
                    continue
                self.current = self.addresses.index(reply.member)
                return reply
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        raise MembersUnavailable(
            f"{method} {path}: no lock-service member answered in {timeout_s:.1f} s")

    async def _once(self, member: str, method: str, path: str, body: dict[str, Any] | None,
                    params: dict[str, str] | None, limit: float) -> Reply:
        url = yarl.URL(f"{self.scheme}://{member}{path}", encoded=True)  # names come quoted
        async with asyncio.timeout(limit):
            async with self._session().request(method, url, json=body, params=params) as resp:
                data = await resp.read()
        parsed: Any = {}
        if data:
            try:
                parsed = json.loads(data)
            except ValueError:
                if resp.status < 500:
                    raise ValueError(f"{resp.status} answer is not JSON") from None
                parsed = {"error": "server_error", "message": data[:200].decode(errors="replace")}
        if not isinstance(parsed, dict):
            raise ValueError(f"{resp.status} answer is not a JSON object")
        return Reply(resp.status, parsed, member)
