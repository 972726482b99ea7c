"""`kv load FILE`: bulk-load key/value lines into the store, many puts at a time.

    kv load data.jsonl                   {"key": "k1", "value": "text"} per line
    kv load data.tsv --format tsv        k1<TAB>value per line
    producer | kv load -                 from stdin

Line formats (kvstore/load_lines.py): JSON objects with "key" or "key_b64" and "value" or
"value_b64" (UTF-8 text, or standard base64 for any bytes), and no other field; or
KEY<TAB>VALUE as raw bytes (the value is the rest of the line: no newline in it). `--format
auto` (the default) takes JSON when the first line that is not blank starts with `{`.
Blank lines are skipped. Keys are 1..1024 bytes; values at most --max-value bytes.

Writes: up to --concurrency puts at a time (default 32) through the asyncio client, spread
over the nodes given (--node, else the defaults of `kv put`) as coordinators, with
`kv put`'s meaning: each put first reads the key and writes with that context, so it
replaces what is stored (--blind skips the read: faster, and a key already stored gets a
sibling). Two lines with the same key are written in file order (the later one wins).
A put that fails is not retried (a write that timed out may still have been applied).

A bad line (not JSON, a missing or empty key, an oversized value, junk bytes, ...) stops
the load there (puts already sent finish) and is reported with its line number; with
--skip-bad it is reported and skipped and the load goes on.

At the end a summary goes to stdout (loaded, failed, bad lines, time, rate), or one JSON
object with --json: {"loaded", "failed", "bad_lines", "skipped_blank", "bytes", "seconds",
"rate", "failures": [{"line", "key", "reason"}...], "bad": [{"line", "reason"}...],
"stopped_at_line"} (the lists hold the first 10 by line number). The same failures and
bad lines are also listed on stderr. Exit status: 0 when every record was loaded (bad
lines skipped with --skip-bad do not count against it), 1 when a put failed or a bad line
stopped the load.

Progress (kvstore/progress.py): a bar on stderr when it is a terminal, by bytes for a file
and by lines for stdin; --progress forces it (log-style lines when stderr is not a
terminal), --no-progress turns it off. stdout carries only the summary.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import itertools
import json
import os
import stat
import sys
import time
from dataclasses import dataclass, field
from typing import IO

from kvstore import progress, tls
from kvstore.client import AsyncClient
from kvstore.errors import RinglockError
from kvstore.http_codec import DEFAULT_MAX_VALUE_BYTES
from kvstore.load_lines import (
    BadLine,
    Format,
    RawLine,
    Record,
    detect,
    max_line,
    parse,
    read_lines,
)

DEFAULT_CONCURRENCY = 32
LISTED = 10  # failures and bad lines listed in the summary
READ_BATCH = 512  # lines read per trip to the reading thread...
READ_BATCH_BYTES = 4 << 20  # ...or fewer, once they hold this many bytes


@dataclass
class Summary:
    loaded: int = 0
    failed: int = 0
    bad_lines: int = 0
    skipped_blank: int = 0
    bytes: int = 0  # of the input consumed
    seconds: float = 0.0
    failures: list[dict] = field(default_factory=list)
    bad: list[dict] = field(default_factory=list)
    stopped_at_line: int | None = None

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.stopped_at_line is None

    def to_json(self) -> dict:
        rate = self.loaded / self.seconds if self.seconds > 0 else 0.0
        return {"loaded": self.loaded, "failed": self.failed, "bad_lines": self.bad_lines,
                "skipped_blank": self.skipped_blank, "bytes": self.bytes,
                "seconds": round(self.seconds, 3), "rate": round(rate, 1),
                "failures": self.failures, "bad": self.bad,
                "stopped_at_line": self.stopped_at_line}


def register(commands: argparse._SubParsersAction) -> None:
    from kvstore.cli_data import add_node_options

    load = commands.add_parser("load", help="bulk-load key/value lines (JSON or TSV)",
                               description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    load.add_argument("file", metavar="FILE", help="the input file, or '-' for stdin")
    load.add_argument("--format", choices=[f.value for f in Format] + ["auto"],
                      default="auto", help="line format (default: auto)")
    load.add_argument("--concurrency", type=_positive, default=DEFAULT_CONCURRENCY,
                      metavar="N", help=f"puts at a time (default {DEFAULT_CONCURRENCY})")
    load.add_argument("--skip-bad", action="store_true",
                      help="report bad lines and go on (default: stop at the first)")
    load.add_argument("--blind", action="store_true",
                      help="write without reading first (adds a sibling to a stored key)")
    load.add_argument("-w", dest="w", type=int, help="acks to wait for (default: the node's W)")
    load.add_argument("--max-value", type=_positive, default=DEFAULT_MAX_VALUE_BYTES,
                      metavar="BYTES", help="refuse longer values as bad lines (default "
                      f"{DEFAULT_MAX_VALUE_BYTES}, the node's default limit)")
    add_node_options(load)
    progress.add_arguments(load)
    load.set_defaults(func=run_load)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, not {text!r}")
    return value


def _nodes(args: argparse.Namespace) -> list[str]:
    from kvstore.cli_data import default_nodes

    if args.node:
        return [n for arg in args.node for n in arg.split(",") if n.strip()]
    return default_nodes()


def run_load(args: argparse.Namespace) -> int:
    if args.file == "-":
        if sys.stdin.isatty():
            print("kv load: reading lines from stdin (end them with Ctrl-D)", file=sys.stderr)
        stream: IO[bytes] = sys.stdin.buffer
        total = None
    else:
        stream = open(args.file, "rb")  # noqa: SIM115 (closed below)
        st = os.fstat(stream.fileno())
        total = st.st_size if stat.S_ISREG(st.st_mode) else None
    mode = progress.choose(progress.flag(args), sys.stderr, json_output=args.json)
    bar = progress.Progress("load", mode=mode, total=total,
                            unit="B" if total is not None else " lines",
                            unit_scale=total is not None)
    try:
        with bar:
            summary = asyncio.run(load(stream, args, bar, by_bytes=total is not None))
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
    _report(summary, args.json)
    return 0 if summary.ok else 1


def _report(s: Summary, as_json: bool) -> None:
    for f in s.failures:
        print(f"kv load: line {f['line']}: key {f['key']!r} not loaded: {f['reason']}",
              file=sys.stderr)
    if s.failed > len(s.failures):
        print(f"kv load: ... and {s.failed - len(s.failures)} more failed puts",
              file=sys.stderr)
    for b in s.bad:
        print(f"kv load: line {b['line']}: {b['reason']}", file=sys.stderr)
    if s.bad_lines > len(s.bad):
        print(f"kv load: ... and {s.bad_lines - len(s.bad)} more bad lines", file=sys.stderr)
    if s.stopped_at_line is not None:
        print(f"kv load: stopped at line {s.stopped_at_line} (--skip-bad goes on past bad "
              "lines); the lines before it were sent", file=sys.stderr)
    doc = s.to_json()
    if as_json:
        print(json.dumps(doc))
        return
    skipped = f", {s.bad_lines} bad line{'s' * (s.bad_lines != 1)}" if s.bad_lines else ""
    print(f"loaded {s.loaded}, failed {s.failed}{skipped} in {s.seconds:.1f} s "
          f"({doc['rate']:.0f} keys/s, {s.bytes / max(s.seconds, 1e-9) / 1e6:.2f} MB/s)")


async def load(stream: IO[bytes], args: argparse.Namespace, bar: progress.Progress, *,
               by_bytes: bool) -> Summary:
    """Read `stream`'s records and put them, --concurrency at a time (see the docstring)."""
    summary = Summary()
    started = time.monotonic()
    queue: asyncio.Queue[Record | None] = asyncio.Queue(maxsize=2 * args.concurrency)
    inflight: dict[bytes, asyncio.Future] = {}  # key -> done when its latest put ends

    def advance(size: int) -> None:
        summary.bytes += size
        bar.update(size if by_bytes else 1)

    def failed(record: Record, reason: str) -> None:
        # The LISTED failures of the lowest line numbers, in line order (puts end in any
        # order, so "the first to fail" would differ from run to run).
        summary.failed += 1
        listed = summary.failures
        if len(listed) == LISTED and record.line < listed[-1]["line"]:
            listed.pop()
        if len(listed) < LISTED:
            bisect.insort(listed, {"line": record.line, "reason": reason,
                                   "key": record.key.decode("utf-8", "backslashreplace")},
                          key=lambda f: f["line"])
        bar.note(f"{summary.failed} failed")

    async def put(kv: AsyncClient, record: Record) -> None:
        context = None
        if not args.blind:
            context = (await kv.get(record.key, timeout=args.timeout)).context or None
        await kv.put(record.key, record.value, context, w=args.w, timeout=args.timeout)

    async def worker(kv: AsyncClient) -> None:
        loop = asyncio.get_running_loop()
        while (record := await queue.get()) is not None:
            before = inflight.get(record.key)
            done = inflight[record.key] = loop.create_future()
            try:
                if before is not None:
                    await before  # the same key's earlier line first: the later one wins
                await put(kv, record)
                summary.loaded += 1
            except (RinglockError, OSError) as exc:
                failed(record, str(exc) or type(exc).__name__)
            finally:
                done.set_result(None)
                if inflight.get(record.key) is done:
                    del inflight[record.key]
                advance(record.size)

    limit = max_line(args.max_value)
    lines = read_lines(stream, limit)
    fmt = None if args.format == "auto" else Format(args.format)

    def next_batch() -> list[RawLine]:
        """Up to READ_BATCH lines or READ_BATCH_BYTES bytes (long lines: few at a time)."""
        batch, size = [], 0
        for raw in itertools.islice(lines, READ_BATCH):
            batch.append(raw)
            size += len(raw.data)
            if size >= READ_BATCH_BYTES:
                break
        return batch

    # one client per node, each trying a different node first: the puts are coordinated
    # by every node given, not all by the first (each client still fails over in order)
    nodes = _nodes(args)
    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(AsyncClient(
            nodes[i:] + nodes[:i], timeout=_client_timeout(args),
            **tls.client_options(args))) for i in range(len(nodes))]  # --token, --cacert...
        workers = [asyncio.create_task(worker(clients[i % len(clients)]))
                   for i in range(args.concurrency)]
        try:
            while summary.stopped_at_line is None and (batch := await asyncio.to_thread(
                    next_batch)):
                for raw in batch:
                    if fmt is None and raw.data.strip() and not raw.too_long:
                        fmt = detect(raw.data)
                    try:
                        record = parse(raw, fmt or Format.TSV, args.max_value)
                    except BadLine as exc:
                        summary.bad_lines += 1
                        if len(summary.bad) < LISTED:
                            summary.bad.append({"line": exc.line, "reason": exc.reason})
                        advance(raw.size)
                        if not args.skip_bad:
                            summary.stopped_at_line = exc.line
                            break
                        continue
                    if record is None:
                        summary.skipped_blank += 1
                        advance(raw.size)
                        continue
                    await queue.put(record)
            for _ in workers:
                await queue.put(None)
            await asyncio.gather(*workers)
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
    summary.seconds = time.monotonic() - started
    return summary


def _client_timeout(args: argparse.Namespace) -> float:
    return 10.0 if args.timeout is None else args.timeout + 1
