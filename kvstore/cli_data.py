"""`kv get`, `kv put`, `kv delete` and `kv ring`: the store from the command line.

Keys and values are bytes. A KEY or VALUE argument is taken as the raw bytes of the
command line (any byte but NUL, since POSIX arguments cannot hold it); with `--hex` both
are hexadecimal, so every byte string can be named. `put` reads the value from stdin when
VALUE is `-` or missing. `get` writes the value's exact bytes to stdout (a newline is added
only on a terminal); with several siblings it writes each followed by a newline, says so
on stderr and exits 3; a missing or deleted key exits 1. `--json` prints one JSON object
(values in base64 and, where they are UTF-8, as text; the context to write back with).

Overwrite by default: without `--context`, `put` and `delete` first read the key and write
with the context of that read, so they replace every value stored now (a sibling appears
only if another write lands between the read and the write). `--blind` writes without a
context, Dynamo's blind write: concurrent with whatever is stored, so it adds a sibling.

Which node: `--node HOST:PORT` (repeatable, or comma-separated; failover in that order),
else $KV_NODES, else the nodes of the local cluster in ./ringlock-cluster when it has run,
else 127.0.0.1:7001.
"""

from __future__ import annotations

import argparse
import binascii
import json
import os
import sys
from pathlib import Path

from kvstore import tls
from kvstore.client import Client, GetResponse
from kvstore.errors import InvalidRequest
from kvstore.http_codec import b64
from kvstore.local_cluster import DEFAULT_DIR

EXIT_NOT_FOUND = 1
EXIT_SIBLINGS = 3


def _local_cluster() -> tuple[list[str], int]:
    """The node names and lock-member count of ./ringlock-cluster, if it has run."""
    try:
        doc = json.loads((Path(DEFAULT_DIR) / "cluster.json").read_text())
        names, locks = doc["nodes"], int(doc.get("lock_members", 0))
        if isinstance(names, list) and names and all(isinstance(n, str) for n in names):
            return names, locks
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    return [], 0


def local_lock_members() -> list[str]:
    names, locks = _local_cluster()
    return names[:locks]


def default_nodes() -> list[str]:
    env = os.environ.get("KV_NODES", "").strip()
    if env:
        return [n.strip() for n in env.split(",") if n.strip()]
    return _local_cluster()[0] or ["127.0.0.1:7001"]


def add_node_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--node", action="append", metavar="HOST:PORT",
                        help="node to ask (repeat for failover; default: $KV_NODES, the "
                             "local cluster in ./ringlock-cluster, else 127.0.0.1:7001)")
    parser.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                        help="request deadline, sent to the node (default: the node's)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def client_for(args: argparse.Namespace) -> Client:
    nodes = [n for arg in args.node for n in arg.split(",") if n.strip()] if args.node \
        else default_nodes()
    wait = 10.0 if args.timeout is None else args.timeout + 1
    return Client(nodes, timeout=wait, **tls.client_options(args))  # --cacert/--cert/--key


def _arg_bytes(text: str, hex_: bool, what: str) -> bytes:
    if hex_:
        try:
            return bytes.fromhex(text)
        except ValueError:
            raise InvalidRequest(f"{what} is not hexadecimal: {text[:60]!r}") from None
    return os.fsencode(text)


