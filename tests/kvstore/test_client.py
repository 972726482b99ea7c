"""kvstore/client.py: the sync and async clients against a real 3-node cluster, and the
pure answer reading they share (kvstore/client_core.py).

Dynamo §4.4 / §6 (reconciliation by the client): every sibling reaches the caller, a
resolver picks one, and a write with the read's context collapses them on the server.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from kvstore.client import AsyncClient, Client
from kvstore.client_core import GetResponse, node_list, read_get, read_write
from kvstore.errors import (
    InvalidContext,
    InvalidRequest,
    NodeUnavailable,
    QuorumFailed,
    SiblingLimitExceeded,
)
from kvstore.http_codec import encode_multipart
from lockservice.sequencer import LockMode, Sequencer
from tests.kvstore.api_cluster import free_base_port, running_cluster

EVERY = bytes(range(256))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    with running_cluster(tmp_path_factory.mktemp("client") / "c", nodes=3) as c:
        yield c


def dead_node() -> str:
    return f"127.0.0.1:{free_base_port(1)}"


# -- against real nodes --------------------------------------------------------------------

def test_binary_keys_and_values_round_trip(cluster) -> None:
    with Client(cluster.names) as kv:
        for key in (EVERY, EVERY[::-1], b"\x00", b".", b"/", b"%2F", b"k" * 1024):
            kv.put(key, EVERY + key)
            got = kv.get(key)
            assert got.values == [EVERY + key] and got.value == EVERY + key
            assert not got.deleted and got.context


def test_concurrent_writes_give_siblings_and_a_resolver_merges_them(cluster) -> None:
    a, b = Client([cluster.names[0]]), Client([cluster.names[2]])
    with a, b:
        a.put(b"cart", b"milk")
        seen = a.get(b"cart").context
        a.put(b"cart", b"milk,eggs", seen)
        b.put(b"cart", b"milk,bread", seen)
        got = b.get(b"cart")
        assert sorted(got.values) == [b"milk,bread", b"milk,eggs"]
        with pytest.raises(ValueError, match="2 siblings"):
            _ = got.value

        def union(values: list[bytes]) -> bytes:
            return b",".join(sorted({i for v in values for i in v.split(b",")}))
        with Client(cluster.names, resolver=union) as resolving:
            merged = resolving.get(b"cart")
            assert merged.values == [b"bread,eggs,milk"] and merged.resolved_from == 2
            resolving.put(b"cart", merged.value, merged.context)
        assert a.get(b"cart").values == [b"bread,eggs,milk"]


def test_delete_with_context_leaves_a_tombstone(cluster) -> None:
    with Client(cluster.names) as kv:
        kv.put(b"gone", b"soon")
        kv.delete(b"gone", kv.get(b"gone").context)
        got = kv.get(b"gone")
        assert got == GetResponse([], got.context, True) and got.context
        assert kv.get(b"never") == GetResponse([], b"", False)


def test_errors_come_back_typed_and_change_nothing(cluster) -> None:
    with Client(cluster.names) as kv:
        kv.put(b"victim", b"safe")
        with pytest.raises(InvalidContext):
            kv.put(b"victim", b"x", b"AZB")
        with pytest.raises(InvalidRequest, match=r"r must be an integer in 1\.\.3"):
            kv.get(b"victim", r=4)
        with pytest.raises(InvalidRequest, match="larger than the 1048576 bytes"):
            kv.put(b"victim", b"x" * ((1 << 20) + 1))
        with pytest.raises(InvalidRequest, match="no lock service"):
            kv.put(b"victim", b"x", sequencer=Sequencer("job", LockMode.SHARED, 1, 2).to_token())
        with pytest.raises(InvalidRequest, match="not a sequencer token"):
            kv.put(b"victim", b"x", sequencer="forged")
        with pytest.raises(InvalidRequest):
            kv.put(b"", b"x")
        with pytest.raises(TypeError):
            kv.put(b"victim", "text")  # type: ignore[arg-type]
        assert kv.get(b"victim").values == [b"safe"]


def test_sibling_cap_refuses_with_a_typed_error(cluster) -> None:
    with Client(cluster.names) as kv:
        for i in range(100):
            kv.put(b"crowded", b"v%d" % i)  # blind writes: each one a sibling
        with pytest.raises(SiblingLimitExceeded) as caught:
            kv.put(b"crowded", b"one too many")
        assert caught.value.limit == 100
        assert len(kv.get(b"crowded").values) == 100


def test_failover_skips_nodes_that_cannot_be_reached(cluster) -> None:
    with Client([dead_node(), dead_node(), cluster.names[1]], timeout=5) as kv:
        kv.put(b"failover", b"ok")
        assert kv.get(b"failover").values == [b"ok"]
    with Client([dead_node(), dead_node()], timeout=2) as kv:
        with pytest.raises(NodeUnavailable, match="cannot connect"):
            kv.get(b"failover")
        with pytest.raises(NodeUnavailable):
            kv.put(b"failover", b"lost")


def test_a_node_that_never_answers_times_out_then_reads_fail_over(cluster) -> None:
    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        mute = f"127.0.0.1:{silent.getsockname()[1]}"
        with Client([mute, cluster.names[0]], timeout=0.5) as kv:
            assert kv.get(b"victim-of-nothing").values == []  # answered by the second node
        with Client([mute, cluster.names[0]], timeout=0.5) as kv, \
                pytest.raises(NodeUnavailable, match="may still have been applied"):
            kv.put(b"slow", b"v")  # a sent write is never retried elsewhere
        with Client(cluster.names) as kv:
            assert kv.get(b"slow").values == []  # and indeed it was not applied anywhere


def test_ring_health_and_status(cluster) -> None:
    with Client(cluster.names) as kv:
        assert kv.health()["status"] == "ok"
        assert {m["name"] for m in kv.ring()["members"]} == set(cluster.names)
        assert kv.status()["members"] == 3


def test_async_client_does_the_same(cluster) -> None:
    async def scenario() -> None:
        async with AsyncClient([dead_node(), *cluster.names]) as kv:
            await kv.put(b"async:" + EVERY, EVERY)
            assert (await kv.get(b"async:" + EVERY)).values == [EVERY]
            seen = (await kv.get(b"async")).context
            await asyncio.gather(kv.put(b"async", b"a", seen), kv.put(b"async", b"b", seen))
            both = await kv.get(b"async")
            assert sorted(both.values) == [b"a", b"b"]
            await kv.delete(b"async", both.context)
            assert (await kv.get(b"async")).deleted
            with pytest.raises(InvalidContext):
                await kv.delete(b"async", "AZB")
            assert (await kv.ring())["ring_size"] == 256
        async with AsyncClient([dead_node()], timeout=2) as dead:
            with pytest.raises(NodeUnavailable):
                await dead.get(b"x")
    asyncio.run(scenario())


# -- pure answer reading ---------------------------------------------------------------------

def test_node_addresses_are_checked() -> None:
    assert node_list("a:1, b:2") == ["a:1", "b:2"]
    assert node_list(["http://h:9"]) == ["h:9"]
    for bad in ("nohost", "h:0", "h:99999", "ftp://h:1", "h:1/path", ""):
        with pytest.raises(InvalidRequest):
            node_list([bad] if bad else bad)


def test_answers_read_into_responses_and_errors() -> None:
    headers = {"X-Ringlock-Context": "AQ"}
    assert read_get(200, headers, b"v", "n", None) == GetResponse([b"v"], b"AQ")
    content_type, body = encode_multipart([b"x", b"y"])
    got = read_get(300, {**headers, "Content-Type": content_type}, body, "n", None)
    assert got.values == [b"x", b"y"]
    picked = read_get(300, {"Content-Type": content_type}, body, "n", max)
    assert picked.values == [b"y"] and picked.resolved_from == 2
    with pytest.raises(NodeUnavailable, match="malformed"):
        read_get(300, {"Content-Type": content_type}, body[:-3], "n", None)
    quorum = (b'{"error": "quorum", "message": "m", "op": "put", "needed": 2, "got": 1,'
              b' "indeterminate": true}')
    with pytest.raises(QuorumFailed) as caught:
        read_write(503, {"Content-Type": "application/json"}, quorum, "n")
    assert caught.value.indeterminate
    with pytest.raises(NodeUnavailable, match="HTTP 502"):
        read_write(502, {}, b"<html>", "n")
    with pytest.raises(TypeError, match="resolver must return bytes"):
        read_get(300, {"Content-Type": content_type}, body, "n", lambda vs: "text")
