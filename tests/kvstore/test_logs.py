"""Structured logs and request ids (issue 9, Observability; kvstore/logs.py).

The formatter and the id check are pure; the rest runs three real nodes with
`--log-format json --log-level DEBUG` and reads their stderr logs.
"""

from __future__ import annotations

import json
import logging
import re

import pytest

from kvstore import logs
from tests.cluster import Cluster, wait_for

HEX_ID = re.compile(r"[0-9a-f]{16}")


# -- pure -----------------------------------------------------------------------------------


def _record(message: str = "hello %s", args: tuple = ("world",)) -> logging.LogRecord:
    return logging.LogRecord("kvstore.test", logging.WARNING, __file__, 1, message, args, None)


def test_a_json_line_has_the_documented_fields() -> None:
    record = _record()
    logs.ContextFilter("127.0.0.1:1").filter(record)
    line = json.loads(logs.JsonFormatter().format(record))
    assert set(line) == {"time", "level", "logger", "message", "node"}  # no id outside a request
    assert (line["level"], line["logger"], line["message"], line["node"]) == (
        "WARNING", "kvstore.test", "hello world", "127.0.0.1:1")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])


def test_a_message_with_newlines_and_quotes_stays_one_json_line() -> None:
    record = _record("a %r\nsecond line \"quoted\"", (b"\x00\xff",))
    logs.ContextFilter("n").filter(record)
    text = logs.JsonFormatter().format(record)
    assert "\n" not in text
    assert json.loads(text)["message"] == "a b'\\x00\\xff'\nsecond line \"quoted\""


def test_request_ids_are_short_printable_tokens() -> None:
    assert logs.valid("abc-123_DEF.4:5")
    assert logs.valid("x" * logs.MAX_ID)
    for bad in ("", "x" * (logs.MAX_ID + 1), "with space", "tab\there", "nul\x00",
                "caf\u00e9", "new\nline", "{\"json\": 1}"):
        assert not logs.valid(bad), bad
    assert HEX_ID.fullmatch(logs.new_id())


# -- real nodes -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with Cluster(tmp_path_factory.mktemp("logs"), size=3,
                 extra_args=["--log-format", "json", "--log-level", "DEBUG"]) as c:
        yield c


def lines_of(cluster: Cluster, name: str) -> list[dict]:
    """The node's JSON log lines; every line but the ready line must parse."""
    node = cluster.node(name)
    out = []
    for line in node.log.read_text("utf-8").splitlines():
        if line == f"ringlock node {name} ready":
            continue
        out.append(json.loads(line))
    return out


def ids_on(cluster: Cluster, name: str) -> set[str]:
    return {line["request_id"] for line in lines_of(cluster, name) if "request_id" in line}


def test_every_log_line_is_json_with_the_documented_fields(cluster) -> None:
    for name in cluster.names:
        lines = lines_of(cluster, name)
        assert lines
        for line in lines:
            assert {"time", "level", "logger", "message", "node"} <= set(line), line
            assert line["node"] == name
            assert line["level"] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def test_one_request_id_is_found_on_the_coordinator_and_a_replica(cluster) -> None:
    coordinator, *others = cluster.names
    status, headers, _ = cluster.http(coordinator, "PUT", "/kv/logs-key?w=3", b"v",
                                      {"X-Request-Id": "trace-put-7"})
    assert status == 204
    assert headers["X-Request-Id"] == "trace-put-7"
    wait_for(lambda: "trace-put-7" in ids_on(cluster, coordinator), what="coordinator's line")
    # W=3: every replica merged the write under the coordinator's id.
    for other in others:
        wait_for(lambda o=other: "trace-put-7" in ids_on(cluster, o), what=f"{other}'s line")
        merges = [line for line in lines_of(cluster, other)
                  if line.get("request_id") == "trace-put-7"]
        assert any("/internal/v1/" in line["message"] for line in merges), merges


def test_an_id_is_made_at_the_edge_when_the_client_sends_none(cluster) -> None:
    coordinator, replica = cluster.names[1], cluster.names[2]
    status, headers, _ = cluster.http(coordinator, "PUT", "/kv/logs-other?w=3", b"v")
    assert status == 204
    rid = headers["X-Request-Id"]
    assert HEX_ID.fullmatch(rid)
    wait_for(lambda: rid in ids_on(cluster, replica), what="the made id on a replica")


@pytest.mark.parametrize("given", ["A" * 300, "evil id\twith spaces", "caf\u00e9-latin1",
                                   "{\"level\": \"ERROR\"}"])
def test_an_invalid_request_id_is_replaced_and_never_logged(cluster, given) -> None:
    node = cluster.names[0]
    status, headers, _ = cluster.http(node, "GET", "/kv/logs-key",
                                      headers={"X-Request-Id": given})
    assert status == 200
    rid = headers["X-Request-Id"]
    assert rid != given and HEX_ID.fullmatch(rid)
    wait_for(lambda: rid in ids_on(cluster, node), what="the replacement id in the log")
    for name in cluster.names:
        text = cluster.node(name).log.read_bytes()
        assert given.encode("latin-1", "replace") not in text
        assert given.encode("utf-8") not in text


def test_a_request_id_with_control_characters_is_refused_before_any_handler(cluster) -> None:
    """aiohttp's parser answers 400 to control characters in a header value; nothing of
    the value reaches a log line, and the node keeps serving."""
    node = cluster.names[0]
    given = "bad\x01id-ctl"
    status, _, _ = cluster.http(node, "GET", "/kv/logs-key", headers={"X-Request-Id": given})
    assert status == 400
    assert cluster.http(node, "GET", "/kv/logs-key")[0] == 200
    wait_for(lambda: any("Invalid header value" in line["message"]
                         for line in lines_of(cluster, node)), what="the refusal's line")
    refusals = [line for line in lines_of(cluster, node) if line["logger"] == "aiohttp.server"]
    assert refusals and all(line["level"] == "WARNING" and "exc" not in line
                            for line in refusals), refusals
    for name in cluster.names:
        text = cluster.node(name).log.read_bytes()
        assert given.encode("latin-1") not in text
        assert given.encode("utf-8") not in text


def test_a_plain_line_outside_a_request_has_no_id_suffix() -> None:
    record = _record()
    logs.ContextFilter("n").filter(record)
    line = logging.Formatter(logs.PLAIN).format(record)
    assert line.endswith(" WARNING kvstore.test: hello world")
