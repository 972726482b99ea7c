"""`kv certs`: a development CA and the certificates of a TLS cluster (kvstore/certs.py).

    kv certs init --dir certs [--node HOST:PORT ...] [--client NAME]   the CA (+ certs)
    kv certs node HOST:PORT --dir certs                                a node's certificate
    kv certs client NAME --dir certs                                   a client certificate

Files: ca.crt/ca.key, node-HOST-PORT.crt/.key, client-NAME.crt/.key (keys 0600); an
existing file is never replaced without --force. Bad input or an unwritable folder: one
line on stderr, exit status 1, nothing written. How to use them: docs/tls.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

LEAF_DAYS = 825  # kvstore.certs.LEAF_DAYS (not imported here: `kv` starts without cryptography)


def register(commands: argparse._SubParsersAction) -> None:
    certs = commands.add_parser("certs", help="create a development CA and TLS certificates",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = certs.add_subparsers(dest="verb", metavar="VERB", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--dir", default="certs", type=Path,
                       help="folder of the CA and certificates (default ./certs)")
        p.add_argument("--force", action="store_true", help="replace existing files")
        p.add_argument("--days", type=int, default=LEAF_DAYS,
                       help=f"validity of node and client certificates (default {LEAF_DAYS})")
        p.set_defaults(func=run)

    p = verbs.add_parser("init", help="a new CA (and, with --node/--client, certificates)")
    p.add_argument("--node", action="append", default=[], metavar="HOST:PORT",
                   help="also a certificate for this node (repeat, or comma-separated)")
    p.add_argument("--client", action="append", default=[], metavar="NAME",
                   help="also a client certificate (repeat)")
    common(p)
    p = verbs.add_parser("node", help="a node certificate signed by the CA in --dir")
    p.add_argument("name", metavar="HOST:PORT")
    common(p)
    p = verbs.add_parser("client", help="a client certificate signed by the CA in --dir")
    p.add_argument("name", metavar="NAME")
    common(p)


def run(args: argparse.Namespace) -> int:
    from kvstore import certs

    try:
        if not 1 <= args.days <= certs.CA_DAYS:
            raise certs.CertError(f"--days must be in 1..{certs.CA_DAYS}, not {args.days}")
        if args.verb == "init":
            nodes = [n.strip() for arg in args.node for n in arg.split(",") if n.strip()]
            written = certs.init(args.dir, nodes, args.client, force=args.force,
                                 days=args.days)
        elif args.verb == "node":
            written = certs.issue_node(args.dir, args.name, force=args.force, days=args.days)
        else:
            written = certs.issue_client(args.dir, args.name, force=args.force,
                                         days=args.days)
    except certs.CertError as exc:
        print(f"kv certs {args.verb}: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0
