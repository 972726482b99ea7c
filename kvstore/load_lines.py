"""The input of `kv load`: lines of key/value records, read and checked (pure, no network).

Two line formats; a file is in one of them (`--format`, or `auto`: JSON when the first
line that is not blank starts with `{`, else TSV):

    JSON   {"key": "text", "value": "text"}          key and value as UTF-8 text
           {"key_b64": "...", "value_b64": "..."}    either one in standard base64
           exactly one of key/key_b64 and one of value/value_b64; no other field
    TSV    KEY<TAB>VALUE                              raw bytes up to the first TAB, then
                                                      the rest of the line (a value may
                                                      hold TABs but not a newline)

Lines end with `\\n` (a `\\r` before it is dropped in TSV; JSON ignores it as whitespace);
a UTF-8 byte order mark at the start of the input is dropped.
Blank lines are skipped. Keys are 1..MAX_KEY_BYTES bytes; values at most `max_value` bytes
(the node's limit). A line longer than `max_line(max_value)` is refused without being held
in memory. Every refusal is a `BadLine` naming the line number and the reason; the line
numbers count every line from 1, blank ones included, so an editor finds them.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from kvstore.http_codec import MAX_KEY_BYTES

BOM = b"\xef\xbb\xbf"  # a UTF-8 byte order mark, which some editors put first: dropped


class Format(enum.Enum):
    JSON = "json"
    TSV = "tsv"


@dataclass(frozen=True, slots=True)
class Record:
    line: int    # 1-based line number in the input
    key: bytes
    value: bytes
    size: int    # bytes of the input line, newline included (for progress by bytes)


class BadLine(ValueError):
    """Line `line` of the input cannot be loaded; `reason` says why."""

    def __init__(self, line: int, reason: str, size: int = 0) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line, self.reason, self.size = line, reason, size


@dataclass(frozen=True, slots=True)
class RawLine:
    number: int
    data: bytes      # without the newline; empty when too long
    size: int        # bytes consumed, newline included
    too_long: bool


def max_line(max_value: int) -> int:
    """The longest line that can hold a key and a value of `max_value` bytes: a JSON
    string escapes a byte in at most 6 characters (\\u00XX); base64 needs 4 per 3."""
    return 6 * (max_value + MAX_KEY_BYTES) + 4096


def read_lines(stream: IO[bytes], limit: int) -> Iterator[RawLine]:
    """The lines of a binary stream, each at most `limit` bytes; a longer one is skipped
    to its newline in pieces (never held whole) and yielded with `too_long`."""
    number = 0
    while True:
        chunk = stream.readline(limit + 1)
        if not chunk:
            return
        number += 1
        if len(chunk) <= limit or chunk.endswith(b"\n"):
            data = chunk.rstrip(b"\n")
            if number == 1:
                data = data.removeprefix(BOM)
            yield RawLine(number, data, len(chunk), False)
            continue
        size = len(chunk)
        while chunk and not chunk.endswith(b"\n"):
            chunk = stream.readline(1 << 16)
            size += len(chunk)
        yield RawLine(number, b"", size, True)


def detect(data: bytes) -> Format:
    return Format.JSON if data.lstrip().startswith(b"{") else Format.TSV


def parse(raw: RawLine, fmt: Format, max_value: int) -> Record | None:
    """The record on `raw`, None for a blank line; raises BadLine."""
    if raw.too_long:
        raise BadLine(raw.number, f"line is longer than {max_line(max_value)} bytes", raw.size)
    if not raw.data.strip():
        return None
    try:
        key, value = (_json if fmt is Format.JSON else _tsv)(raw.data)
    except ValueError as exc:
        raise BadLine(raw.number, str(exc), raw.size) from None
    if not 1 <= len(key) <= MAX_KEY_BYTES:
        raise BadLine(raw.number, f"key must be 1..{MAX_KEY_BYTES} bytes, not {len(key)}",
                      raw.size)
    if len(value) > max_value:
        raise BadLine(raw.number, f"value of {len(value)} bytes is over the limit of "
                                  f"{max_value}", raw.size)
    return Record(raw.number, key, value, raw.size)


def _tsv(data: bytes) -> tuple[bytes, bytes]:
    key, tab, value = data.partition(b"\t")
    if not tab:
        raise ValueError("no TAB between key and value (TSV lines are KEY<TAB>VALUE)")
    return key, value.removesuffix(b"\r")


def _json(data: bytes) -> tuple[bytes, bytes]:
    try:
        obj = json.loads(data)
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 (a JSON line is text; binary goes in key_b64/value_b64)"
                         ) from None
    except ValueError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    except RecursionError:  # `[[[[...` a hundred thousand deep
        raise ValueError("not JSON: nested too deeply") from None
    if not isinstance(obj, dict):
        raise ValueError(f"a JSON line must be an object, not {type(obj).__name__}")
    unknown = set(obj) - {"key", "key_b64", "value", "value_b64"}
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(sorted(map(repr, unknown)))}")
    return _field(obj, "key"), _field(obj, "value")


def _field(obj: dict, name: str) -> bytes:
    text, coded = obj.get(name), obj.get(f"{name}_b64")
    if (text is None) == (coded is None):
        raise ValueError(f"needs exactly one of {name!r} and '{name}_b64'")
    if text is not None:
        if not isinstance(text, str):
            raise ValueError(f"{name!r} must be a string, not {type(text).__name__}")
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate escape (\ud800)
            raise ValueError(f"{name!r} is not valid Unicode text") from None
    if not isinstance(coded, str):
        raise ValueError(f"'{name}_b64' must be a base64 string")
    try:
        return base64.b64decode(coded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"'{name}_b64' is not valid base64") from None


__all__ = ["BadLine", "Format", "RawLine", "Record", "detect", "max_line", "parse",
           "read_lines"]
