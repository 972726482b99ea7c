"""History records: JSON lines round trip, pairing rules, hostile lines."""

from __future__ import annotations

import io

import pytest

from chaos.history import INF, HistoryError, OpType, Record, pair, read, write


def test_records_round_trip_through_json_lines(tmp_path):
    records = [Record(OpType.INVOKE, 1, "cas", 10, "k", [1, 2], {"node": "n1"}),
               Record(OpType.FAIL, 1, "cas", 12, "k", None)]
    buf = io.StringIO()
    write(records, buf)
    path = tmp_path / "history.jsonl"
    path.write_text(buf.getvalue() + "\n")
    assert list(read(path)) == records


def test_pairing_gives_each_invoke_its_completion():
    ops = pair([
        Record(OpType.INVOKE, 1, "write", 0, "k", 5),
        Record(OpType.INVOKE, 2, "read", 1, "k"),
        Record(OpType.OK, 2, "read", 3, "k", 5),
        Record(OpType.INFO, 1, "write", 4, "k"),
        Record(OpType.INVOKE, 1, "write", 5, "k", 6),  # never completed
    ])
    assert [(o.process, o.type, o.start, o.end, o.result) for o in ops] == [
        (1, OpType.INFO, 0, INF, None), (2, OpType.OK, 1, 3, 5), (1, OpType.INFO, 5, INF, None)]


@pytest.mark.parametrize("records, message", [
    ([Record(OpType.INVOKE, 1, "read", 0), Record(OpType.INVOKE, 1, "read", 1)], "twice"),
    ([Record(OpType.OK, 1, "read", 0)], "without an invoke"),
    ([Record(OpType.INVOKE, 1, "read", 0), Record(OpType.OK, 1, "write", 1)], "invoked"),
    ([Record(OpType.INVOKE, 1, "read", 5), Record(OpType.OK, 1, "read", 1)], "before"),
])
def test_pairing_refuses_impossible_histories(records, message):
    with pytest.raises(HistoryError, match=message):
        pair(records)


@pytest.mark.parametrize("line", [
    "not json", "[1, 2]", '{"type": "invoke"}',
    '{"type": "maybe", "process": 1, "f": "r", "time": 0}',
    '{"type": "ok", "process": "1", "f": "r", "time": 0}',
    '{"type": "ok", "process": 1, "f": "r", "time": 1.5}',
])
def test_hostile_lines_name_their_line_number(tmp_path, line):
    path = tmp_path / "h.jsonl"
    path.write_text('{"type":"invoke","process":1,"f":"r","time":0}\n' + line + "\n")
    with pytest.raises(HistoryError, match=r"h\.jsonl:2:"):
        list(read(path))