def register(commands: argparse._SubParsersAction) -> None:
    get = commands.add_parser("get", help="read a key", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    get.add_argument("key", metavar="KEY")
    get.add_argument("-r", type=int, help="replies to wait for (default: the node's R)")
    get.add_argument("--hex", action="store_true", help="KEY is hex; print the value as hex")
    add_node_options(get)
    get.set_defaults(func=run_get)

    put = commands.add_parser("put", help="write a key", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    put.add_argument("key", metavar="KEY")
    put.add_argument("value", metavar="VALUE", nargs="?", default="-",
                     help="the value (default or '-': read stdin)")
    _write_options(put, "-w")
    put.set_defaults(func=run_put)

    delete = commands.add_parser("delete", help="delete a key (writes a tombstone)",
                                 description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    delete.add_argument("key", metavar="KEY")
    _write_options(delete, "-w")
    delete.set_defaults(func=run_delete)

    ring = commands.add_parser("ring", help="show the ring: members, partitions, health")
    add_node_options(ring)
    ring.set_defaults(func=run_ring)


def _write_options(parser: argparse.ArgumentParser, w: str) -> None:
    parser.add_argument(w, dest="w", type=int, help="acks to wait for (default: the node's W)")
    parser.add_argument("--context", help="the context of the read this write replaces "
                                          "(from `kv get --json`); resolves siblings")
    parser.add_argument("--blind", action="store_true",
                        help="write without reading first (adds a sibling to what is stored)")
    parser.add_argument("--sequencer", help="a lock-service sequencer fencing this write")
    parser.add_argument("--hex", action="store_true", help="KEY and VALUE are hex")
    add_node_options(parser)


def _text(value: bytes) -> str | None:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return None


def run_get(args: argparse.Namespace) -> int:
    key = _arg_bytes(args.key, args.hex, "KEY")
    with client_for(args) as kv:
        got: GetResponse = kv.get(key, r=args.r, timeout=args.timeout)
    if args.json:
        print(json.dumps({"values": [b64(v) for v in got.values],
                          "text": [_text(v) for v in got.values],
                          "context": got.context.decode("ascii"), "deleted": got.deleted}))
        return 0 if got.values else EXIT_NOT_FOUND
    if not got.values:
        what = "was deleted" if got.deleted else "not found"
        print(f"kv get: {args.key}: {what}", file=sys.stderr)
        return EXIT_NOT_FOUND
    out = sys.stdout.buffer
    for value in got.values:
        out.write(binascii.hexlify(value) if args.hex else value)
        if len(got.values) > 1 or args.hex or sys.stdout.isatty():
            out.write(b"\n")
    out.flush()
    if len(got.values) > 1:
        print(f"kv get: {args.key} has {len(got.values)} siblings (concurrent writes), one per"
              " line above; see `kv get --json` and resolve with `kv put --context`",
              file=sys.stderr)
        return EXIT_SIBLINGS
    return 0


def _context(kv: Client, key: bytes, args: argparse.Namespace) -> str | bytes | None:
    """The context to write with: --context, nothing with --blind, else a fresh read's."""
    if args.context is not None or args.blind:
        return args.context
    return kv.get(key, timeout=args.timeout).context or None


def run_put(args: argparse.Namespace) -> int:
    key = _arg_bytes(args.key, args.hex, "KEY")
    if args.value == "-":
        if sys.stdin.isatty():
            print("kv put: reading the value from stdin (end it with Ctrl-D)", file=sys.stderr)
        value = sys.stdin.buffer.read()
        if args.hex:
            value = _arg_bytes(value.decode("ascii", "replace").strip(), True, "VALUE")
    else:
        value = _arg_bytes(args.value, args.hex, "VALUE")
    with client_for(args) as kv:
        context = kv.put(key, value, _context(kv, key, args), w=args.w,
                         sequencer=args.sequencer, timeout=args.timeout)
    print(json.dumps({"context": context.decode("ascii")}) if args.json else "OK")
    return 0


def run_delete(args: argparse.Namespace) -> int:
    key = _arg_bytes(args.key, args.hex, "KEY")
    with client_for(args) as kv:
        context = kv.delete(key, _context(kv, key, args), w=args.w,
                            sequencer=args.sequencer, timeout=args.timeout)
    print(json.dumps({"context": context.decode("ascii")}) if args.json else "OK")
    return 0


def run_ring(args: argparse.Namespace) -> int:
    with client_for(args) as kv:
        ring = kv.ring()
    if args.json:
        print(json.dumps(ring))
        return 0
    members = ring.get("members", [])
    print(f"ring version {ring.get('version')}, {ring.get('ring_size')} partitions, "
          f"{len(members)} members (as seen by {ring.get('node')})")
    for m in members:
        health = "up" if m.get("alive") else "DOWN"
        print(f"  {m.get('name'):<24} {health:<5} {m.get('partitions'):>5} partitions")
    return 0
