"""The Raft wire codec: every value of raft/messages.py to msgpack bytes and back.

The one edge module that turns typed values into bytes (STYLE.md section 8). Each dataclass
is a msgpack array of its fields in declaration order (docs/raft.md, "Wire format"); enums
are their integer values; `bytes` fields are msgpack bin. Decoding is strict: exact array
lengths, exact Python types (a bool is not an int, a str is not bytes), non-negative 64-bit
integers, known enum values and bounded sizes; anything else raises `CodecError` naming the
field. Nothing is ever coerced.

A request body on the Raft endpoint is `[WIRE_VERSION, [message, ...]]`.
"""

from __future__ import annotations

from typing import Any

import msgpack

from raft.messages import (
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    Snapshot,
    SnapshotMeta,
)

WIRE_VERSION = 1  # on the wire: do not change without a new version number
MAX_U64 = (1 << 64) - 1
MAX_BODY_BYTES = 8 << 20  # one Raft request body; larger bodies are refused (413)
MAX_MESSAGES_PER_BODY = 4096  # a batch to one peer is far smaller in practice
MAX_ENTRIES_PER_MESSAGE = 65536
MAX_MEMBERS = 1024  # voters + learners in one ConfState
MAX_CONTEXT_BYTES = 1024  # READ_INDEX request ids and the transfer marker are tiny


class CodecError(ValueError):
    """Bytes that are not a well-formed encoding of the expected value.

    The message names the field and what was wrong; the endpoint returns it as a 400 body.
    """


# -- encoding ----------------------------------------------------------------------------


def _members(ids: frozenset[int]) -> list[int]:
    return sorted(ids)


def conf_state_to_obj(cs: ConfState) -> list[Any]:
    return [_members(cs.voters), _members(cs.learners), _members(cs.voters_outgoing)]


def snapshot_meta_to_obj(meta: SnapshotMeta) -> list[Any]:
    return [meta.index, meta.term, conf_state_to_obj(meta.conf_state)]


def entry_to_obj(e: Entry) -> list[Any]:
    return [e.term, e.index, int(e.type), e.data]


def message_to_obj(m: Message) -> list[Any]:
    return [
        int(m.type),
        m.to,
        m.sender,
        m.term,
        m.log_term,
        m.index,
        [entry_to_obj(e) for e in m.entries],
        m.commit,
        m.reject,
        m.reject_hint,
        m.hint_term,
        m.context,
        None if m.snapshot is None else snapshot_meta_to_obj(m.snapshot),
        m.offset,
        m.data,
        m.done,
    ]


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def encode_messages(messages: list[Message] | tuple[Message, ...]) -> bytes:
    """One request body: `[WIRE_VERSION, [message, ...]]`."""
    return _pack([WIRE_VERSION, [message_to_obj(m) for m in messages]])


def encode_message(m: Message) -> bytes:
    return _pack(message_to_obj(m))


def encode_entry(e: Entry) -> bytes:
    return _pack(entry_to_obj(e))


def encode_hard_state(hs: HardState) -> bytes:
    return _pack([hs.term, hs.vote, hs.commit])


def encode_snapshot_meta(meta: SnapshotMeta) -> bytes:
    return _pack(snapshot_meta_to_obj(meta))


def encode_snapshot(s: Snapshot) -> bytes:
    return _pack([snapshot_meta_to_obj(s.meta), s.data])


# -- decoding ----------------------------------------------------------------------------


