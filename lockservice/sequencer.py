"""Lock modes and sequencers (Chubby §2.4).

A sequencer names one grant of a lock: the lock's name, the mode, the generation of the
grant and the holding session. Generations come from one counter that increases at every
grant in the whole table, so they strictly increase per lock name, across releases, expiries,
leader changes and snapshots. A downstream service keeps the highest generation it has seen
per lock, or asks `CheckSequencer` whether a sequencer is still current.

Token (what clients pass around, e.g. in the KV store's `X-Ringlock-Sequencer` header):
URL-safe base64 without padding of the msgpack array `[1, name, mode, generation, session]`
(1 is the token version; on the wire: do not change). `from_token` accepts exactly what
`to_token` writes and raises `BadSequencerToken` for anything else.
"""

from __future__ import annotations

import base64
import binascii
import enum
from dataclasses import dataclass

import msgpack

from lockservice.errors import BadSequencerToken

TOKEN_VERSION = 1
MAX_TOKEN_CHARS = 1024  # a 256-byte name plus four small integers fits easily
_MAX_U64 = 2**63 - 1


class LockMode(enum.IntEnum):
    # On the wire and in snapshots: do not change the values.
    EXCLUSIVE = 1
    SHARED = 2


@dataclass(frozen=True, slots=True)
class Sequencer:
    name: str
    mode: LockMode
    generation: int
    session: int

    def to_token(self) -> str:
        raw = msgpack.packb(
            [TOKEN_VERSION, self.name, int(self.mode), self.generation, self.session],
            use_bin_type=True,
        )
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    @classmethod
    def from_token(cls, token: str) -> Sequencer:
        if type(token) is not str or not 0 < len(token) <= MAX_TOKEN_CHARS:
            raise BadSequencerToken(f"a sequencer token is 1..{MAX_TOKEN_CHARS} characters")
        try:
            text = token.encode("ascii")
            raw = base64.urlsafe_b64decode(text + b"=" * (-len(text) % 4))
            value = msgpack.unpackb(raw, raw=False, use_list=True)
        except (UnicodeError, binascii.Error, ValueError, msgpack.UnpackException) as exc:
            raise BadSequencerToken(f"not a sequencer token: {type(exc).__name__}") from None
        if type(value) is not list or len(value) != 5 or value[0] != TOKEN_VERSION:
            raise BadSequencerToken("not a version-1 sequencer token")
        _, name, mode, generation, session = value
        ok = (
            type(name) is str
            and type(mode) is int
            and mode in LockMode._value2member_map_
            and all(type(v) is int and 0 <= v <= _MAX_U64 for v in (generation, session))
        )
        if not ok:
            raise BadSequencerToken("sequencer token fields have the wrong types")
        seq = cls(name, LockMode(mode), generation, session)
        if seq.to_token() != token:  # one spelling per sequencer (no padding, canonical msgpack)
            raise BadSequencerToken("sequencer token is not in canonical form")
        return seq
