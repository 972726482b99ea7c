"""The file-system seam: real files, and a fault-injecting one that can lose what a power
loss could lose (shared/STYLE.md section 6, LevelDB's fault_injection_test)."""

from __future__ import annotations

import threading

import pytest

from kvstore.lsm.errors import EngineClosedError, LockHeldError
from kvstore.lsm.filesystem import FaultInjectionFileSystem, RealFileSystem


@pytest.fixture(params=["real", "fault"])
def fs(request):
    return RealFileSystem() if request.param == "real" else FaultInjectionFileSystem()


def test_write_read_rename_remove(fs, tmp_path) -> None:
    d = str(tmp_path / "db")
    fs.mkdir(d)
    f = fs.open_writable(f"{d}/a")
    f.append(b"hello ")
    f.append(memoryview(b"world"))
    assert f.size == 11
    f.sync()
    f.close()
    assert fs.read_file(f"{d}/a") == b"hello world"
    g = fs.open_appendable(f"{d}/a")
    assert g.size == 11
    g.append(b"!")
    g.close()
    r = fs.open_random_access(f"{d}/a")
    assert r.size == 12
    assert r.read(6, 5) == b"world"
    assert r.read(10, 100) == b"d!"
    r.close()
    with pytest.raises(EngineClosedError):
        r.read(0, 1)
    fs.rename(f"{d}/a", f"{d}/b")
    assert fs.listdir(d) == ["b"]
    assert fs.exists(f"{d}/b") and not fs.exists(f"{d}/a")
    fs.truncate(f"{d}/b", 5)
    assert fs.file_size(f"{d}/b") == 5
    fs.sync_dir(d)
    fs.remove(f"{d}/b")
    assert fs.listdir(d) == []


def test_random_access_is_thread_safe(fs, tmp_path) -> None:
    path = str(tmp_path / "f")
    data = bytes(range(256)) * 64
    (tmp_path / "f").write_bytes(data)
    r = fs.open_random_access(path)
    bad = []

    def reader(seed: int) -> None:
        for i in range(500):
            off = (seed * 7919 + i * 31) % (len(data) - 64)
            if r.read(off, 64) != data[off:off + 64]:
                bad.append(off)

    threads = [threading.Thread(target=reader, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    r.close()
    assert bad == []


def test_lock_excludes_a_second_holder(fs, tmp_path) -> None:
    path = str(tmp_path / "LOCK")
    lock = fs.lock(path)
    with pytest.raises(LockHeldError, match="LOCK"):
        fs.lock(path)
    lock.close()
    with fs.lock(path):
        pass


def test_crash_drops_unsynced_bytes(tmp_path) -> None:
    fs = FaultInjectionFileSystem()
    d = str(tmp_path)
    f = fs.open_writable(f"{d}/log")
    fs.sync_dir(d)
    f.append(b"durable")
    f.sync()
    f.append(b"-lost")
    f.flush()  # in the OS, not on the platter
    fs.crash()
    assert fs.read_file(f"{d}/log") == b"durable"
    with pytest.raises(EngineClosedError):
        f.append(b"x")


def test_crash_drops_unsynced_creation(tmp_path) -> None:
    fs = FaultInjectionFileSystem()
    d = str(tmp_path)
    f = fs.open_writable(f"{d}/new.sst")
    f.append(b"data")
    f.sync()  # the bytes are durable but the directory entry is not
    f.close()
    fs.crash()
    assert fs.listdir(d) == []
    g = fs.open_writable(f"{d}/kept.sst")
    g.append(b"data")
    g.sync()
    g.close()
    fs.sync_dir(d)
    fs.crash()
    assert fs.listdir(d) == ["kept.sst"]
    assert fs.read_file(f"{d}/kept.sst") == b"data"


def test_crash_undoes_unsynced_rename_and_remove(tmp_path) -> None:
    (tmp_path / "CURRENT").write_bytes(b"MANIFEST-1\n")  # existed before: durable
    (tmp_path / "old.sst").write_bytes(b"old table")
    fs = FaultInjectionFileSystem()
    d = str(tmp_path)
    f = fs.open_writable(f"{d}/CURRENT.tmp")
    f.append(b"MANIFEST-2\n")
    f.sync()
    f.close()
    fs.rename(f"{d}/CURRENT.tmp", f"{d}/CURRENT")
    fs.remove(f"{d}/old.sst")
    assert fs.read_file(f"{d}/CURRENT") == b"MANIFEST-2\n"
    fs.crash()
    assert fs.listdir(d) == ["CURRENT", "old.sst"]
    assert fs.read_file(f"{d}/CURRENT") == b"MANIFEST-1\n"
    assert fs.read_file(f"{d}/old.sst") == b"old table"


def test_synced_rename_survives_crash(tmp_path) -> None:
    (tmp_path / "CURRENT").write_bytes(b"MANIFEST-1\n")
    fs = FaultInjectionFileSystem()
    d = str(tmp_path)
    f = fs.open_writable(f"{d}/CURRENT.tmp")
    f.append(b"MANIFEST-2\n")
    f.sync()
    f.close()
    fs.rename(f"{d}/CURRENT.tmp", f"{d}/CURRENT")
    fs.sync_dir(d)
    fs.crash()
    assert fs.listdir(d) == ["CURRENT"]
    assert fs.read_file(f"{d}/CURRENT") == b"MANIFEST-2\n"


def test_rename_of_unsynced_bytes_keeps_only_synced_part(tmp_path) -> None:
    fs = FaultInjectionFileSystem()
    d = str(tmp_path)
    f = fs.open_writable(f"{d}/a.tmp")
    f.append(b"abc")
    f.sync()
    f.append(b"def")
    f.close()
    fs.rename(f"{d}/a.tmp", f"{d}/a")
    fs.sync_dir(d)
    fs.crash()
    assert fs.read_file(f"{d}/a") == b"abc"


def test_injected_sync_failure(tmp_path) -> None:
    fs = FaultInjectionFileSystem()
    f = fs.open_writable(str(tmp_path / "x"))
    f.append(b"abc")
    fs.fail_syncs = True
    with pytest.raises(OSError, match="injected"):
        f.sync()
    fs.fail_syncs = False
    fs.sync_dir(str(tmp_path))
    fs.crash()
    assert fs.read_file(str(tmp_path / "x")) == b""


@pytest.mark.parametrize("mmap_reads", [True, False])
def test_read_random_matches_read(tmp_path, mmap_reads) -> None:
    data = bytes(range(256)) * 40
    (tmp_path / "t").write_bytes(data)
    (tmp_path / "empty").write_bytes(b"")
    fs = RealFileSystem(mmap_reads=mmap_reads)
    r = fs.open_random_access(str(tmp_path / "t"))
    for off, n in [(0, 10), (5000, 4096), (len(data) - 3, 100), (len(data) + 5, 10)]:
        assert r.read_random(off, n) == r.read(off, n) == data[off:off + n]
    r.close()
    with pytest.raises(EngineClosedError):
        r.read_random(0, 1)
    e = fs.open_random_access(str(tmp_path / "empty"))  # nothing to map: pread
    assert e.read_random(0, 10) == b""
    e.close()
