"""Leader election on the lock service: campaign, resign, leader, observe, and fencing.

    election = Election(client)                      # client: an open AsyncLockClient
    await election.campaign("scheduler", b"host-a:8080")   # returns once elected
    while election.is_leader:
        await do_leader_work(sequencer=election.sequencer)  # fence downstream writes
    await election.resign()

    async for leader in Election(client).observe("scheduler"):   # Leader or None
        print("leader is now", leader and leader.value)

How it is built. The election named N is the exclusive lock N (whoever holds it leads)
plus the entry N, which the leader writes after winning so that others can read who leads
and where. The entry is ephemeral: it dies with the leader's session, so a crashed leader
vanishes from it when its session expires. It holds JSON: the value (base64), the leader's
sequencer token, generation and session. Exclusion comes from the lock alone (Chubby
§2.4): a leader whose session falls into jeopardy stops being `is_leader` at once, before
the lock could pass to anyone else, and downstream services reject its writes by the
sequencer (lockservice/fencing.py) once a newer leader exists. The entry is only a
directory: it is written with compare-and-set, and observers read it linearizably on every
entry event, so they see each new leader, though possibly not every short-lived one.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from lockservice.async_client import AsyncLockClient
from lockservice.client_errors import ClientError, LockLost, VersionMismatch
from lockservice.events import EventKind
from lockservice.handles import HeldLock

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Leader:
    name: str
    value: bytes
    sequencer: str  # the leader's sequencer token
    generation: int
    session: int


def encode_leader(leader: Leader) -> bytes:
    return json.dumps({"value": base64.b64encode(leader.value).decode(),
                       "sequencer": leader.sequencer, "generation": leader.generation,
                       "session": leader.session}, sort_keys=True).encode()


def decode_leader(name: str, data: bytes) -> Leader:
    """Raises ClientError when the entry is not an election record."""
    try:
        doc = json.loads(data)
        value = base64.b64decode(doc["value"], validate=True)
        fields = (doc["sequencer"], doc["generation"], doc["session"])
        if type(fields[0]) is not str or not all(type(f) is int for f in fields[1:]):
            raise TypeError("wrong field types")
    except (ValueError, KeyError, TypeError) as exc:
        raise ClientError(f"entry {name!r} is not an election record: {exc}") from None
    return Leader(name, value, fields[0], fields[1], fields[2])


class Election:
    """Elections over one client's session. One campaign at a time per Election."""

    def __init__(self, client: AsyncLockClient, *, lock_delay_ms: int | None = None) -> None:
        self.client = client
        self.lock_delay_ms = lock_delay_ms
        self.held: HeldLock | None = None  # while campaigning won
        self.record: Leader | None = None

    # -- leading --------------------------------------------------------------------------

    async def campaign(self, name: str, value: bytes | str, *,
                       timeout: float | None = None) -> Leader:
        """Wait until elected for `name` (up to `timeout` s; LockBusy after), then publish
        `value`. Returns this leader's record."""
        if self.held is not None and not self.held.released:
            raise ClientError(f"already campaigning for {self.held.name!r}; resign first")
        data = value.encode() if isinstance(value, str) else bytes(value)
        held = await self.client.acquire(name, timeout=timeout, lock_delay_ms=self.lock_delay_ms)
        self.held = held
        record = Leader(name, data, held.token, held.generation, held.session)
        try:
            while True:
                held.check()
                current = await self.client.get(name)
                expected = 0 if current is None else current.version
                try:
                    await self.client.put(name, encode_leader(record), expected_version=expected,
                                          ephemeral=True)
                    break
                except VersionMismatch:
                    continue  # an old leader's record changed under us; read again
        except BaseException:
            await self._give_up()
            raise
        self.record = record
        log.info("elected leader of %r (generation %d)", name, held.generation)
        return record

    @property
    def is_leader(self) -> bool:
        """True while this client may act as the leader (lock held, lease healthy)."""
        return self.record is not None and self.held is not None and self.held.valid

    @property
    def sequencer(self) -> str:
        """The leader's sequencer token, to fence its writes; LockLost when not leader."""
        self.check()
        assert self.held is not None
        return self.held.token

    def check(self) -> None:
        if self.held is None or self.record is None:
            raise LockLost("not the leader: no campaign was won")
        self.held.check()

    async def resign(self) -> None:
        """Stop leading: delete the record (if still ours) and release the lock."""
        if self.held is None:
            return
        record, self.record = self.record, None
        if record is not None and self.client.holding():
            current = await self.client.get(record.name)
            if current is not None and _is(record, current.value):
                try:
                    await self.client.delete(record.name, expected_version=current.version)
                except ClientError as exc:
                    log.info("resign: record of %r not deleted: %s", record.name, exc)
        await self._give_up()

    async def _give_up(self) -> None:
        held, self.held = self.held, None
        if held is not None:
            try:
                await self.client.release(held)
            except ClientError as exc:  # the session's end frees it anyway
                log.info("could not release %r: %s", held.name, exc)

    # -- observing ------------------------------------------------------------------------

    async def leader(self, name: str) -> Leader | None:
        """The current leader's record (a linearizable read), or None."""
        entry = await self.client.get(name)
        return None if entry is None else decode_leader(name, entry.value)

    async def observe(self, name: str) -> AsyncIterator[Leader | None]:
        """The leader now, then every change (None while there is none)."""
        watch = await self.client.watch(name)
        try:
            last = await self.leader(name)
            yield last
            async for event in watch:
                if event.name != name or event.kind not in (EventKind.ENTRY_CHANGED,
                                                            EventKind.ENTRY_DELETED):
                    continue
                now = await self.leader(name)
                if now != last:
                    last = now
                    yield now
        finally:
            watch.close()


def _is(record: Leader, data: bytes) -> bool:
    try:
        return decode_leader(record.name, data) == record
    except ClientError:
        return False


__all__ = ["Election", "Leader", "decode_leader", "encode_leader"]
