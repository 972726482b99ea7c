"""HintStore (kvstore/hints.py): durable hints a fallback holds (Dynamo §4.6)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from kvstore import vclock
from kvstore.errors import InvalidRequest, InvalidSiblingSet
from kvstore.hints import HintStore
from kvstore.lsm import Engine
from kvstore.vclock import Dot, Sibling, SiblingSet, VersionVector

EMPTY = VersionVector()
O1, O2 = "127.0.0.1:7001", "127.0.0.1:7002"
C = "127.0.0.1:7003"  # the coordinator whose writes the hints carry


def _write(value: bytes, node: str = C, base: SiblingSet | None = None,
           ctx: VersionVector = EMPTY) -> SiblingSet:
    return vclock.update(base or SiblingSet(), ctx, node, value, timestamp=1)


def test_4_6_hints_are_durable_and_survive_reopen(tmp_path: Path) -> None:
    async def main() -> None:
        hints = await HintStore.open(tmp_path, sync="always")
        states = {b"k%d" % i: _write(b"v%d" % i) for i in range(30)}
        for key, state in states.items():
            assert await hints.add(O1 if key < b"k2" else O2, key, state) == state
        counts = (hints.count(O1), hints.count(O2))
        await hints.close()
        hints = await HintStore.open(tmp_path)
        try:
            assert (hints.count(O1), hints.count(O2)) == counts
            assert hints.count() == 30 and hints.owners() == {O1, O2}
            got = dict(await hints.pending(O1, 100)) | dict(await hints.pending(O2, 100))
            assert got == states
        finally:
            await hints.close()

    asyncio.run(main())


def test_4_6_a_second_hint_for_the_same_pair_is_synced_in(tmp_path: Path) -> None:
    async def main() -> None:
        hints = await HintStore.open(tmp_path, sync="none")
        try:
            first = _write(b"a")
            second = _write(b"b", node=O2)  # concurrent with the first
            await hints.add(O1, b"k", first)
            both = await hints.add(O1, b"k", second)
            assert sorted(both.values) == [b"a", b"b"]
            assert hints.count(O1) == 1
            newer = _write(b"c", base=first, ctx=first.clock)  # supersedes "a" only
            assert sorted((await hints.add(O1, b"k", newer)).values) == [b"b", b"c"]
            again = await hints.add(O1, b"k", first)  # old news: the hint stays as it was
            assert sorted(again.values) == [b"b", b"c"]
            assert sorted((await hints.get(b"k")).values) == [b"b", b"c"]
        finally:
            await hints.close()

    asyncio.run(main())


def test_4_6_get_syncs_every_owners_hint_for_the_key_and_nothing_else(
        tmp_path: Path) -> None:
    async def main() -> None:
        hints = await HintStore.open(tmp_path, sync="none")
        try:
            x, y = _write(b"x"), _write(b"y", node=O2)
            await hints.add(O1, b"key", x)
            await hints.add(O2, b"key", y)
            await hints.add(O1, b"key2", _write(b"other"))  # longer key, same prefix
            await hints.add(O1, b"ke", _write(b"short"))
            assert sorted((await hints.get(b"key")).values) == [b"x", b"y"]
            assert (await hints.get(b"ke")).values == [b"short"]
            assert await hints.get(b"absent") == SiblingSet()
            assert await hints.get(b"\xff" * 8) == SiblingSet()
        finally:
            await hints.close()

    asyncio.run(main())


def test_pending_pages_in_key_order_and_only_for_that_owner(tmp_path: Path) -> None:
    async def main() -> None:
        hints = await HintStore.open(tmp_path, sync="none")
        try:
            keys = sorted(b"p%03d" % i for i in range(25))
            for k in keys:
                await hints.add(O1, k, _write(k))
            await hints.add(O1 + "0", b"zzz", _write(b"z"))  # owner name with O1's prefix
            await hints.add(O2, b"p000", _write(b"o2"))
            page = await hints.pending(O1, 10)
            assert [k for k, _ in page] == keys[:10]
            assert all(s.values == [k] for k, s in page)
            assert len(await hints.pending(O1, 1000)) == 25
            assert await hints.pending("127.0.0.1:9999", 10) == []
            with pytest.raises(ValueError):
                await hints.pending(O1, 0)
        finally:
            await hints.close()

    asyncio.run(main())


def test_4_6_remove_only_deletes_a_hint_that_did_not_change(tmp_path: Path) -> None:
    async def main() -> None:
        hints = await HintStore.open(tmp_path, sync="none")
        try:
            first = _write(b"a")
            await hints.add(O1, b"k", first)
            await hints.add(O1, b"j", first)
            [(_, delivered), _] = await hints.pending(O1, 2)
            grown = await hints.add(O1, b"j", _write(b"late", node=O2))  # arrives meanwhile
            assert await hints.remove(O1, b"j", first) is False
            assert await hints.get(b"j") == grown and hints.count(O1) == 2
            assert await hints.remove(O1, b"k", delivered) is True
            assert await hints.remove(O1, b"k", delivered) is False
            assert await hints.remove(O2, b"j", grown) is False  # not O2's hint
            assert await hints.remove(O1, b"j", grown) is True
            assert hints.count() == 0 and hints.owners() == set()
            assert await hints.pending(O1, 10) == [] and await hints.get(b"j") == SiblingSet()
            assert hints.stats()["keys_locked"] == 0
        finally:
            await hints.close()
        reopened = await HintStore.open(tmp_path)
        assert reopened.count() == 0
        await reopened.close()

    asyncio.run(main())


def test_concurrent_adds_for_one_pair_lose_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        hints = await HintStore.open(tmp_path, sync="none")
        try:
            states = [_write(b"%d" % i, node=f"n{i}") for i in range(40)]
            await asyncio.gather(*(hints.add(O1, b"k", s) for s in states))
            got = await hints.get(b"k")
            assert sorted(got.values) == sorted(b"%d" % i for i in range(40))
            assert hints.count(O1) == 1
        finally:
            await hints.close()

    asyncio.run(main())


def test_bad_arguments_raise_and_change_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        hints = await HintStore.open(tmp_path, sync="none")
        try:
            ok = _write(b"v")
            for owner, key in (("", b"k"), ("x" * 256, b"k"), (O1, b""), (O1, b"k" * 70000)):
                with pytest.raises(InvalidRequest):
                    await hints.add(owner, key, ok)
            with pytest.raises(TypeError):
                await hints.add(O1, "k", ok)  # type: ignore[arg-type]
            with pytest.raises(TypeError):
                await hints.add(O1, b"k", {"not": "a state"})  # type: ignore[arg-type]
            forged = SiblingSet(EMPTY, (Sibling(Dot(O2, 3), b"x"),))
            with pytest.raises(InvalidSiblingSet):
                await hints.add(O1, b"k", forged)
            assert hints.count() == 0 and await hints.get(b"k") == SiblingSet()
        finally:
            await hints.close()

    asyncio.run(main())


def test_hostile_hint_bytes_raise_and_are_never_served(tmp_path: Path) -> None:
    async def main() -> None:
        hints = await HintStore.open(tmp_path, sync="none")
        await hints.add(O1, b"k", _write(b"v"))
        await hints.close()
        with Engine.open(str(tmp_path), sync="always") as db:
            db.put(b"k\x00\x01k" + O1.encode(), b"\x01garbage")
        hints = await HintStore.open(tmp_path)
        try:
            with pytest.raises(InvalidSiblingSet):
                await hints.get(b"k")
            with pytest.raises(InvalidSiblingSet):
                await hints.pending(O1, 10)
            with pytest.raises(InvalidSiblingSet):
                await hints.add(O1, b"k", _write(b"w"))
            with pytest.raises(InvalidSiblingSet):
                await hints.remove(O1, b"k", _write(b"v"))
            assert hints.count(O1) == 1
        finally:
            await hints.close()
        with Engine.open(str(tmp_path), sync="always") as db:
            db.delete(b"k\x00\x01k" + O1.encode())  # an index record with no hint
        hints = await HintStore.open(tmp_path)
        try:
            with pytest.raises(InvalidSiblingSet, match="holds no hint"):
                await hints.pending(O1, 10)
        finally:
            await hints.close()
        with Engine.open(str(tmp_path), sync="always") as db:
            db.put(b"o\x09abc", b"")  # index record whose owner runs past its end
        with pytest.raises(InvalidSiblingSet, match="index record"):
            await HintStore.open(tmp_path)

    asyncio.run(main())


_CRASH_CHILD = r"""
import asyncio, sys
from kvstore import vclock
from kvstore.hints import HintStore

