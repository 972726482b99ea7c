"""TLS for a node's traffic: the server's and the peer client's `ssl.SSLContext`, and the
check that only cluster nodes reach the peer routes (docs/tls.md).

Theory of operation

- A node started with `--tls-cert/--tls-key/--tls-ca` serves HTTPS only (TLS 1.2 or
  later). The server asks every client for a certificate but does not insist
  (`CERT_OPTIONAL`): users reach the public API with a CA-verified connection and, when
  they have one, a client certificate. A certificate that *is* presented must chain to the
  CA, or the handshake fails (for every route).
- Peer routes (`PEER_PREFIXES`: the internal replica, gossip and anti-entropy API under
  /internal/, Raft's /raft/ endpoints, and lock requests a follower forwards to the leader,
  which carry `FORWARDED_HEADER`) are refused by `peer_guard` unless the connection
  presented a CA-signed certificate whose subject's organizational unit is `NODE_OU`: the
  certificates `kv certs node` makes. No certificate: 401 `unauthenticated`; a CA-signed
  certificate of another kind (a `kv certs client` one): 403 `forbidden`. The answer comes
  before the body is read, so a refused request changes nothing.
- Outgoing peer calls (kvstore/peers.py, gossip, membership changes, anti-entropy, Raft,
  lock forwarding and sequencer checks) use `https://` and the node's client context: the
  peer's certificate must chain to the CA and name the peer's host (IP or DNS SAN), and the
  node presents its own certificate (server + client EKU), which the peer's guard checks.
- What is not verified: that a node certificate's host is the host of the node that
  presents it as a client (any node certificate of the CA may call any peer route), and
  revocation (no CRL or OCSP: rotate the CA to drop a certificate, docs/tls.md).

Clients (kvstore/client.py, lockservice/members.py) build their context with
`client_context(ca, cert, key)`: the CA to verify nodes (None: the system's trust store)
and an optional client certificate.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MIN_VERSION = ssl.TLSVersion.TLSv1_2
NODE_OU = "ringlock node"  # the organizational unit of node certificates (kv certs node)
CLIENT_OU = "ringlock client"  # of client certificates (kv certs client)
PEER_PREFIXES = ("/internal/", "/raft/")
FORWARDED_HEADER = "X-Ringlock-Forwarded"  # lockservice/http_api.py's FORWARDED


class TLSError(ValueError):
    """A certificate, key or CA file is missing, unreadable or unusable; says which."""


def _readable(what: str, path: str | Path) -> str:
    p = Path(path)
    if not p.is_file():
        raise TLSError(f"{what} file {p} does not exist or is not a file")
    try:
        with open(p, "rb") as f:
            head = f.read(64 << 10)
    except OSError as exc:
        raise TLSError(f"{what} file {p} cannot be read: {exc.strerror}") from None
    if b"-----BEGIN " not in head:
        raise TLSError(f"{what} file {p} is not PEM (no -----BEGIN line)")
    return str(p)


def _load_chain(ctx: ssl.SSLContext, cert: str | Path, key: str | Path) -> None:
    cert_s, key_s = _readable("certificate", cert), _readable("key", key)
    try:
        ctx.load_cert_chain(cert_s, key_s)
    except ssl.SSLError as exc:
        raise TLSError(f"certificate {cert} and key {key} cannot be used together: "
                       f"{exc.reason or exc}") from None


def _load_ca(ctx: ssl.SSLContext, ca: str | Path) -> None:
    try:
        ctx.load_verify_locations(cafile=_readable("CA", ca))
    except ssl.SSLError as exc:
        raise TLSError(f"CA file {ca} holds no usable certificate: {exc.reason or exc}") from None


def server_context(cert: str | Path, key: str | Path, ca: str | Path) -> ssl.SSLContext:
    """The node's server side: TLS 1.2+, its chain, client certificates asked for and
    verified against `ca` when presented (peer_guard insists on peer routes)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = MIN_VERSION
    _load_chain(ctx, cert, key)
    _load_ca(ctx, ca)
    ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def client_context(ca: str | Path | None = None, cert: str | Path | None = None,
                   key: str | Path | None = None) -> ssl.SSLContext:
    """A client's context: nodes verified against `ca` (None: the system's CAs) with their
    host name checked; `cert` and `key` (both or neither) presented when the node asks."""
    if (cert is None) != (key is None):
        raise TLSError("a client certificate needs its key, and a key its certificate")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED, check_hostname
    ctx.minimum_version = MIN_VERSION
    if ca is None:
        ctx.load_default_certs()
    else:
        _load_ca(ctx, ca)
    if cert is not None and key is not None:
        _load_chain(ctx, cert, key)
    return ctx


