"""The `kv` command: one entry point for users and operators.

Subcommands register themselves in `build_parser()`; each one is a function that takes
the parsed arguments and returns the process exit code.
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import version


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kv",
        description="ringlock: a replicated key-value store and lock service.",
    )
    parser.add_argument("--version", action="version", version=f"ringlock {version('ringlock')}")
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
