"""One adapter per storage engine: the same operations, each engine's idiomatic settings.

Every adapter offers the operations the workloads need, over chunks of
`storage_child.CHUNK` keys so that key generation stays outside the timed region:

- `put_chunk(keys, values)`, `get_chunk(keys) -> found`, `delete_chunk(keys)`
- `scan(start, end) -> keys seen` (end exclusive)
- `durable_writer() -> (put, close)`: a per-thread writer whose put returns only once the
  write is on disk (sync mode only)
- `settle()` (flush buffered writes), `compact()` (full compaction where the engine has
  one), `close()`, `describe() -> dict` (the settings, for the report)

Settings (issue 3, Benchmark):
- ringlock: `sync="none"` for the bulk workloads, `sync="always"` for the synced mode;
  one `put()` per write (no batching).
- sqlite3: WAL mode, `synchronous=NORMAL`, a `WITHOUT ROWID` table, one transaction per
  chunk of 1,000 writes; synced mode: `synchronous=FULL`, one transaction per write.
- lmdb: one write transaction per 1,000 writes with `sync=False, metasync=False`; one read
  transaction per 1,000 reads; synced mode: `sync=True`, one transaction per write.
- rocksdict: RocksDB defaults plus `write_buffer_size` equal to ringlock's memtable budget,
  WAL on but never synced; synced mode: `WriteOptions.sync = True`.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from typing import Any

DEFAULT_WRITE_BUFFER = 32 * 1024 * 1024
ENGINES = ("ringlock", "sqlite3", "lmdb", "rocksdict")

Writer = tuple[Callable[[bytes, bytes], None], Callable[[], None]]


class EngineUnavailable(RuntimeError):
    """The engine cannot be imported here (not installed, or not written yet)."""


def ringlock_engine_class() -> Any:
    try:
        from kvstore.lsm import Engine  # type: ignore[attr-defined]
    except ImportError as exc:
        raise EngineUnavailable(f"kvstore.lsm.Engine not available yet ({exc})") from exc
    return Engine


def availability(name: str) -> str | None:
    """None if `name` can run here, else the reason it cannot."""
    try:
        if name == "ringlock":
            ringlock_engine_class()
        elif name == "lmdb":
            import lmdb  # noqa: F401
        elif name == "rocksdict":
            import rocksdict  # noqa: F401
        elif name != "sqlite3":
            return f"unknown engine {name!r}"
    except EngineUnavailable as exc:
        return str(exc)
    except ImportError as exc:
        return f"{name} not importable ({exc}); install the bench extra"
    return None


class _PerKeyCalls:
    """The per-key loops of the engines whose handle has put/get/delete: one call per key,
    the same loop for each, so the loop's cost is equal on both sides of a ratio."""

    db: Any

    def put_chunk(self, keys: list[bytes], values: list[bytes]) -> None:
        put = self.db.put
        for key, value in zip(keys, values, strict=True):
            put(key, value)

    def get_chunk(self, keys: list[bytes]) -> int:
        get = self.db.get
        found = 0
        for key in keys:
            if get(key) is not None:
                found += 1
        return found

    def get_one(self, key: bytes) -> bytes | None:
        return self.db.get(key)

    def delete_chunk(self, keys: list[bytes]) -> None:
        delete = self.db.delete
        for key in keys:
            delete(key)


class RinglockAdapter(_PerKeyCalls):
    name = "ringlock"

    def __init__(self, path: str, *, synced: bool, options: dict[str, Any]) -> None:
        engine_class = ringlock_engine_class()
        self.options = dict(options)
        self.db = engine_class.open(path, sync="always" if synced else "none", **self.options)

    def memtable_budget(self) -> int:
        if "memtable_bytes" in self.options:
            return int(self.options["memtable_bytes"])
        try:
            from kvstore.lsm.options import Options

            return int(Options().memtable_bytes)
        except (ImportError, AttributeError):
            return DEFAULT_WRITE_BUFFER

    def describe(self) -> dict[str, Any]:
        return {"options": self.options, "memtable_bytes": self.memtable_budget()}

    def scan(self, start: bytes, end: bytes) -> int:
        seen = 0
        it = self.db.scan(start, end)
        try:
            for _item in it:
                seen += 1
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()
        return seen

    def durable_writer(self) -> Writer:
        return self.db.put, lambda: None

    def settle(self) -> None:
        flush = getattr(self.db, "flush", None)  # memtable to an SSTable, where offered
        if flush is not None:
            flush()

    def compact(self) -> None:
        self.db.compact_range()

    def stats(self) -> dict[str, Any]:
        try:
            stats = self.db.stats()
        except Exception as exc:  # the report must not die on a stats() bug
            return {"error": repr(exc)}
        return stats if isinstance(stats, dict) else {"stats": repr(stats)}

    def close(self) -> None:
        self.db.close()


