"""kvstore/progress.py: when progress is shown, and what it writes where.

A terminal is a real pseudo-terminal (os.openpty), a non-terminal a real file: no stand-ins
for `isatty`. LINES mode runs on an injected clock, so no test sleeps.
"""

from __future__ import annotations

import fcntl
import io
import os
import struct
import sys
import termios

import pytest

from kvstore import progress
from kvstore.cli import build_parser
from kvstore.progress import Mode, Progress, choose


@pytest.fixture(params=[(24, 100), (0, 0)], ids=["24x100", "no-size"])
def tty(request):
    """A pseudo-terminal; "no-size" reports 0x0, as a fresh pty or some CI runners do."""
    master, slave = os.openpty()
    rows, columns = request.param
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    stream = os.fdopen(slave, "w", encoding="utf-8")
    try:
        yield stream, master
    finally:
        stream.close()
        os.close(master)


def read_pty(master: int) -> str:
    os.set_blocking(master, False)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", "replace")


def test_a_terminal_gets_a_bar_unless_turned_off_or_json(tty) -> None:
    stream, _ = tty
    assert choose(None, stream) is Mode.BAR
    assert choose(True, stream) is Mode.BAR
    assert choose(False, stream) is Mode.OFF
    assert choose(None, stream, json_output=True) is Mode.OFF
    assert choose(True, stream, json_output=True) is Mode.BAR  # asked for explicitly


def test_a_file_gets_nothing_unless_forced_and_then_log_lines(tmp_path) -> None:
    with open(tmp_path / "err", "w") as stream:
        assert choose(None, stream) is Mode.OFF
        assert choose(False, stream) is Mode.OFF
        assert choose(True, stream) is Mode.LINES
        assert choose(True, stream, json_output=True) is Mode.LINES


def test_a_closed_stream_is_not_a_terminal(tmp_path) -> None:
    stream = open(tmp_path / "err", "w")  # noqa: SIM115
    stream.close()
    assert choose(None, stream) is Mode.OFF


@pytest.mark.parametrize(("argv", "expected"), [
    (["load", "f"], None),
    (["--progress", "load", "f"], True),
    (["load", "f", "--progress"], True),
    (["load", "f", "--no-progress"], False),
    (["--no-progress", "load", "f"], False),
    (["--no-progress", "load", "f", "--progress"], True),  # the later, closer one wins
    (["cluster", "up", "--no-progress"], False),
    (["aae", "rebuild", "--progress"], True),
])
def test_flags_before_or_after_the_command(argv, expected) -> None:
    assert progress.flag(build_parser(argv).parse_args(argv)) is expected


def test_both_flags_at_once_are_a_usage_error() -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["load", "f", "--progress", "--no-progress"])
    assert exc.value.code == 2


def test_lines_mode_prints_one_line_per_interval_and_a_final_line() -> None:
    now = [0.0]
    err = io.StringIO()
    bar = Progress("load", mode=Mode.LINES, total=1000, unit="B", stream=err,
                   interval=10.0, clock=lambda: now[0])
    bar.update(100)
    assert err.getvalue() == ""  # too soon
    now[0] = 10.0
    bar.update(100)
    now[0] = 15.0
    bar.update(300)
    assert err.getvalue().count("\n") == 1 and "200/1000" in err.getvalue()
    bar.note("2 failed")
    bar.close()
    bar.close()  # idempotent
    lines = err.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[1].startswith("load:  50%") and "500/1000" in lines[1]
    assert "2 failed" in lines[1]


def test_set_follows_a_polled_count_and_its_growing_total() -> None:
    err = io.StringIO()
    bar = Progress("transfers", mode=Mode.LINES, unit="partitions", stream=err,
                   clock=lambda: 0.0)
    bar.set(3, total=10)
    bar.set(9, total=12)
    bar.close()
    assert "9/12" in err.getvalue() and err.getvalue().count("\n") == 1


def test_a_closed_counter_prints_nothing_more_and_an_empty_total_is_no_error() -> None:
    now = [0.0]
    err = io.StringIO()
    bar = Progress("trees rebuilt", mode=Mode.LINES, total=0, unit="trees", rate=False,
                   stream=err, interval=1.0, clock=lambda: now[0])
    bar.set(0, 0)
    bar.close()
    now[0] = 100.0
    bar.set(5, 5)
    [line] = err.getvalue().splitlines()  # the close; nothing after it
    assert line.startswith("trees rebuilt: |") and line.endswith("| 0/0 trees [00:00]")


def test_off_draws_nothing_and_write_goes_to_stdout(capsys) -> None:
    with Progress("load", mode=Mode.OFF, total=10) as bar:
        bar.update(10)
        bar.write("result")
    out, err = capsys.readouterr()
    assert out == "result\n" and err == ""


def test_bar_mode_draws_on_the_terminal_and_results_stay_on_stdout(tty, capsys) -> None:
    stream, master = tty
    with Progress("load", mode=Mode.BAR, total=40, unit="lines", stream=stream) as bar:
        for _ in range(40):
            bar.update(1)
        bar.write("a result line", file=sys.stdout)
    stream.flush()
    drawn = read_pty(master)
    assert "load: 100%" in drawn and "40/40" in drawn
    out, err = capsys.readouterr()
    assert out == "a result line\n" and err == ""
