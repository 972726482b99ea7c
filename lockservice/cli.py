"""`kv lock run|status`, `kv elect`, `kv leader`: the lock service from the shell.

    kv lock run NAME [--ttl MS] [--timeout S] [--shared] -- CMD...   (like flock, etcdctl
                                                                      lock, consul lock)
    kv lock status NAME [--stale]
    kv elect NAME --value V [--ttl MS] -- CMD...
    kv leader NAME

Members come from `--members h:p,h:p,...` or the environment variable
RINGLOCK_LOCK_MEMBERS. `lock run` and `elect` run CMD while holding the lock (or leading)
and give it the sequencer in RINGLOCK_SEQUENCER, to fence its writes. If the session falls
into jeopardy, CMD gets SIGTERM at once and SIGKILL `--kill-after` seconds later, before
the lock could pass on: jeopardy comes a safety margin (TTL/10) before the server's lease
ends, and a lease that ends makes the lock wait its lock-delay, so `--kill-after` (default
1 s) must stay under TTL/10 + lock-delay; a larger value is refused.

Exit status: CMD's own status when it ends by itself (128 + N when a signal N ended it);
75 when the lock was lost and CMD was stopped for it; 1 when the lock was not had within
`--timeout` or the service could not be reached; 2 for usage errors. `kv leader` exits 3
when there is no leader.

Without the `kv` entry point: `python -m lockservice.cli lock run NAME -- CMD...`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable

from lockservice.async_client import AsyncLockClient
from lockservice.client_errors import ClientError, LockLost
from lockservice.election import Election
from lockservice.errors import LockServiceError
from lockservice.handles import HeldLock
from lockservice.lease import LeaseState
from lockservice.members import parse_members
from lockservice.supervise import Supervised

ENV_MEMBERS = "RINGLOCK_LOCK_MEMBERS"
ENV_SEQUENCER = "RINGLOCK_SEQUENCER"
EXIT_LOST = 75  # sysexits EX_TEMPFAIL: the lock was lost; running again may succeed
EXIT_NO_LEADER = 3


def register(subcommands: argparse._SubParsersAction, *,
             default_members: str | None = None) -> None:
    """Add the lock commands. Members come from --members, else $RINGLOCK_LOCK_MEMBERS,
    else `default_members` (the caller's guess, e.g. the local cluster's voters)."""
    members = os.environ.get(ENV_MEMBERS) or default_members
    lock = subcommands.add_parser("lock", help="hold a lock while a command runs; lock status",
                                  description="Locks of the lock service.")
    verbs = lock.add_subparsers(dest="verb", metavar="ACTION", required=True)
    run = verbs.add_parser("run", help="run CMD while holding lock NAME",
                           description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    _common(run, members)
    run.add_argument("--timeout", type=float, default=None,
                     help="seconds to wait for the lock (default: forever; 0: try once)")
    run.add_argument("--shared", action="store_true", help="take the lock in shared mode")
    _child(run)
    run.set_defaults(func=lambda a: _main(_lock_run, a))

    status = verbs.add_parser("status", help="holders and waiters of lock NAME")
    _common(status, members)
    status.add_argument("--stale", action="store_true", help="read a member's local state")
    status.set_defaults(func=lambda a: _main(_lock_status, a))

    elect = subcommands.add_parser("elect", help="campaign for NAME; run CMD while leader")
    _common(elect, members)
    elect.add_argument("--value", help="what `kv leader NAME` shows (required)")
    _child(elect)
    elect.set_defaults(func=lambda a: _main(_elect, a))

    leader = subcommands.add_parser("leader", help="the current leader of election NAME")
    _common(leader, members)
    leader.set_defaults(func=lambda a: _main(_leader, a))


def _common(p: argparse.ArgumentParser, members: str | None) -> None:
    p.add_argument("name", metavar="NAME")
    p.add_argument("--members", default=members,
                   help=f"lock-service members h:p,h:p,... (default ${ENV_MEMBERS})")
    p.add_argument("--ttl", type=int, default=10_000, metavar="MS", help="session TTL")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--request-timeout", type=float, default=10.0, metavar="S",
                   help="give up on a request no member answers in this long (default 10)")


def _child(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lock-delay", type=int, default=None, metavar="MS",
                   help="lock-delay if this session expires holding it (server default)")
    p.add_argument("--kill-after", type=float, default=None, metavar="S",
                   help="SIGKILL this long after SIGTERM when the lock is lost (default: 1, "
                        "or less to stay under half of margin + lock-delay)")
    # REMAINDER keeps CMD's own options; options given after NAME are parsed in _main.
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD...")
    p.set_defaults(parser=p)


def _main(run: Callable[[argparse.Namespace], Awaitable[int]], args: argparse.Namespace) -> int:
    name = " ".join(filter(None, ["kv", args.command, getattr(args, "verb", None)]))
    try:
        if hasattr(args, "cmd"):
            _split_command(args)  # first: options after NAME may give --members
        args.member_list = parse_members(args.members or "")
    except ValueError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(run(args))
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    except (LockServiceError, OSError) as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 1


def _client(args: argparse.Namespace) -> AsyncLockClient:
    try:  # kv's --cacert/--cert/--key (kvstore/tls.py) reach the lock client too
        return AsyncLockClient(args.member_list, ttl_ms=args.ttl,
                               request_timeout_s=args.request_timeout,
                               **{k: getattr(args, k, None)
                                  for k in ("tls_ca", "tls_cert", "tls_key", "token")})
    except ValueError as exc:
        raise ClientError(str(exc)) from None


def _split_command(args: argparse.Namespace) -> None:
    """`NAME [options] -- CMD...`: parse the options between NAME and --, keep CMD whole."""
    words = args.cmd
    if "--" in words:
        cut = words.index("--")
        options, cmd = words[:cut], words[cut + 1:]
    elif words[:1] and words[0].startswith("-"):  # options only: there is no CMD
        options, cmd = words, []
    else:  # no --: all of it is CMD
        options, cmd = [], words
    if options:
        args.parser.parse_args([*options, args.name], namespace=args)
    args.cmd = cmd
    if not args.cmd:
        raise ValueError("give the command to run after --")
    _check_kill_after(args)
    if args.command == "elect" and args.value is None:
        raise ValueError("--value is required")


def _check_kill_after(args: argparse.Namespace) -> None:
    """SIGKILL must land before the lock can pass on: within the safety margin (TTL/10) plus
    the lock-delay after jeopardy (the server's default lock-delay is 10 s)."""
    budget_s = (args.ttl / 10 + (10_000 if args.lock_delay is None else args.lock_delay)) / 1000
    if args.kill_after is None:
        args.kill_after = min(1.0, budget_s / 2)
    elif not 0 <= args.kill_after < budget_s:
        raise ValueError(f"--kill-after must be under {budget_s:.2f} s (TTL/10 + lock-delay), "
                         "or the command could outlive the lock")


async def _holding_run(args: argparse.Namespace, client: AsyncLockClient,
                       get: Callable[[], Awaitable[HeldLock]], what: str) -> int:
    """Take the lock with `get`, run CMD while holding it, stop CMD if it is lost."""
    held = await get()
    if not held.valid:
        print(f"kv: lost {what} before starting the command", file=sys.stderr)
        return EXIT_LOST
    env = {**os.environ, ENV_SEQUENCER: held.token}
    child = Supervised(args.cmd, env=env, kill_after=args.kill_after)
    for state in (LeaseState.JEOPARDY, LeaseState.LOST):
        client.callbacks[state] = lambda t: child.stop(f"session {t.new.value}: {t.reason}")
    await child.start()
    if not held.valid:
        child.stop("lost the lock while starting the command")
    status = await child.wait()
    if child.stopped_because is not None:
        print(f"kv: lost {what}; stopped the command ({child.stopped_because})",
              file=sys.stderr)
        return EXIT_LOST
    return status


async def _lock_run(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        def get() -> Awaitable[HeldLock]:
            return client.acquire(args.name, mode="shared" if args.shared else "exclusive",
                                  timeout=args.timeout, lock_delay_ms=args.lock_delay)

        try:
            return await _holding_run(args, client, get, f"lock {args.name!r}")
        except ClientError as exc:
            print(f"kv lock run: {exc}", file=sys.stderr)
            return 1


async def _elect(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        election = Election(client, lock_delay_ms=args.lock_delay)

        async def get() -> HeldLock:
            await election.campaign(args.name, args.value)
            assert election.held is not None
            return election.held

        try:
            return await _holding_run(args, client, get, f"leadership of {args.name!r}")
        except LockLost as exc:
            print(f"kv elect: {exc}", file=sys.stderr)
            return EXIT_LOST
        except ClientError as exc:
            print(f"kv elect: {exc}", file=sys.stderr)
            return 1
        finally:
            if election.is_leader:
                await election.resign()


async def _lock_status(args: argparse.Namespace) -> int:
    client = _client(args)  # a read needs no session
    try:
        info = await client.lock_status(args.name, stale=args.stale)
    finally:
        await client.close()
    if args.json:
        print(json.dumps(info, sort_keys=True))
        return 0
    holders = info.get("holders", [])
    print(f"lock {args.name!r}: " + ("free" if not holders else f"{len(holders)} holder(s)"))
    for h in holders:
        print(f"  holder  session {h['session']}  {h['mode']}  generation {h['generation']}")
    for w in info.get("waiters", []):
        print(f"  waiter  session {w['session']}  {w['mode']}")
    if info.get("delay_until"):
        print(f"  under lock-delay until {info['delay_until']} (service clock, ms)")
    return 0


async def _leader(args: argparse.Namespace) -> int:
    client = _client(args)
    try:
        leader = await Election(client).leader(args.name)
    finally:
        await client.close()
    if leader is None:
        print(f"election {args.name!r} has no leader", file=sys.stderr)
        return EXIT_NO_LEADER
    if args.json:
        print(json.dumps({"name": leader.name, "value": leader.value.decode(errors="replace"),
                          "generation": leader.generation, "session": leader.session,
                          "sequencer": leader.sequencer}, sort_keys=True))
    else:
        print(leader.value.decode(errors="replace"))
    return 0


def main(argv: list[str] | None = None) -> int:
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="kv", description="the lock service's commands")
    register(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
