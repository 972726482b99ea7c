"""The manifest (manifest.py, docs/formats.md#manifest): edits survive a reopen, a torn
final edit is cut, damage is reported, and CURRENT moves atomically."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvstore.lsm import filenames
from kvstore.lsm.errors import CorruptionError
from kvstore.lsm.filesystem import FaultInjectionFileSystem, RealFileSystem
from kvstore.lsm.manifest import (
    ManifestState,
    ManifestWriter,
    decode_edit,
    encode_edit,
    read_current,
    recover,
)
from kvstore.lsm.version import FileMeta, Version, VersionEdit

keys = st.binary(min_size=1, max_size=20)
metas = st.builds(FileMeta, st.integers(1, 2**40), st.integers(0, 2**40), keys, keys,
                  st.integers(0, 2**56 - 1), st.integers(0, 2**56 - 1), st.integers(0, 2**32))
edits = st.builds(
    VersionEdit,
    log_number=st.none() | st.integers(0, 2**40),
    next_file_number=st.none() | st.integers(0, 2**40),
    last_seq=st.none() | st.integers(0, 2**56 - 1),
    compact_pointers=st.lists(st.tuples(st.integers(0, 6), keys), max_size=3),
    deleted=st.lists(st.tuples(st.integers(0, 6), st.integers(0, 2**40)), max_size=3),
    added=st.lists(st.tuples(st.integers(0, 6), metas), max_size=3),
)


@settings(max_examples=200, deadline=None)
@given(edits)
def test_edit_encoding_round_trips(edit: VersionEdit) -> None:
    assert decode_edit(encode_edit(edit)) == edit


def test_unknown_tag_and_short_fields_are_corruption() -> None:
    with pytest.raises(CorruptionError, match="unknown field tag 99"):
        decode_edit(b"\x63\x01", path="M", offset=7)
    good = encode_edit(VersionEdit(added=[(0, FileMeta(5, 10, b"abc", b"xyz", 1, 2, 3))]))
    for cut in range(1, len(good)):
        with pytest.raises(CorruptionError) as info:
            decode_edit(good[:cut], path="M", offset=7)
        assert info.value.path == "M"


def new_state() -> ManifestState:
    return ManifestState(Version.empty(4))


def test_edits_are_recovered_after_reopen(tmp_path) -> None:
    fs = RealFileSystem()
    folder = str(tmp_path)
    state = new_state()
    writer = ManifestWriter(fs, folder)
    writer.start(state)
    edit = VersionEdit(log_number=7, last_seq=99,
                       added=[(0, FileMeta(state.new_file_number(), 1, b"a", b"b", 1, 9, 2))])
    state.apply(edit)
    writer.append(state, edit)
    edit2 = VersionEdit(deleted=[(0, 2)], added=[(1, FileMeta(2, 1, b"a", b"b", 1, 9, 2))],
                        compact_pointers=[(1, b"b")])
    state.apply(edit2)
    writer.append(state, edit2)
    writer.close()
    got = recover(fs, folder, 4)
    assert got is not None
    assert got.log_number == 7 and got.last_seq == 99
    assert [f.number for f in got.version.levels[1]] == [2]
    assert got.version.levels[0] == ()
    assert got.compact_pointers == {1: b"b"}
    assert got.next_file_number >= 3


def test_a_folder_without_current_is_new(tmp_path) -> None:
    assert recover(RealFileSystem(), str(tmp_path), 4) is None


def test_torn_final_edit_is_cut_and_earlier_edits_kept(tmp_path) -> None:
    fs = RealFileSystem()
    folder = str(tmp_path)
    state = new_state()
    writer = ManifestWriter(fs, folder)
    writer.start(state)
    edit = VersionEdit(added=[(0, FileMeta(10, 1, b"a", b"b", 1, 1, 1))])
    state.apply(edit)
    writer.append(state, edit)
    path = os.path.join(folder, filenames.manifest_name(writer.number))
    size = os.path.getsize(path)
    writer.close()
    os.truncate(path, size - 3)
    got = recover(fs, folder, 4)
    assert got is not None and got.version.levels[0] == ()


def test_flipped_byte_before_an_intact_edit_is_corruption(tmp_path) -> None:
    fs = RealFileSystem()
    folder = str(tmp_path)
    state = new_state()
    writer = ManifestWriter(fs, folder)
    writer.start(state)
    for n in range(3):
        edit = VersionEdit(added=[(0, FileMeta(10 + n, 1, b"a" * 50, b"b" * 50, 1, 1, 1))])
        state.apply(edit)
        writer.append(state, edit)
    writer.close()
    path = os.path.join(folder, filenames.manifest_name(writer.number))
    data = bytearray(Path(path).read_bytes())
    data[len(data) // 2] ^= 0x40
    Path(path).write_bytes(bytes(data))
    with pytest.raises(CorruptionError) as info:
        recover(fs, folder, 4)
    assert info.value.path == path


def test_current_naming_garbage_or_a_missing_manifest_is_corruption(tmp_path) -> None:
    fs = RealFileSystem()
    folder = str(tmp_path)
    current = os.path.join(folder, "CURRENT")
    Path(current).write_bytes(b"../../etc/passwd\n")
    with pytest.raises(CorruptionError, match="does not name a manifest"):
        recover(fs, folder, 4)
    Path(current).write_bytes(b"MANIFEST-000009")  # no newline: a torn write
    with pytest.raises(CorruptionError):
        recover(fs, folder, 4)
    Path(current).write_bytes(b"MANIFEST-000009\n")
    with pytest.raises(CorruptionError, match="does not exist"):
        recover(fs, folder, 4)


@pytest.mark.parametrize("crash_after", range(8))
def test_crash_during_manifest_switch_reopens_old_or_new(tmp_path, crash_after) -> None:
    """Crash after each file-system step of starting a second manifest: the folder always
    recovers to the first manifest's state or the second's, never a mixture or nothing."""
    folder = str(tmp_path)
    base = RealFileSystem()
    state = new_state()
    first = ManifestWriter(base, folder)
    first.start(state)
    edit = VersionEdit(added=[(0, FileMeta(50, 1, b"a", b"b", 1, 1, 1))], last_seq=5)
    state.apply(edit)
    first.append(state, edit)
    first.close()

    class Crashing(FaultInjectionFileSystem):
        steps = 0

        def _step(self) -> None:
            if self.steps == crash_after:
                raise RuntimeError("power cut")
            self.steps += 1

        def open_writable(self, path):
            self._step()
            return super().open_writable(path)

        def rename(self, src, dst):
            self._step()
            super().rename(src, dst)

        def sync_dir(self, d):
            self._step()
            super().sync_dir(d)

    fs = Crashing()
    second = ManifestWriter(fs, folder)
    state.last_seq = 6
    try:
        second.start(state)
        finished = True
    except RuntimeError:
        finished = False
    fs.crash()
    got = recover(RealFileSystem(), folder, 4)
    assert got is not None
    assert [f.number for f in got.version.levels[0]] == [50]
    assert got.last_seq in (5, 6)
    if finished:
        assert got.last_seq == 6
    assert read_current(RealFileSystem(), folder) is not None


def test_worked_example_in_formats_md_matches_the_encoder() -> None:
    """docs/formats.md#manifest shows an edit in hex; the encoder writes exactly it."""
    doc = (Path(__file__).resolve().parents[3] / "docs" / "formats.md").read_text()
    section = doc[doc.index("## Manifest"):]
    example = section[section.index("### Worked example"):section.index("### Trade-offs")]
    hex_bytes = []
    for line in example.splitlines():
        if not line.startswith("    "):
            continue
        for token in line.split():
            if len(token) != 2 or any(c not in "0123456789abcdef" for c in token):
                break
            hex_bytes.append(token)
    edit = VersionEdit(log_number=5, next_file_number=6, last_seq=7,
                       added=[(0, FileMeta(4, 1234, b"a", b"k", 1, 7, 7))])
    assert encode_edit(edit) == bytes.fromhex("".join(hex_bytes))
    assert decode_edit(bytes.fromhex("".join(hex_bytes))) == edit