async def main(path):
    hints = await HintStore.open(path, sync="always")
    i = 0
    while True:
        key = b"h%d" % i
        state = vclock.update(vclock.SiblingSet(), vclock.VersionVector(), "127.0.0.1:7003",
                              b"%d" % i, timestamp=i)
        await hints.add("127.0.0.1:7001", key, state)
        sys.stdout.write(key.hex() + "\n")
        sys.stdout.flush()
        i += 1

asyncio.run(main(sys.argv[1]))
"""


def test_4_6_a_hint_acknowledged_under_sync_always_survives_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "crash"
    proc = subprocess.Popen([sys.executable, "-c", _CRASH_CHILD, str(path)],
                            stdout=subprocess.PIPE, cwd=Path(__file__).resolve().parents[2])
    acked = []
    try:
        assert proc.stdout is not None
        for _ in range(150):
            line = proc.stdout.readline()
            assert line, "the writer died before it acknowledged 150 hints"
            acked.append(bytes.fromhex(line.decode().strip()))
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    async def main() -> None:
        hints = await HintStore.open(path)
        try:
            assert hints.count(O1) >= len(acked)
            pending = dict(await hints.pending(O1, 100_000))
            for key in acked:
                assert pending[key].values == [key[1:]]
                assert (await hints.get(key)).values == [key[1:]]
        finally:
            await hints.close()

    asyncio.run(main())