def _unpack(data: bytes, what: str, max_bytes: int) -> Any:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CodecError(f"{what}: expected bytes, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise CodecError(f"{what}: {len(data)} bytes is over the limit of {max_bytes}")
    try:
        return msgpack.unpackb(
            bytes(data),
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_bin_len=max_bytes,
            max_str_len=1024,
            max_array_len=max(MAX_ENTRIES_PER_MESSAGE, MAX_MESSAGES_PER_BODY),
            max_map_len=16,  # only so a map gets the clear "expected an array" error
            max_ext_len=0,
        )
    except CodecError:
        raise
    except Exception as exc:  # msgpack raises several unrelated types on bad input
        raise CodecError(f"{what}: not valid msgpack ({type(exc).__name__}: {exc})") from None


def _array(obj: Any, n: int, what: str) -> list[Any]:
    if type(obj) is not list:
        raise CodecError(f"{what}: expected an array of {n}, got {type(obj).__name__}")
    if len(obj) != n:
        raise CodecError(f"{what}: expected an array of {n} fields, got {len(obj)}")
    return obj


def _u64(obj: Any, what: str) -> int:
    if type(obj) is not int:
        raise CodecError(f"{what}: expected an integer, got {type(obj).__name__}")
    if not 0 <= obj <= MAX_U64:
        raise CodecError(f"{what}: {obj} is outside 0..2^64-1")
    return obj


def _bool(obj: Any, what: str) -> bool:
    if type(obj) is not bool:
        raise CodecError(f"{what}: expected a boolean, got {type(obj).__name__}")
    return obj


def _bytes(obj: Any, what: str, limit: int) -> bytes:
    if type(obj) is not bytes:
        raise CodecError(f"{what}: expected bytes, got {type(obj).__name__}")
    if len(obj) > limit:
        raise CodecError(f"{what}: {len(obj)} bytes is over the limit of {limit}")
    return obj


def _members_from(obj: Any, what: str) -> frozenset[int]:
    if type(obj) is not list:
        raise CodecError(f"{what}: expected an array of node ids, got {type(obj).__name__}")
    if len(obj) > MAX_MEMBERS:
        raise CodecError(f"{what}: {len(obj)} members is over the limit of {MAX_MEMBERS}")
    ids = [_u64(x, f"{what}[{i}]") for i, x in enumerate(obj)]
    if any(x == 0 for x in ids):
        raise CodecError(f"{what}: node id 0 is not a member")
    out = frozenset(ids)
    if len(out) != len(ids):
        raise CodecError(f"{what}: duplicate node id")
    return out


def conf_state_from_obj(obj: Any, what: str = "conf_state") -> ConfState:
    v, learners, out = _array(obj, 3, what)
    return ConfState(
        voters=_members_from(v, f"{what}.voters"),
        learners=_members_from(learners, f"{what}.learners"),
        voters_outgoing=_members_from(out, f"{what}.voters_outgoing"),
    )


def snapshot_meta_from_obj(obj: Any, what: str = "snapshot") -> SnapshotMeta:
    index, term, cs = _array(obj, 3, what)
    return SnapshotMeta(
        index=_u64(index, f"{what}.index"),
        term=_u64(term, f"{what}.term"),
        conf_state=conf_state_from_obj(cs, f"{what}.conf_state"),
    )


def entry_from_obj(obj: Any, what: str = "entry", max_data: int = MAX_BODY_BYTES) -> Entry:
    term, index, etype, data = _array(obj, 4, what)
    etype = _u64(etype, f"{what}.type")
    try:
        kind = EntryType(etype)
    except ValueError:
        raise CodecError(f"{what}.type: unknown entry type {etype}") from None
    return Entry(
        term=_u64(term, f"{what}.term"),
        index=_u64(index, f"{what}.index"),
        type=kind,
        data=_bytes(data, f"{what}.data", max_data),
    )


def message_from_obj(obj: Any, what: str = "message") -> Message:
    f = _array(obj, 16, what)
    mtype = _u64(f[0], f"{what}.type")
    try:
        kind = MessageType(mtype)
    except ValueError:
        raise CodecError(f"{what}.type: unknown message type {mtype}") from None
    entries_obj = f[6]
    if type(entries_obj) is not list:
        raise CodecError(f"{what}.entries: expected an array, got {type(entries_obj).__name__}")
    if len(entries_obj) > MAX_ENTRIES_PER_MESSAGE:
        raise CodecError(f"{what}.entries: {len(entries_obj)} entries is over the limit")
    entries = tuple(
        entry_from_obj(e, f"{what}.entries[{i}]") for i, e in enumerate(entries_obj)
    )
    snap = None if f[12] is None else snapshot_meta_from_obj(f[12], f"{what}.snapshot")
    to = _u64(f[1], f"{what}.to")
    sender = _u64(f[2], f"{what}.sender")
    if to == 0 or sender == 0:
        raise CodecError(f"{what}: node id 0 is not a valid sender or recipient")
    return Message(
        type=kind,
        to=to,
        sender=sender,
        term=_u64(f[3], f"{what}.term"),
        log_term=_u64(f[4], f"{what}.log_term"),
        index=_u64(f[5], f"{what}.index"),
        entries=entries,
        commit=_u64(f[7], f"{what}.commit"),
        reject=_bool(f[8], f"{what}.reject"),
        reject_hint=_u64(f[9], f"{what}.reject_hint"),
        hint_term=_u64(f[10], f"{what}.hint_term"),
        context=_bytes(f[11], f"{what}.context", MAX_CONTEXT_BYTES),
        snapshot=snap,
        offset=_u64(f[13], f"{what}.offset"),
        data=_bytes(f[14], f"{what}.data", MAX_BODY_BYTES),
        done=_bool(f[15], f"{what}.done"),
    )


def decode_messages(body: bytes, max_bytes: int = MAX_BODY_BYTES) -> list[Message]:
    """Decode one request body; raises `CodecError` on anything but a well-formed batch."""
    obj = _unpack(body, "body", max_bytes)
    version, msgs = _array(obj, 2, "body")
    if _u64(version, "body.version") != WIRE_VERSION:
        raise CodecError(f"body.version: unsupported wire version {version}")
    if type(msgs) is not list:
        raise CodecError(f"body.messages: expected an array, got {type(msgs).__name__}")
    if len(msgs) > MAX_MESSAGES_PER_BODY:
        raise CodecError(f"body.messages: {len(msgs)} messages is over the limit")
    return [message_from_obj(m, f"messages[{i}]") for i, m in enumerate(msgs)]


def decode_message(data: bytes) -> Message:
    return message_from_obj(_unpack(data, "message", MAX_BODY_BYTES))


def decode_entry(data: bytes, max_bytes: int = 1 << 30) -> Entry:
    return entry_from_obj(_unpack(data, "entry", max_bytes), max_data=max_bytes)


def decode_hard_state(data: bytes) -> HardState:
    term, vote, commit = _array(_unpack(data, "hard_state", 64), 3, "hard_state")
    return HardState(
        term=_u64(term, "hard_state.term"),
        vote=_u64(vote, "hard_state.vote"),
        commit=_u64(commit, "hard_state.commit"),
    )


def decode_snapshot_meta(data: bytes) -> SnapshotMeta:
    return snapshot_meta_from_obj(_unpack(data, "snapshot_meta", 1 << 20))


def decode_snapshot(data: bytes, max_bytes: int = 1 << 31) -> Snapshot:
    meta, payload = _array(_unpack(data, "snapshot", max_bytes), 2, "snapshot")
    return Snapshot(
        meta=snapshot_meta_from_obj(meta, "snapshot.meta"),
        data=_bytes(payload, "snapshot.data", max_bytes),
    )
