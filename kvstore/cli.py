"""The `kv` command: one entry point for users and operators.

Subcommands register themselves in `build_parser()` from the modules that implement them
(kvstore/cli_demo.py, cli_data.py, cli_load.py, cli_cluster.py, and lockservice/cli.py for the lock
service's commands); each is a function that takes the
parsed arguments and returns the process exit code. Errors the store raises on purpose
(kvstore/errors.py) and OS errors end the command with a one-line message on stderr and
exit status 1, never a traceback; usage errors exit 2, Ctrl-C 130.
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import version

from antientropy import cli as aae_cli
from kvstore import cli_auth, cli_cluster, cli_data, cli_demo, cli_load, progress
from kvstore.cli_certs import register as register_certs
from kvstore.errors import RinglockError
from kvstore.tls import CLIENT_FLAGS, add_client_arguments

LOCK_COMMANDS = {"lock": "hold a lock while a command runs; lock status",
                 "elect": "campaign for NAME; run CMD while leader",
                 "leader": "the current leader of election NAME"}


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; the lock service's commands are imported only when one is asked for
    (they load aiohttp, which would add most of a second to every `kv get`)."""
    parser = argparse.ArgumentParser(
        prog="kv",
        description="ringlock: a replicated key-value store and lock service.",
    )
    parser.add_argument("--version", action="version", version=f"ringlock {version('ringlock')}")
    add_client_arguments(parser)  # --cacert/--cert/--key (kvstore/tls.py, docs/tls.md)
    progress.add_arguments(parser, top=True)  # and after the commands that show progress
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    cli_demo.register(commands)
    cli_data.register(commands)
    cli_load.register(commands)
    cli_cluster.register(commands)
    cli_cluster.register_serve(commands)
    aae_cli.register(commands)  # kv aae status|exchange|rebuild
    cli_auth.register(commands)  # kv auth new-token|hash-token|add-user|check
    register_certs(commands)  # kv certs init|node|client
    words = sys.argv[1:] if argv is None else argv
    command = next((w for i, w in enumerate(words) if not w.startswith("-")
                    and (i == 0 or words[i - 1] not in CLIENT_FLAGS)), None)
    if command in LOCK_COMMANDS:
        from lockservice import cli as lock_cli

        # after `kv cluster up`, `kv lock ...` finds the members by itself (without
        # touching os.environ: a parser must not change its process's environment)
        members = ",".join(cli_data.local_lock_members()) or None
        lock_cli.register(commands, default_members=members)  # kv lock, elect, leader
    else:
        for name, summary in LOCK_COMMANDS.items():
            commands.add_parser(name, help=summary, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    name = " ".join(filter(None, ["kv", args.command, getattr(args, "verb", None)]))
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `kv get k | head -c1`: the reader left; not our failure
        sys.stderr.close()
        return 0
    except (RinglockError, OSError) as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
