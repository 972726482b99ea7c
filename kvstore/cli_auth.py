"""`kv auth`: make tokens and auth-file entries, and check an auth file (docs/auth.md).

    kv auth new-token                      a fresh random token and its token_sha256
    kv auth hash-token [TOKEN]             the token_sha256 of TOKEN (or of stdin's first line)
    kv auth add-user NAME --role R ... [--file FILE]
                                           a new user with a fresh token: prints the token
                                           once (stdout) and the TOML entry; with --file,
                                           appends the entry to FILE after checking that the
                                           result is a valid auth file
    kv auth check FILE                     validate FILE; print its users, roles, public paths

Tokens never reach the file: only their SHA-256 does (kvstore/auth.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kvstore import auth
from kvstore.auth_http import read
from kvstore.errors import InvalidRequest


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("auth", help="tokens and auth files (docs/auth.md)",
                                 description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    verbs.add_parser("new-token", help="a fresh random token").set_defaults(func=run_new)
    hashing = verbs.add_parser("hash-token", help="the token_sha256 of a token")
    hashing.add_argument("token", nargs="?", help="the token (default: stdin's first line)")
    hashing.set_defaults(func=run_hash)
    add = verbs.add_parser("add-user", help="a user with a fresh token")
    add.add_argument("name")
    add.add_argument("--role", action="append", default=[], help="a role (repeatable)")
    add.add_argument("--file", type=Path, help="append the entry to this auth file")
    add.set_defaults(func=run_add_user)
    check = verbs.add_parser("check", help="validate an auth file")
    check.add_argument("file", type=Path)
    check.set_defaults(func=run_check)


def run_new(args: argparse.Namespace) -> int:
    token = auth.new_token()
    print(f"token = {token}\ntoken_sha256 = {auth.hash_token(token)}")
    return 0


def run_hash(args: argparse.Namespace) -> int:
    token = args.token if args.token is not None else sys.stdin.readline().strip()
    if not token:
        raise InvalidRequest("no token given (as an argument or on stdin)")
    print(auth.hash_token(token))
    return 0


def user_entry(name: str, token: str, roles: list[str]) -> str:
    """The TOML of a user (its token's hash and roles)."""
    listed = ", ".join(f'"{r}"' for r in roles)
    return (f"\n[users.{name}]\ntoken_sha256 = \"{auth.hash_token(token)}\"\n"
            f"roles = [{listed}]\n")


def run_add_user(args: argparse.Namespace) -> int:
    token = auth.new_token()
    entry = user_entry(args.name, token, args.role)
    if args.file is not None:
        current = args.file.read_text(encoding="utf-8") if args.file.exists() else ""
        try:
            auth.parse(current + entry, source=f"auth file {args.file} with the new user")
        except auth.AuthFileError as exc:
            raise InvalidRequest(f"{exc}; the file was not changed") from None
        with open(args.file, "a", encoding="utf-8") as f:
            f.write(entry)
        print(f"added user {args.name!r} to {args.file}; its token (shown once):",
              file=sys.stderr)
    else:
        print(f"the entry for the auth file:{entry}", file=sys.stderr)
        print("its token (shown once):", file=sys.stderr)
    print(token)
    return 0


def run_check(args: argparse.Namespace) -> int:
    try:
        config = read(args.file)
    except auth.AuthFileError as exc:
        raise InvalidRequest(str(exc)) from None
    print(f"{args.file}: valid")
    print(f"  users: {', '.join(sorted(config.users)) or 'none'}")
    print(f"  roles: {', '.join(sorted(config.roles)) or 'none'}")
    print(f"  peer token: {'set' if config.peer_token else 'not set (peer routes refused)'}")
    print(f"  public paths: {', '.join(sorted(config.public_paths)) or 'none'}")
    return 0
