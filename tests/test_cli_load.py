"""`kv load` (kvstore/cli_load.py, kvstore/load_lines.py): bulk load into a real cluster.

The line parser is pure and tested on its own against hostile input (malformed JSON, a
missing or empty key, oversized values, binary junk, endless lines). Against one real
3-node cluster: every loaded key reads back with its exact bytes and the summary counts
match; a bad line stops the load with its line number, or is skipped with --skip-bad;
failed puts make the exit status 1 and are listed with their reasons; with --progress the
bar's final line is on stderr and stdout holds only the summary (as a pipe and as a real
terminal). Most runs call `kvstore.cli.main` in this process; the stream tests run `kv`.
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvstore.cli import main
from kvstore.client import Client
from kvstore.load_lines import BadLine, Format, RawLine, detect, max_line, parse, read_lines
from tests.kvstore.api_cluster import request, running_cluster

LIMIT = 1 << 20


def raw(data: bytes, number: int = 1) -> RawLine:
    return RawLine(number, data, len(data) + 1, False)


# -- the line format (pure) ---------------------------------------------------------------

def test_json_lines_take_text_or_base64_keys_and_values() -> None:
    r = parse(raw(b'{"key": "caf\\u00e9", "value": "v \\t 1"}', 7), Format.JSON, LIMIT)
    assert (r.line, r.key, r.value) == (7, "café".encode(), b"v \t 1")
    junk = bytes(range(256))
    line = json.dumps({"key_b64": base64.b64encode(b"\x00k").decode(),
                       "value_b64": base64.b64encode(junk).decode()}).encode()
    r = parse(raw(line), Format.JSON, LIMIT)
    assert (r.key, r.value) == (b"\x00k", junk)
    assert parse(raw(b'{"key": "k", "value": ""}'), Format.JSON, LIMIT).value == b""


def test_tsv_lines_are_raw_bytes_split_at_the_first_tab() -> None:
    r = parse(raw(b"k\xff1\tv\talso value\r"), Format.TSV, LIMIT)
    assert (r.key, r.value) == (b"k\xff1", b"v\talso value")
    assert parse(raw(b"k\t"), Format.TSV, LIMIT).value == b""


def test_blank_lines_are_skipped_and_the_format_is_detected() -> None:
    assert parse(raw(b"   "), Format.JSON, LIMIT) is None
    assert parse(raw(b""), Format.TSV, LIMIT) is None
    assert detect(b'  {"key": 1}') is Format.JSON
    assert detect(b"k\tv") is Format.TSV


@pytest.mark.parametrize(("line", "reason"), [
    (b'{"key": "k", "value": ', "not JSON"),
    (b'["k", "v"]', "must be an object"),
    (b'{"value": "v"}', "exactly one of 'key'"),
    (b'{"key": "k"}', "exactly one of 'value'"),
    (b'{"key": "", "value": "v"}', "key must be 1..1024 bytes, not 0"),
    (b'{"key": "k", "key_b64": "aw==", "value": "v"}', "exactly one of 'key'"),
    (b'{"key": 12, "value": "v"}', "'key' must be a string"),
    (b'{"key": "k", "value_b64": "not base64!"}', "not valid base64"),
    (b'{"key": "k", "value": "v", "ttl": 5}', "unknown field(s) 'ttl'"),
    (b'{"key": "\\ud800", "value": "v"}', "not valid Unicode"),
    (b'{"key": "k", "value": "\xff\xfe junk"}', "not UTF-8"),
    (b'{"key": ' + b"[" * 100_000, "nested too deeply"),
    (b"[" * 100_000, "nested too deeply"),
    (b"\x00\x01\x02\xff\xfe binary junk", "no TAB"),
    (b"\tvalue without a key", "key must be 1..1024 bytes, not 0"),
    (b"k" * 1025 + b"\tv", "key must be 1..1024 bytes, not 1025"),
])
def test_hostile_lines_are_refused_with_their_line_number(line: bytes, reason: str) -> None:
    fmt = Format.JSON if line[:1] in (b"{", b"[") else Format.TSV
    with pytest.raises(BadLine) as exc:
        parse(raw(line, 42), fmt, LIMIT)
    assert exc.value.line == 42 and reason in exc.value.reason
    assert str(exc.value).startswith("line 42: ")


def test_a_byte_order_mark_at_the_start_is_dropped() -> None:
    data = b'\xef\xbb\xbf{"key": "k", "value": "v"}\n\xef\xbb\xbfk2\tv\n'
    first, second = read_lines(io.BytesIO(data), max_line(LIMIT))
    assert detect(first.data) is Format.JSON and parse(first, Format.JSON, LIMIT).key == b"k"
    assert first.size == 3 + len(first.data) + 1  # the bytes consumed count the mark
    assert second.data.startswith(b"\xef\xbb\xbf")  # only the input's first bytes


def test_an_oversized_value_is_refused_before_it_is_sent() -> None:
    with pytest.raises(BadLine, match="value of 101 bytes is over the limit of 100"):
        parse(raw(b"k\t" + b"v" * 101), Format.TSV, 100)
    assert parse(raw(b"k\t" + b"v" * 100), Format.TSV, 100).value == b"v" * 100


def test_an_endless_line_is_skipped_in_pieces_and_the_next_one_is_read() -> None:
    limit = max_line(100)
    data = b"a\tb\n" + b"x" * (limit * 3) + b"\nc\td"  # no newline at the very end
    lines = list(read_lines(io.BytesIO(data), limit))
    assert [(r.number, r.too_long) for r in lines] == [(1, False), (2, True), (3, False)]
    assert lines[1].data == b"" and lines[1].size == limit * 3 + 1
    assert lines[2].data == b"c\td"
    with pytest.raises(BadLine, match="longer than"):
        parse(lines[1], Format.TSV, 100)
    exact = b"y" * limit + b"\n"  # exactly at the limit: accepted
    assert [r.data for r in read_lines(io.BytesIO(exact), limit)] == [b"y" * limit]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(list(Format)))
def test_any_bytes_parse_to_a_record_or_a_bad_line_never_a_crash(data, fmt) -> None:
    for line in read_lines(io.BytesIO(data), max_line(100)):
        try:
            record = parse(line, fmt, 100)
        except BadLine as exc:
            assert exc.line == line.number and exc.reason
            continue
        assert record is None or (1 <= len(record.key) <= 1024 and len(record.value) <= 100)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=1024), st.binary(max_size=2000))
def test_every_key_and_value_round_trips_through_a_base64_json_line(key, value) -> None:
    line = json.dumps({"key_b64": base64.b64encode(key).decode(),
                       "value_b64": base64.b64encode(value).decode()}).encode() + b"\n"
    [got] = read_lines(io.BytesIO(line), max_line(LIMIT))
    record = parse(got, detect(got.data), LIMIT)
    assert (record.key, record.value, record.size) == (key, value, len(line))


# -- against a real cluster ---------------------------------------------------------------

@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory):
    with running_cluster(tmp_path_factory.mktemp("load") / "c", nodes=3) as cluster:
        yield cluster.names


@pytest.fixture
def run(capsysbinary, monkeypatch, nodes):
    """`kv ARGS --node ...` in this process: exit code, stdout and stderr as text."""
    def run(*args: str, stdin: bytes = b"") -> SimpleNamespace:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
        code = main([*args, "--node", ",".join(nodes)])
        out, err = capsysbinary.readouterr()
        return SimpleNamespace(returncode=code, stdout=out.decode(), stderr=err.decode())
    return run


def coordinated_puts(node: str) -> float:
    """The puts `node` has coordinated successfully (its /metrics)."""
    _status, _headers, body = request(node, "GET", "/metrics")
    for line in body.decode().splitlines():
        if line.startswith('ringlock_kv_requests_total{op="put",outcome="ok"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def read_back(nodes: list[str], key: bytes) -> list[bytes]:
    with Client(nodes) as kv:
        return kv.get(key).values


def test_every_loaded_key_reads_back_and_the_summary_counts(run, nodes, tmp_path) -> None:
    """Dynamo §4.5: each put is acknowledged by W replicas before it counts as loaded; a
    later line for the same key replaces the earlier one (no sibling)."""
    records = {f"json-{i}".encode(): f"value {i} ✓".encode() for i in range(300)}
    records[b"bin\x00\xff"] = bytes(range(256))
    lines = [json.dumps({"key": k.decode(), "value": v.decode()})
             for k, v in records.items() if not k.startswith(b"bin")]
    lines.insert(10, "")  # blank lines are skipped
    lines.append(json.dumps({"key_b64": base64.b64encode(b"bin\x00\xff").decode(),
                             "value_b64": base64.b64encode(records[b"bin\x00\xff"]).decode()}))
    lines.append(json.dumps({"key": "json-5", "value": "replaced"}))
    records[b"json-5"] = b"replaced"
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n")
    before = [coordinated_puts(node) for node in nodes]
    got = run("load", str(path), "--json", "--concurrency", "16")
    assert got.returncode == 0, got.stderr
    # every node coordinated some of the puts (one client per node, each tries it first)
    assert all(coordinated_puts(node) > b for node, b in zip(nodes, before, strict=True))
    summary = json.loads(got.stdout)
    assert (summary["loaded"], summary["failed"], summary["bad_lines"],
            summary["skipped_blank"]) == (302, 0, 0, 1)
    assert summary["bytes"] == path.stat().st_size and summary["stopped_at_line"] is None
    for key, value in records.items():
        assert read_back(nodes, key) == [value], key


def test_tsv_from_stdin_with_binary_values(run, nodes) -> None:
    data = b"".join(b"tsv-%d\tv\x01\xfe%d\r\n" % (i, i) for i in range(50))
    got = run("load", "-", stdin=data)
    assert got.returncode == 0, got.stderr
    assert got.stdout.startswith("loaded 50, failed 0 in ")
    assert got.stderr == ""
    assert all(read_back(nodes, b"tsv-%d" % i) == [b"v\x01\xfe%d" % i] for i in range(50))


HOSTILE = [
    b'{"key": "h-1", "value": "ok"}',
    b'{"key": "h-2", "value": ',                           # malformed JSON
    b'{"value": "no key"}',                               # missing key
    b'{"key": "", "value": "empty key"}',                 # empty key
    b'{"key": "h-5", "value": "' + b"v" * 2000 + b'"}',   # over --max-value 1000
    b"\x00\xff\xfe\x80 binary junk \x1b[2J",               # not UTF-8
    b'{"key": "h-7", "value": "ok"}',
]


def test_a_bad_line_stops_the_load_with_its_number(run, nodes, tmp_path) -> None:
    path = tmp_path / "hostile.jsonl"
    path.write_bytes(b"\n".join(HOSTILE) + b"\n")
    got = run("load", str(path), "--max-value", "1000", "--concurrency", "1")
    assert got.returncode == 1
    assert "kv load: line 2: not JSON" in got.stderr
    assert "stopped at line 2" in got.stderr and "Traceback" not in got.stderr
    assert got.stdout.startswith("loaded 1, failed 0, 1 bad line in ")
    assert read_back(nodes, b"h-1") == [b"ok"]
    assert read_back(nodes, b"h-7") == []  # after the stop: never sent


def test_skip_bad_reports_every_bad_line_and_loads_the_rest(run, nodes, tmp_path) -> None:
    path = tmp_path / "hostile.jsonl"
    path.write_bytes(b"\n".join(HOSTILE) + b"\n")
    got = run("load", str(path), "--max-value", "1000", "--skip-bad", "--json")
    assert got.returncode == 0, got.stderr
    summary = json.loads(got.stdout)
    assert (summary["loaded"], summary["bad_lines"]) == (2, 5)
    reasons = {b["line"]: b["reason"] for b in summary["bad"]}
    assert sorted(reasons) == [2, 3, 4, 5, 6]
    assert "not JSON" in reasons[2] and "exactly one of 'key'" in reasons[3]
    assert "not 0" in reasons[4] and "over the limit of 1000" in reasons[5]
    assert "not UTF-8" in reasons[6]
    for n in (2, 3, 4, 5, 6):
        assert f"kv load: line {n}: " in got.stderr
    assert read_back(nodes, b"h-7") == [b"ok"] and read_back(nodes, b"h-5") == []


def test_failed_puts_exit_1_and_are_listed_with_reasons(run, nodes, tmp_path) -> None:
    """w larger than N is refused by the node (400): every put fails, none is lost
    silently; the first ten are listed, the rest counted."""
    path = tmp_path / "f.tsv"
    path.write_bytes(b"".join(b"fail-%d\tv\n" % i for i in range(15)))
    got = run("load", str(path), "-w", "9")
    assert got.returncode == 1
    assert got.stdout.startswith("loaded 0, failed 15 in ")
    listed = [ln for ln in got.stderr.splitlines() if "not loaded:" in ln]
    assert len(listed) == 10
    assert all("w must be an integer in 1..3" in ln for ln in listed)
    assert "kv load: line 1: key 'fail-0' not loaded" in got.stderr
    assert "... and 5 more failed puts" in got.stderr
    assert read_back(nodes, b"fail-0") == []


def test_an_unreadable_file_is_one_line_on_stderr(run, tmp_path) -> None:
    got = run("load", str(tmp_path / "missing.jsonl"))
    assert got.returncode == 1 and "No such file" in got.stderr
    assert got.stderr.count("\n") == 1


def kv(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "kvstore.cli", *args], input=stdin,
                          capture_output=True, timeout=120)


def test_forced_progress_ends_on_stderr_and_stdout_stays_clean(run, nodes, tmp_path) -> None:
    """stderr is a pipe here: --progress prints log-style lines, the last one at 100%."""
    path = tmp_path / "p.tsv"
    path.write_bytes(b"".join(b"prog-%d\tv\n" % i for i in range(100)))
    got = kv("--progress", "load", str(path), "--json", "--node", nodes[0])
    assert got.returncode == 0, got.stderr
    summary = json.loads(got.stdout)  # stdout is exactly one JSON object
    assert summary["loaded"] == 100
    last = got.stderr.decode().splitlines()[-1]
    size = path.stat().st_size
    assert last.startswith("load: 100%") and f"{size}/{size}" in last
    plain = run("load", str(path))  # not a terminal, no --progress: nothing on stderr
    assert plain.returncode == 0 and plain.stderr == ""


def test_a_terminal_gets_a_bar_and_stdout_only_the_summary(nodes, tmp_path) -> None:
    master, slave = os.openpty()
    try:
        got = subprocess.run(
            [sys.executable, "-m", "kvstore.cli", "load", "-", "--node", nodes[0]],
            input=b"".join(b"tty-%d\tv\n" % i for i in range(40)), stdout=subprocess.PIPE,
            stderr=slave, timeout=120)
        os.close(slave)
        slave = -1
        drawn = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the writer is gone and everything was read
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    assert got.returncode == 0
    assert got.stdout.decode().startswith("loaded 40, failed 0 in ")
    assert got.stdout.count(b"\n") == 1
    assert b"load: " in drawn and b"40 lines" in drawn


def test_the_reference_is_in_the_help(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["load", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "value_b64" in text and "KEY<TAB>VALUE" in text and "--skip-bad" in text