@dataclass(frozen=True)
class NodeTLS:
    """A node's two contexts: `server` for its listener, `client` for its peer calls."""

    server: ssl.SSLContext
    client: ssl.SSLContext

    @classmethod
    def load(cls, cert: str | Path, key: str | Path, ca: str | Path) -> NodeTLS:
        """Both contexts from the node's files; TLSError naming the file that is wrong."""
        return cls(server_context(cert, key, ca), client_context(ca, cert, key))


def scheme(context: ssl.SSLContext | None) -> str:
    """The URL scheme of calls made with `context` (None: plain HTTP)."""
    return "http" if context is None else "https"


def is_peer_request(path: str, headers: Any) -> bool:
    """True for the routes only cluster nodes may call (see the module docstring)."""
    return path.startswith(PEER_PREFIXES) or FORWARDED_HEADER in headers


def peer_refusal(peercert: dict | None) -> tuple[int, str, str] | None:
    """None when `peercert` (ssl's getpeercert() of a verified connection) is a node
    certificate; else (status, error code, message) for the refusal."""
    if not peercert:
        return (401, "unauthenticated",
                "peer routes need a node certificate signed by the cluster's CA "
                "(TLS is on; this connection presented none)")
    units = {value for rdn in peercert.get("subject", ()) for name, value in rdn
             if name == "organizationalUnitName"}
    if NODE_OU not in units:
        return (403, "forbidden",
                f"peer routes need a node certificate (OU {NODE_OU!r}); this connection "
                f"presented another kind")
    return None


async def peer_guard(request: Any, handler: Any) -> Any:
    """aiohttp middleware (installed only when TLS is on): refuses peer routes to
    connections without a node certificate, before the body is read."""
    if is_peer_request(request.path, request.headers):
        transport = request.transport
        peercert = transport.get_extra_info("peercert") if transport is not None else None
        refusal = peer_refusal(peercert)
        if refusal is not None:
            from aiohttp import web

            status, code, message = refusal
            return web.json_response({"error": code, "message": message}, status=status)
    return await handler(request)


peer_guard.__middleware_version__ = 1  # type: ignore[attr-defined]  # what @web.middleware sets


def client_setup(nodes: Any, ca: str | Path | None = None, cert: str | Path | None = None,
                 key: str | Path | None = None) -> tuple[str, ssl.SSLContext | None]:
    """A client's (scheme, context) for `nodes` (a list or comma-separated string of
    `host:port`, `http://host:port` or `https://host:port`): HTTPS with a context when TLS
    files are given or the nodes are https:// URLs (then verified against the system's CAs
    unless `ca` is given), else plain HTTP. TLSError for a mix of schemes or a bad file."""
    if isinstance(nodes, str):
        nodes = nodes.split(",")
    given = {n.strip().split("://", 1)[0].lower() for n in nodes or () if "://" in n}
    files = ca is not None or cert is not None or key is not None
    if len(given) > 1 or (files and given == {"http"}):
        raise TLSError("the node list mixes http:// and https:// (or names http:// nodes "
                       "with TLS options)")
    if not files and given != {"https"}:
        return "http", None
    return "https", client_context(ca, cert, key)


ENV_CACERT, ENV_CERT, ENV_KEY = "RINGLOCK_CACERT", "RINGLOCK_CERT", "RINGLOCK_KEY"
# each takes a value (kv finds its command word after them)
CLIENT_FLAGS = ("--cacert", "--cert", "--key", "--token")


def add_client_arguments(parser: Any) -> None:
    """`kv`'s global `--cacert/--cert/--key` (defaults from RINGLOCK_CACERT, ...), kept as
    args.tls_ca, args.tls_cert, args.tls_key (`kv get KEY` has its own args.key)."""
    import os

    env = os.environ.get
    parser.add_argument("--cacert", dest="tls_ca", metavar="FILE", default=env(ENV_CACERT),
                        help=f"CA of the nodes' certificates: talk HTTPS (${ENV_CACERT})")
    parser.add_argument("--cert", dest="tls_cert", metavar="FILE", default=env(ENV_CERT),
                        help=f"client certificate to present (${ENV_CERT})")
    parser.add_argument("--key", dest="tls_key", metavar="FILE", default=env(ENV_KEY),
                        help=f"key of --cert (${ENV_KEY})")
    # the bearer token of a node with --auth-file (docs/auth.md; the auth engineer's line)
    parser.add_argument("--token", metavar="TOKEN", default=env("RINGLOCK_TOKEN"),
                        help="token for nodes started with --auth-file ($RINGLOCK_TOKEN)")


def client_options(args: Any) -> dict[str, Any]:
    """The client keyword arguments (tls_ca, tls_cert, tls_key, token) of parsed `kv`
    options."""
    return {name: getattr(args, name, None)
            for name in ("tls_ca", "tls_cert", "tls_key", "token")}
