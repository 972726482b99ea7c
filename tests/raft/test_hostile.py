"""Hostile input against a real node process: malformed, oversized, wrong-typed and unknown
Raft messages, and bad client requests, are answered 4xx with a reason and change nothing
(term, vote, commit, log and state machine are the same afterwards, and the node still
works)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator

import aiohttp
import msgpack
import pytest

from raft import codec
from raft.messages import Entry, Message, MessageType
from raft.transport import CONTENT_TYPE, RAFT_PATH, STREAM_PATH
from tests.raft.procs import ProcCluster, request


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcCluster]:
    """A one-member cluster: its term, vote and log move only when we make them."""
    c = ProcCluster(tmp_path_factory.mktemp("hostile"), [1])
    try:
        c.start(1)
        c.leader()
        c.propose("seed", 1)
        yield c
    finally:
        c.close()


def snapshot_of(c: ProcCluster) -> tuple[dict, dict]:
    st = c.status(1)
    assert st is not None
    keep = ("term", "vote", "commit", "last_index", "applied", "snapshot_index", "voters")
    return {k: st[k] for k in keep}, c.dump(1)


def valid_obj(**changes) -> list:
    m = Message(MessageType.APPEND, to=1, sender=2, term=99, index=5,
                entries=(Entry(99, 6, data=b"evil"),), commit=6)
    obj = codec.message_to_obj(m)
    for field, value in changes.items():
        obj[int(field[1:])] = value
    return obj


def body(*msgs) -> bytes:
    return msgpack.packb([codec.WIRE_VERSION, list(msgs)], use_bin_type=True)


RAFT_CASES = [
    ("not msgpack", b"\xc1\xc1\xc1", CONTENT_TYPE, 400, "not valid msgpack"),
    ("empty body", b"", CONTENT_TYPE, 400, "not valid msgpack"),
    ("truncated", body(valid_obj())[:-3], CONTENT_TYPE, 400, "not valid msgpack"),
    ("trailing bytes", body(valid_obj()) + b"\x01", CONTENT_TYPE, 400, "not valid msgpack"),
    ("a map", msgpack.packb({"type": 5}), CONTENT_TYPE, 400, "expected an array of 2"),
    ("wrong version", msgpack.packb([7, []]), CONTENT_TYPE, 400, "unsupported wire version"),
    ("unknown type", body(valid_obj(f0=200)), CONTENT_TYPE, 400, "unknown message type 200"),
    ("term as string", body(valid_obj(f3="99")), CONTENT_TYPE, 400, "got str"),
    ("negative term", body(valid_obj(f3=-1)), CONTENT_TYPE, 400, "outside 0..2^64-1"),
    ("float index", body(valid_obj(f5=1.0)), CONTENT_TYPE, 400, "got float"),
    ("reject not bool", body(valid_obj(f8=0)), CONTENT_TYPE, 400, "expected a boolean"),
    ("entry data as str", body(valid_obj(f6=[[99, 6, 0, "x"]])), CONTENT_TYPE, 400,
     "expected bytes, got str"),
    ("unknown entry type", body(valid_obj(f6=[[99, 6, 9, b""]])), CONTENT_TYPE, 400,
     "unknown entry type 9"),
    ("short message", body(valid_obj()[:10]), CONTENT_TYPE, 400, "expected an array of 16"),
    ("extra field", body([*valid_obj(), 1]), CONTENT_TYPE, 400, "expected an array of 16"),
    ("for another node", body(valid_obj(f1=3)), CONTENT_TYPE, 400, "is for node 3"),
    ("from itself", body(valid_obj(f2=1)), CONTENT_TYPE, 400, "from this node"),
    ("good then bad", body(valid_obj(), valid_obj(f3="x")), CONTENT_TYPE, 400, "messages[1]"),
    ("entries not after index", body(valid_obj(f5=9)), CONTENT_TYPE, 400,
     "entry 0 has index 6, expected 10"),
    ("entry from the future", body(valid_obj(f6=[[100, 6, 0, b""]])), CONTENT_TYPE, 400,
     "out of order"),
    ("snapshot chunk without a snapshot", body(valid_obj(f0=9, f6=[])), CONTENT_TYPE, 400,
     "SNAPSHOT without a valid snapshot"),
    ("json content type", body(valid_obj()), "application/json", 415, "content type"),
    ("oversized", b"\x00" * (codec.MAX_BODY_BYTES + 1), CONTENT_TYPE, 413, "over"),
    ("deep nesting", b"\x91" * 5000 + b"\x00", CONTENT_TYPE, 400, "body"),
]


@pytest.mark.parametrize(("name", "data", "ctype", "status", "fragment"), RAFT_CASES,
                         ids=[c[0] for c in RAFT_CASES])
def test_raft_endpoint_refuses_bad_input_and_changes_nothing(
    node: ProcCluster, name: str, data: bytes, ctype: str, status: int, fragment: str
) -> None:
    before = snapshot_of(node)
    code, reply = request(node.ports[1], "POST", RAFT_PATH, data, {"Content-Type": ctype})
    assert code == status, reply
    assert fragment in reply.decode()
    assert snapshot_of(node) == before
    assert node.propose(f"after-{name}", 1) > 0  # and it still works


CLIENT_CASES = [
    ("POST", "/propose", b"{not json", 400, "not JSON"),
    ("POST", "/propose", b"[1, 2]", 400, "JSON object"),
    ("POST", "/propose", b'{"key": 5}', 400, "key must be"),
    ("POST", "/propose", b'{"op": "drop", "key": "a"}', 400, "unknown op"),
    ("POST", "/propose", b'{"key": "' + b"x" * (2 << 20) + b'"}', 413, "over"),
    ("GET", "/read", None, 400, "key is required"),
    ("POST", "/members", b'{"action": "nuke", "id": 2}', 400, "want {action"),
    ("POST", "/members", b'{"action": "remove", "id": "2"}', 400, "want {action"),
    ("POST", "/members", b'{"action": "remove", "id": 9}', 400, ""),
]


@pytest.mark.parametrize(("method", "path", "data", "status", "fragment"), CLIENT_CASES)
def test_client_endpoints_refuse_bad_requests(
    node: ProcCluster, method: str, path: str, data: bytes | None, status: int, fragment: str
) -> None:
    before = snapshot_of(node)
    code, reply = request(node.ports[1], method, path, data,
                          {"Content-Type": "application/json"})
    assert code == status, reply
    assert fragment in reply.decode()
    assert snapshot_of(node) == before


def test_a_valid_message_still_gets_through(node: ProcCluster) -> None:
    """The control case: a well-formed message from an unknown-term peer is accepted (204),
    so the refusals above come from the checks, not from a closed endpoint."""
    hb = Message(MessageType.HEARTBEAT_RESP, to=1, sender=2, term=0)
    code, _ = request(node.ports[1], "POST", RAFT_PATH, codec.encode_messages([hb]),
                      {"Content-Type": CONTENT_TYPE})
    assert code == 204
    assert json.loads(request(node.ports[1], "GET", "/status")[1])["is_leader"]


STREAM_CASES = [
    ("not msgpack", b"\xc1\xc1", "400 body: not valid msgpack", 1008),
    ("wrong type", body(valid_obj(f3="99")), "400 messages[0].term", 1008),
    ("for another node", body(valid_obj(f1=3)), "400 messages[0] is for node 3", 1008),
    ("text frame", "hello", "415 frames must be binary", 1003),
]


@pytest.mark.parametrize(("name", "frame", "reply", "code"), STREAM_CASES,
                         ids=[c[0] for c in STREAM_CASES])
def test_stream_endpoint_refuses_bad_frames_and_changes_nothing(
    node: ProcCluster, name: str, frame: bytes | str, reply: str, code: int
) -> None:
    before = snapshot_of(node)

    async def exchange() -> tuple[str, int | None]:
        async with aiohttp.ClientSession() as s, s.ws_connect(
            f"http://127.0.0.1:{node.ports[1]}{STREAM_PATH}"
        ) as ws:
            if isinstance(frame, str):
                await ws.send_str(frame)
            else:
                await ws.send_bytes(frame)
            msg = await ws.receive(timeout=10)
            await ws.receive(timeout=10)  # the close that follows
            return msg.data, ws.close_code

    text, close_code = asyncio.run(exchange())
    assert text.startswith(reply), text
    assert close_code == code
    assert snapshot_of(node) == before
    assert node.propose(f"after-stream-{name}", 1) > 0


def test_stream_endpoint_closes_on_an_oversized_frame(node: ProcCluster) -> None:
    before = snapshot_of(node)

    async def exchange() -> int | None:
        async with aiohttp.ClientSession() as s, s.ws_connect(
            f"http://127.0.0.1:{node.ports[1]}{STREAM_PATH}", max_msg_size=0
        ) as ws:
            # The server may close while the frame is still being written.
            with contextlib.suppress(ConnectionError):
                await ws.send_bytes(b"\x00" * (codec.MAX_BODY_BYTES + 1))
            while not ws.closed:
                await ws.receive(timeout=10)
            return ws.close_code

    # The server refuses at the frame header (1009, message too big) and drops the
    # connection; a client still writing the 8 MiB sees the drop first (1006).
    assert asyncio.run(exchange()) in (1009, 1006)
    assert snapshot_of(node) == before
    assert node.propose("after-oversized-frame", 1) > 0


def test_well_formed_nonsense_from_a_stranger_does_not_take_the_node_down(
    node: ProcCluster,
) -> None:
    """Messages that decode but make no sense (from a node outside the configuration, at
    the current term, with absurd indexes) are the core's to ignore; the node keeps
    leading and committing."""
    term = node.status(1)["term"]
    big = (1 << 64) - 1
    junk = [
        Message(MessageType.APPEND_RESP, to=1, sender=9, term=term, index=big),
        Message(MessageType.APPEND, to=1, sender=9, term=term, index=big - 1, log_term=term,
                entries=(Entry(term, big, data=b"x"),), commit=big),
        Message(MessageType.HEARTBEAT_RESP, to=1, sender=9, term=term, context=b"nope"),
        Message(MessageType.SNAPSHOT_RESP, to=1, sender=9, term=term, offset=big),
        Message(MessageType.READ_INDEX_RESP, to=1, sender=9, term=term, index=big,
                context=b"unknown"),
        Message(MessageType.VOTE_RESP, to=1, sender=9, term=term),
        Message(MessageType.TIMEOUT_NOW, to=1, sender=9, term=term),
        Message(MessageType.READ_INDEX, to=1, sender=9, term=term, context=b"r"),
    ]
    code, _ = request(node.ports[1], "POST", RAFT_PATH, codec.encode_messages(junk),
                      {"Content-Type": CONTENT_TYPE})
    assert code == 204
    assert node.propose("after-nonsense", 1) > 0
    st = node.status(1)
    assert st["is_leader"] and st["voters"] == [1]
