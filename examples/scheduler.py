"""A small job scheduler that runs as three copies; only the elected leader dispatches.

    python examples/scheduler.py --name sched-1 --jobs 20 \\
        --lock-members 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003 \\
        --kv-nodes 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003 --dispatch-log jobs.log

Start it three times with different `--name`s (docs/election.md walks through it). The
copies campaign for the election `scheduler`; the leader goes through the jobs
`job-0 .. job-N-1` and, for each one not yet recorded in the KV store under `jobs/<id>`,
first records it there with a put fenced by its sequencer, then dispatches it (here: one
line appended to the dispatch log). Kill the leader and another copy takes over: it skips
every recorded job, so no job is dispatched twice. The two guards:

- `election.check()` before each job: a leader whose session fell into jeopardy stops at
  once (Chubby §2.8), before the lock service could elect anyone else;
- the fenced put: a leader that was paused past that check (a long GC, a SIGSTOP) and
  wakes up after a new leader was elected has its record refused by the store (409,
  SequencerRejected), so it never dispatches (Chubby §2.4, sequencers).

A job is recorded before it is dispatched, so a leader that dies between the two leaves a
recorded job undispatched: at most once, the promise a dispatcher of side effects can keep.
Exit status: 0 once every job is recorded (the copy that sees it last leaves too).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time

from kvstore.client import AsyncClient
from kvstore.errors import RinglockError, SequencerRejected
from lockservice.async_client import AsyncLockClient
from lockservice.client_errors import ClientError, LockLost
from lockservice.election import Election
from lockservice.members import parse_members

log = logging.getLogger("scheduler")


def dispatch(path: str, job: str, name: str, generation: int) -> None:
    """The side effect: one line per dispatch, appended atomically (O_APPEND)."""
    line = f"{job} {name} {generation} {time.monotonic():.6f}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


async def lead(election: Election, kv: AsyncClient, args: argparse.Namespace) -> bool:
    """Dispatch every job not yet recorded; True when none is left."""
    for i in range(args.jobs):
        job = f"job-{i}"
        election.check()  # LockLost once the session is in jeopardy
        got = await kv.get(f"jobs/{job}".encode())
        if got.found:
            continue  # recorded by this or an earlier leader
        record = json.dumps({"by": args.name, "generation": election.held.generation})
        await kv.put(f"jobs/{job}".encode(), record.encode(), got.context,
                     sequencer=election.sequencer)  # SequencerRejected if superseded
        dispatch(args.dispatch_log, job, args.name, election.held.generation)
        log.info("%s dispatched %s", args.name, job)
        await asyncio.sleep(args.interval)
    return True


async def all_recorded(kv: AsyncClient, jobs: int) -> bool:
    for i in range(jobs):
        if not (await kv.get(f"jobs/job-{i}".encode())).found:
            return False
    return True


async def run(args: argparse.Namespace) -> int:
    async with AsyncClient(args.kv_nodes) as kv:
        while not await all_recorded(kv, args.jobs):
            # A lost session cannot come back: each term gets a new client and session.
            async with AsyncLockClient(args.lock_members, ttl_ms=args.ttl) as locks:
                election = Election(locks, lock_delay_ms=args.lock_delay)
                try:
                    await election.campaign(args.election, args.name)
                    log.info("%s leads (generation %d)", args.name, election.held.generation)
                    if await lead(election, kv, args):
                        await election.resign()
                except (LockLost, SequencerRejected, ClientError, RinglockError) as exc:
                    log.warning("%s is not the leader any more: %s", args.name, exc)
                    await asyncio.sleep(0.1)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", required=True, help="this copy's name (the election value)")
    p.add_argument("--lock-members", type=parse_members, required=True)
    p.add_argument("--kv-nodes", required=True, help="store nodes h:p,h:p,...")
    p.add_argument("--dispatch-log", required=True, help="file the dispatches go to")
    p.add_argument("--jobs", type=int, default=20)
    p.add_argument("--interval", type=float, default=0.1, help="seconds between dispatches")
    p.add_argument("--election", default="scheduler")
    p.add_argument("--ttl", type=int, default=10_000, help="lock session TTL (ms)")
    p.add_argument("--lock-delay", type=int, default=None, help="ms (server default)")
    args = p.parse_args(argv)
    args.kv_nodes = args.kv_nodes.split(",")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
