"""A small Raft node process for tests, demos and the benchmark.

    python -m raft.demo_node --id 1 --data DIR \
        --peers 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003 \
        [--voters 1,2,3] [--join] [--snapshot-threshold N] [--tick-ms 40] [--no-fsync]

It replicates a `KVStateMachine` (raft/demo_statemachine.py). `--peers` lists every node
that may ever be a member, with its address; the initial voters are all of them unless
`--voters` names a subset (the bootstrap configuration, the same on every node). A node
started with `--join` is not in it: it waits for the leader to add it (as a learner first).
Endpoints (docs/raft.md, "Endpoints"):

    POST /raft/messages   Raft messages from peers (msgpack, raft/codec.py)
    POST /propose         {"op": "put", "key": K, "value": V} | {"op": "incr", "key": K}
                          -> 200 {"result": R}; 421 {"error", "leader_id", "leader"} when not
                          leader; 503 {"error", "may_have_applied"} when the outcome is unknown
    GET  /read?key=K      linearizable read (ReadIndex); &stale=1 for a local read
    GET  /status          id, term, leader, role, commit, applied, configuration, digest
    POST /members         {"action": "add_learner" | "add_voter" | "remove", "id": N}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
from typing import Any

from aiohttp import web

from raft import demo_statemachine as dsm
from raft.config import Config
from raft.driver import Driver
from raft.driver_errors import DriverStopped, NotLeaderError, ProposalLost, ProposalOutcomeUnknown
from raft.errors import RaftError
from raft.messages import ConfChange, ConfChangeType
from raft.server import BodyTooLarge, raft_routes, read_body

log = logging.getLogger(__name__)

MAX_CLIENT_BODY = 1 << 20


def parse_peers(text: str) -> dict[int, str]:
    peers: dict[int, str] = {}
    for part in text.split(","):
        node, _, addr = part.partition("=")
        if not node.strip().isdigit() or ":" not in addr:
            raise argparse.ArgumentTypeError(f"bad peer {part!r}: want ID=HOST:PORT")
        peers[int(node)] = addr.strip()
    return peers


def _json(status: int, body: dict[str, Any]) -> web.Response:
    return web.json_response(body, status=status)


def _error_response(driver: Driver, exc: Exception) -> web.Response:
    if isinstance(exc, NotLeaderError):
        return _json(421, {"error": str(exc), "leader_id": exc.leader,
                           "leader": exc.leader_address})
    if isinstance(exc, ProposalOutcomeUnknown):
        return _json(503, {"error": str(exc), "may_have_applied": True})
    if isinstance(exc, ProposalLost):
        return _json(503, {"error": str(exc), "may_have_applied": False})
    if isinstance(exc, DriverStopped):
        return _json(503, {"error": str(exc), "may_have_applied": False})
    if isinstance(exc, dsm.CommandError | RaftError):
        return _json(400, {"error": str(exc)})
    raise exc


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = json.loads(await read_body(request, MAX_CLIENT_BODY))
    except BodyTooLarge as exc:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_CLIENT_BODY,
                                            actual_size=request.content_length or 0,
                                            text=str(exc)) from None
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f"body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="body must be a JSON object")
    return body


def make_app(driver: Driver, sm: dsm.KVStateMachine) -> web.Application:
    app = web.Application(client_max_size=MAX_CLIENT_BODY)
    app.add_routes(raft_routes(driver.id, driver.deliver))

    async def propose(request: web.Request) -> web.Response:
        body = await _json_body(request)
        op, key = body.get("op", "put"), body.get("key")
        if not isinstance(key, str) or not key:
            raise web.HTTPBadRequest(text="key must be a non-empty string")
        if op == "put":
            command = dsm.put(key, body.get("value"))
        elif op == "incr":
            command = dsm.incr(key)
        else:
            raise web.HTTPBadRequest(text=f"unknown op {op!r}")
        try:
            result = await driver.propose(command)
        except (RaftError, dsm.CommandError) as exc:
            return _error_response(driver, exc)
        return _json(200, {"result": result})

    async def read(request: web.Request) -> web.Response:
        key = request.query.get("key")
        if not key:
            raise web.HTTPBadRequest(text="key is required")
        if request.query.get("stale") != "1":
            try:
                await driver.read_index()
            except RaftError as exc:
                return _error_response(driver, exc)
        return _json(200, {"key": key, "value": sm.get(key)})

    async def status(request: web.Request) -> web.Response:
        st = driver.status()
        return _json(200, {**st, "last_applied_sm": sm.last_applied, "digest": sm.digest.hex(),
                           "keys": len(sm.data)})

    async def dump(request: web.Request) -> web.Response:
        return _json(200, {"last_applied": sm.last_applied, "digest": sm.digest.hex(),
                           "data": {str(k): v for k, v in sm.data.items()}})

    async def members(request: web.Request) -> web.Response:
        body = await _json_body(request)
        kinds = {"add_learner": ConfChangeType.ADD_LEARNER,
                 "add_voter": ConfChangeType.ADD_VOTER, "remove": ConfChangeType.REMOVE_NODE}
        action, node = body.get("action"), body.get("id")
        if action not in kinds or type(node) is not int or node <= 0:
            raise web.HTTPBadRequest(text="want {action: add_learner|add_voter|remove, id: N>0}")
        try:
            conf = await driver.change_membership(ConfChange(kinds[action], node))
        except RaftError as exc:
            return _error_response(driver, exc)
        return _json(200, {"voters": sorted(conf.voters), "learners": sorted(conf.learners)})

    app.add_routes([
        web.post("/propose", propose),
        web.get("/read", read),
        web.get("/status", status),
        web.get("/dump", dump),
        web.post("/members", members),
    ])
    return app


async def serve(args: argparse.Namespace) -> None:
    peers = args.peers
    voters = set(peers) if args.voters is None else set(args.voters)
    if args.join:
        voters.discard(args.id)
    sm = dsm.KVStateMachine()
    driver = Driver.open(
        node_id=args.id,
        addresses=peers,
        data_dir=args.data,
        state_machine=sm,
        initial_voters=voters,
        tick_s=args.tick_ms / 1000,
        config=Config(election_tick=args.election_ticks, heartbeat_tick=args.heartbeat_ticks),
        snapshot_threshold=args.snapshot_threshold,
        sync=not args.no_fsync,
        seed=args.seed,
    )
    await driver.start()
    app = make_app(driver, sm)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, _, port = peers[args.id].rpartition(":")
    # Peers' streams stay open for ever: give them a second at shutdown, not a minute.
    site = web.TCPSite(runner, host, int(port), reuse_address=True, shutdown_timeout=1.0)
    await site.start()
    log.info("node %d serving on %s", args.id, peers[args.id])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await driver.stop()
    await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m raft.demo_node", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--id", type=int, required=True)
    p.add_argument("--peers", type=parse_peers, required=True)
    p.add_argument("--voters", type=lambda s: [int(x) for x in s.split(",")], default=None)
    p.add_argument("--data", required=True)
    p.add_argument("--join", action="store_true", help="start empty; wait to be added")
    p.add_argument("--snapshot-threshold", type=int, default=10_000)
    p.add_argument("--tick-ms", type=float, default=40.0)
    p.add_argument("--election-ticks", type=int, default=10)
    p.add_argument("--heartbeat-ticks", type=int, default=1)
    p.add_argument("--no-fsync", action="store_true")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--log-level", default="WARNING")
    args = p.parse_args(argv)
    if args.id not in args.peers:
        p.error(f"--peers has no address for --id {args.id}")
    logging.basicConfig(level=args.log_level,
                        format=f"%(asctime)s n{args.id} %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