class Sqlite3Adapter:
    name = "sqlite3"
    PUT = "INSERT OR REPLACE INTO kv (k, v) VALUES (?, ?)"
    GET = "SELECT v FROM kv WHERE k = ?"

    def __init__(self, path: str, *, synced: bool, options: dict[str, Any]) -> None:
        os.makedirs(path, exist_ok=True)
        self.file = os.path.join(path, "kv.sqlite3")
        self.synchronous = "FULL" if synced else "NORMAL"
        self.conn = self._connect()
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS kv (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID"
        )
        self.cur = self.conn.cursor()

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves (autocommit otherwise).
        conn = sqlite3.connect(self.file, isolation_level=None, timeout=60.0)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        return conn

    def describe(self) -> dict[str, Any]:
        return {
            "journal_mode": "WAL",
            "synchronous": self.synchronous,
            "table": "WITHOUT ROWID",
            "writes_per_transaction": 1000 if self.synchronous == "NORMAL" else 1,
            "sqlite_version": sqlite3.sqlite_version,
        }

    def put_chunk(self, keys: list[bytes], values: list[bytes]) -> None:
        cur = self.cur
        cur.execute("BEGIN")
        for key, value in zip(keys, values, strict=True):
            cur.execute(self.PUT, (key, value))
        cur.execute("COMMIT")

    def get_chunk(self, keys: list[bytes]) -> int:
        cur = self.cur
        found = 0
        for key in keys:
            cur.execute(self.GET, (key,))
            if cur.fetchone() is not None:
                found += 1
        return found

    def get_one(self, key: bytes) -> bytes | None:
        row = self.conn.execute(self.GET, (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def delete_chunk(self, keys: list[bytes]) -> None:
        cur = self.cur
        cur.execute("BEGIN")
        for key in keys:
            cur.execute("DELETE FROM kv WHERE k = ?", (key,))
        cur.execute("COMMIT")

    def scan(self, start: bytes, end: bytes) -> int:
        seen = 0
        for _row in self.conn.execute(
            "SELECT k, v FROM kv WHERE k >= ? AND k < ? ORDER BY k", (start, end)
        ):
            seen += 1
        return seen

    def durable_writer(self) -> Writer:
        # One connection per writer thread; each autocommit INSERT is one durable transaction.
        conn = self._connect()

        def put(key: bytes, value: bytes) -> None:
            conn.execute(self.PUT, (key, value))

        return put, conn.close

    def settle(self) -> None:
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def compact(self) -> None:
        # SQLite has no background compaction; checkpoint the WAL into the main file.
        self.settle()

    def stats(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        self.conn.close()


class LmdbAdapter:
    name = "lmdb"

    def __init__(self, path: str, *, synced: bool, options: dict[str, Any]) -> None:
        import lmdb

        num = int(options.get("num", 1_000_000))
        map_size = max(1 << 30, num * 1024)
        self.synced = synced
        self.env = lmdb.open(
            path, map_size=map_size, sync=synced, metasync=synced, max_dbs=0, lock=True
        )

    def describe(self) -> dict[str, Any]:
        import lmdb

        return {"sync": self.synced, "lmdb_version": ".".join(map(str, lmdb.version()))}

    def put_chunk(self, keys: list[bytes], values: list[bytes]) -> None:
        with self.env.begin(write=True) as txn:
            put = txn.put
            for key, value in zip(keys, values, strict=True):
                put(key, value)

    def get_chunk(self, keys: list[bytes]) -> int:
        found = 0
        with self.env.begin() as txn:
            get = txn.get
            for key in keys:
                if get(key) is not None:
                    found += 1
        return found

    def get_one(self, key: bytes) -> bytes | None:
        with self.env.begin() as txn:
            return txn.get(key)

    def delete_chunk(self, keys: list[bytes]) -> None:
        with self.env.begin(write=True) as txn:
            delete = txn.delete
            for key in keys:
                delete(key)

    def scan(self, start: bytes, end: bytes) -> int:
        seen = 0
        with self.env.begin() as txn:
            cursor = txn.cursor()
            if not cursor.set_range(start):
                return 0
            for key, _value in cursor:
                if key >= end:
                    break
                seen += 1
        return seen

    def durable_writer(self) -> Writer:
        env = self.env

        def put(key: bytes, value: bytes) -> None:
            with env.begin(write=True) as txn:
                txn.put(key, value)

        return put, lambda: None

    def settle(self) -> None:
        self.env.sync(True)

    def compact(self) -> None:
        self.settle()

    def stats(self) -> dict[str, Any]:
        return dict(self.env.stat())

    def close(self) -> None:
        self.env.close()


class RocksdictAdapter(_PerKeyCalls):
    name = "rocksdict"

    def __init__(self, path: str, *, synced: bool, options: dict[str, Any]) -> None:
        from rocksdict import Options, Rdict, ReadOptions, WriteOptions

        self.write_buffer = int(options.get("write_buffer", DEFAULT_WRITE_BUFFER))
        opts = Options(raw_mode=True)
        opts.create_if_missing(True)
        opts.set_write_buffer_size(self.write_buffer)
        self.db = Rdict(path, options=opts)
        self.synced = synced
        self.write_opt = WriteOptions()
        self.write_opt.sync = synced
        self.db.set_write_options(self.write_opt)
        self._read_options = ReadOptions

    def describe(self) -> dict[str, Any]:
        return {"defaults": True, "write_buffer_size": self.write_buffer, "sync": self.synced}

    def scan(self, start: bytes, end: bytes) -> int:
        read_opt = self._read_options()
        read_opt.set_iterate_upper_bound(end)
        seen = 0
        for _item in self.db.items(from_key=start, read_opt=read_opt):
            seen += 1
        return seen

    def durable_writer(self) -> Writer:
        return self.db.put, lambda: None

    def settle(self) -> None:
        self.db.flush()

    def compact(self) -> None:
        self.db.flush()
        self.db.compact_range(None, None)

    def stats(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        self.db.close()


ADAPTERS: dict[str, type] = {
    "ringlock": RinglockAdapter,
    "sqlite3": Sqlite3Adapter,
    "lmdb": LmdbAdapter,
    "rocksdict": RocksdictAdapter,
}


def open_adapter(name: str, path: str, *, synced: bool, options: dict[str, Any]) -> Any:
    """Open engine `name` at `path`; raises EngineUnavailable if it cannot run here."""
    reason = availability(name)
    if reason is not None:
        raise EngineUnavailable(reason)
    return ADAPTERS[name](path, synced=synced, options=options)
