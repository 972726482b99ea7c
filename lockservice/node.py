"""A standalone lock-service member: `python -m lockservice.node`.

    python -m lockservice.node --id 1 --data DIR \\
        --peers 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003 \\
        [--tick-ms 40] [--election-ticks 10] [--no-fsync] [--log-level WARNING] \
        [--limit NAME=VALUE ...]

`--limit` sets one field of lockservice.limits.Limits (e.g. `max_sessions_per_client=100`);
every member of a group must be given the same limits.

Every member of `--peers` is a voter. The process serves the /lock/v1/ API
(lockservice/http_api.py) and the Raft endpoints on the address of its own id, keeps Raft
state in DIR, prints `ringlock lock member ID ready` on stderr once it serves, and stops
cleanly on SIGTERM or SIGINT (exit 0). `kv serve --lock-id` mounts the same routes.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from dataclasses import fields

from aiohttp import web

from lockservice.limits import Limits
from lockservice.server import LockServer

log = logging.getLogger(__name__)

# Connections the kernel queues before the server accepts them (capped by
# net.core.somaxconn). After a leader change every client and every relaying member connects
# to the new leader at once; with aiohttp's default of 128 the kernel dropped the SYNs beyond
# it, and TCP's SYN retransmission (1, 2, 4, 8 s) held those KeepAlives past their lease:
# hundreds of 1,000 sessions expired across a fail-over (bench/lock.py, keepalive --fault).
LISTEN_BACKLOG = 4096


def parse_peers(text: str) -> dict[int, str]:
    peers: dict[int, str] = {}
    for part in text.split(","):
        node, _, addr = part.partition("=")
        host, _, port = addr.strip().rpartition(":")
        if not node.strip().isdigit() or int(node) <= 0 or not host or not port.isdigit():
            raise argparse.ArgumentTypeError(f"bad peer {part!r}: want ID=HOST:PORT")
        peers[int(node)] = addr.strip()
    return peers


def parse_limit(text: str) -> tuple[str, int]:
    name, sep, value = text.partition("=")
    known = {f.name for f in fields(Limits)}
    if not sep or name not in known or not value.isdigit():
        raise argparse.ArgumentTypeError(
            f"bad limit {text!r}: want NAME=INTEGER, NAME one of {', '.join(sorted(known))}")
    return name, int(value)


async def serve(args: argparse.Namespace) -> None:
    server = LockServer.open(node_id=args.id, addresses=args.peers, data_dir=args.data,
                             tick_s=args.tick_ms / 1000, election_ticks=args.election_ticks,
                             sync=not args.no_fsync, limits=args.limits)
    app = web.Application()
    app.add_routes(server.routes())
    # A long poll whose client went away is cancelled, so it extends no lease (and a
    # follower's forwarded poll closes its upstream request to the leader).
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    host, _, port = args.peers[args.id].rpartition(":")
    site = web.TCPSite(runner, host, int(port), reuse_address=True, shutdown_timeout=1.0,
                       backlog=LISTEN_BACKLOG)
    await server.start()
    await site.start()
    print(f"ringlock lock member {args.id} ready", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("member %d stopping", args.id)
    await server.stop()
    await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m lockservice.node", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--id", type=int, required=True)
    p.add_argument("--peers", type=parse_peers, required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--tick-ms", type=float, default=40.0)
    p.add_argument("--election-ticks", type=int, default=10)
    p.add_argument("--no-fsync", action="store_true")
    p.add_argument("--log-level", default="WARNING")
    p.add_argument("--limit", type=parse_limit, action="append", default=[],
                   metavar="NAME=VALUE", help="one field of lockservice.limits.Limits")
    args = p.parse_args(argv)
    if args.id not in args.peers:
        p.error(f"--peers has no address for --id {args.id}")
    try:
        args.limits = Limits(**dict(args.limit))
    except ValueError as exc:
        p.error(f"--limit: {exc}")
    logging.basicConfig(level=args.log_level,
                        format=f"%(asctime)s m{args.id} %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
