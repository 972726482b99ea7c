"""Progress of long CLI operations on stderr (tqdm), and when to show it.

    bar = Progress("load", mode=choose(flag(args), sys.stderr), total=size, unit="B",
                   unit_scale=True)
    bar.update(len(line)); bar.set(done, total=owed); bar.note("12 failed")
    bar.write("a result line")   # to stdout, without tearing the bar
    bar.close()                  # the final line stays on stderr

When (`choose`, pure apart from `isatty`):

    --no-progress                       OFF    nothing is drawn
    --progress, stderr is a terminal    BAR    a tqdm bar redrawn in place
    --progress, stderr is not           LINES  one log-style line every LINE_INTERVAL_S
                                               (tqdm's own rendering) and a final line
    neither flag                        BAR on a terminal, else OFF; OFF as well when the
                                        command prints JSON (`json_output`): programs read it

Progress only ever goes to stderr; stdout keeps the command's result (its lines and its
JSON), so `kv load --json f > summary.json` with a bar on the terminal is clean. A bar is
drawn only for counts that move; a finished bar stays on screen as its final line.

`add_arguments(parser)` adds `--progress` / `--no-progress` to a parser; `flag(args)` reads
them back (None: neither was given). The `kv` parser has them before the command and
each command that shows progress has them after it too, so both orders work.
"""

from __future__ import annotations

import argparse
import enum
import os
import sys
import time
from collections.abc import Callable
from typing import IO

LINE_INTERVAL_S = 10.0  # LINES mode: a line per this many seconds (CI logs stay short)
LINE_COLUMNS = 80  # LINES mode: width of each line
NO_RATE = "{l_bar}{bar}| {n_fmt}/{total_fmt} {unit} [{elapsed}{postfix}]"  # counts of steps


class Mode(enum.Enum):
    OFF = "off"
    BAR = "bar"
    LINES = "lines"


def isatty(stream: IO | None) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (ValueError, OSError):  # closed or detached
        return False


def choose(flag: bool | None, stream: IO | None = None, *, json_output: bool = False) -> Mode:
    """The mode for `flag` (--progress True, --no-progress False, else None) and `stream`
    (where progress would go: stderr). See the module docstring's table."""
    if flag is False:
        return Mode.OFF
    tty = isatty(sys.stderr if stream is None else stream)
    if flag is True:
        return Mode.BAR if tty else Mode.LINES
    return Mode.BAR if tty and not json_output else Mode.OFF


def add_arguments(parser: argparse.ArgumentParser, *, top: bool = False) -> None:
    """`--progress` / `--no-progress`. On sub-commands (`top` False) an absent flag leaves
    what the top-level parser read in place."""
    group = parser.add_mutually_exclusive_group()
    default = None if top else argparse.SUPPRESS
    group.add_argument("--progress", dest="progress", action="store_const", const=True,
                       default=default,
                       help="show progress on stderr even when it is not a terminal "
                            "(log-style lines there)")
    group.add_argument("--no-progress", dest="progress", action="store_const", const=False,
                       default=default, help="never show progress")


def flag(args: argparse.Namespace) -> bool | None:
    value = getattr(args, "progress", None)
    return value if isinstance(value, bool) else None


def _size(stream: IO) -> tuple[int, int]:
    """(columns, rows) of the terminal `stream` writes to; zeros when it tells none."""
    try:
        size = os.get_terminal_size(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return 0, 0
    return size.columns, size.lines


class Progress:
    """One counter (`n` of `total`, or of an unknown total), shown as `mode` says."""

    def __init__(self, desc: str, *, mode: Mode, total: float | None = None, unit: str = "it",
                 unit_scale: bool = False, rate: bool = True, stream: IO | None = None,
                 interval: float = LINE_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.desc, self.mode, self.total, self.unit = desc, mode, total, unit
        self.unit_scale = unit_scale
        self._format = None if rate else NO_RATE  # rate: show items per second and an ETA
        self.n: float = 0
        self.stream = sys.stderr if stream is None else stream
        self._interval, self._clock = interval, clock
        self._start = self._last_line = clock()
        self._postfix = ""
        self._closed = False
        self._bar = None
        if mode is Mode.BAR:
            from tqdm import tqdm  # here: `kv get` never pays for importing it

            # a terminal that reports no size (0x0: a fresh pty, some CI runners) would
            # make tqdm draw nothing: give it LINE_COLUMNS and a few rows then
            columns, rows = _size(self.stream)
            self._bar = tqdm(desc=desc, total=total, unit=unit, unit_scale=unit_scale,
                             file=self.stream, dynamic_ncols=columns > 0,
                             ncols=None if columns > 0 else LINE_COLUMNS,
                             nrows=None if rows > 0 else 24, leave=True,
                             mininterval=0.2, bar_format=self._format)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: float = 1) -> None:
        """`n` more done."""
        self.set(self.n + n)

    def set(self, n: float, total: float | None = None) -> None:
        """Exactly `n` done (of `total`, when given): for counts polled from a node.
        Ignored once closed."""
        if self._closed:
            return
        if total is not None:
            self.total = total
        self.n = n
        if self._bar is not None:
            if total is not None:
                self._bar.total = total
            self._bar.update(n - self._bar.n)
        elif self.mode is Mode.LINES and self._clock() - self._last_line >= self._interval:
            self._line()

    def note(self, text: str) -> None:
        """A short remark after the counts (`3 failed`)."""
        self._postfix = text
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=False)

    def write(self, line: str, file: IO | None = None) -> None:
        """Print `line` (to stdout by default) without tearing a bar that is drawn."""
        out = sys.stdout if file is None else file
        if self._bar is not None:
            self._bar.write(line, file=out)
        else:
            print(line, file=out, flush=True)

    def render(self) -> str:
        """The counter as one line, in tqdm's format (LINES mode prints these)."""
        from tqdm import tqdm

        return tqdm.format_meter(self.n, self.total, self._clock() - self._start,
                                 ncols=LINE_COLUMNS, prefix=self.desc, ascii=True,
                                 unit=self.unit, unit_scale=self.unit_scale,
                                 postfix=self._postfix or None, bar_format=self._format)

    def _line(self) -> None:
        self._last_line = self._clock()
        print(self.render(), file=self.stream, flush=True)

    def close(self) -> None:
        """Leave the final state on screen (BAR) or print it (LINES). Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elif self.mode is Mode.LINES:
            self._line()


__all__ = ["LINE_INTERVAL_S", "Mode", "Progress", "add_arguments", "choose", "flag"]
