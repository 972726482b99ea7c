"""The saved trees of one node: DIR/aae/trees and its CLEAN mark (see trees.py for when).

File DIR/aae/trees (version 1; do not change its meaning):
    b"RLAE" | version u8 = 1 | count u32 |
    count * (built_at f64 (Unix seconds) | length u32 | merkle.MerkleTree.to_bytes()) |
    blake2b-16 of everything before it          (integers big-endian)

`save` writes a temp file, fsyncs it, renames it over `trees`, fsyncs the folder, and
only then creates `CLEAN` (fsynced), so CLEAN never names a file that is not complete.
`load` returns the trees only when CLEAN exists, and deletes CLEAN (fsynced) in any case:
from then on a crash leaves no CLEAN and every tree is rebuilt. A damaged file (each
check below raises InvalidTree), or trees of another shape or ring size, is ignored with
a warning: the caller rebuilds.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
from pathlib import Path

from antientropy.errors import InvalidTree
from antientropy.merkle import MerkleTree

logger = logging.getLogger(__name__)

MAGIC, VERSION = b"RLAE", 1  # on disk: do not change
_HEAD = struct.Struct(">4sBI")
_ENTRY = struct.Struct(">dI")
_SUM = 16


def load(folder: Path, shape: tuple[int, int, int]) -> dict[int, tuple[float, MerkleTree]]:
    """partition -> (built_at, tree) of trees of `shape` (partition bits, fanout, depth)
    saved by a clean close; {} otherwise."""
    folder.mkdir(parents=True, exist_ok=True)
    clean, path = folder / "CLEAN", folder / "trees"
    if not clean.exists():
        return {}
    try:
        return parse(path.read_bytes(), shape) if path.exists() else {}
    except (OSError, InvalidTree) as exc:
        logger.warning("ignoring saved anti-entropy trees (%s); rebuilding them", exc)
        return {}
    finally:
        clean.unlink()
        _fsync_dir(folder)


def parse(data: bytes, shape: tuple[int, int, int]) -> dict[int, tuple[float, MerkleTree]]:
    if len(data) < _HEAD.size + _SUM or hashlib.blake2b(
            data[:-_SUM], digest_size=_SUM).digest() != data[-_SUM:]:
        raise InvalidTree("trees file is truncated or its checksum does not match")
    magic, version, count = _HEAD.unpack_from(data)
    if magic != MAGIC or version != VERSION:
        raise InvalidTree(f"trees file has bad magic or version {data[:5]!r}")
    out, at = {}, _HEAD.size
    for _ in range(count):
        if at + _ENTRY.size > len(data) - _SUM:
            raise InvalidTree("trees file ends inside an entry")
        built_at, length = _ENTRY.unpack_from(data, at)
        at += _ENTRY.size
        tree = MerkleTree.from_bytes(data[at:at + length])
        at += length
        if (tree.partition_bits, tree.fanout, tree.depth) != shape:
            raise InvalidTree("saved trees have another shape or ring size")
        out[tree.partition] = (built_at, tree)
    if at != len(data) - _SUM:
        raise InvalidTree("trees file has bytes after its last entry")
    return out


def save(folder: Path, trees: list[tuple[float, bytes]]) -> None:
    """Write (built_at, MerkleTree.to_bytes()) pairs, then mark the folder CLEAN."""
    body = bytearray(_HEAD.pack(MAGIC, VERSION, len(trees)))
    for built_at, data in trees:
        body += _ENTRY.pack(built_at, len(data)) + data
    body += hashlib.blake2b(bytes(body), digest_size=_SUM).digest()
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "trees.tmp"
    with open(tmp, "wb") as f:
        f.write(body)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, folder / "trees")
    _fsync_dir(folder)  # the new trees are in place before CLEAN can be
    with open(folder / "CLEAN", "wb") as f:
        os.fsync(f.fileno())
    _fsync_dir(folder)
    logger.info("saved %d anti-entropy trees", len(trees))


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = ["MAGIC", "VERSION", "load", "parse", "save"]
