"""Child process of test_crash.py: three threads write with sync="always" (so group
commit shares their fsyncs) and report every write the engine acknowledged, one line
each on stdout, until the process is killed.

    python -m tests.kvstore.lsm.crash_child FOLDER SEED ROUND

Lines: `ready`, then `P <key>` (put acknowledged; the value is derived from the key),
`B <n> <size>` (batch n of `size` puts acknowledged, keys `<round>b<n>.<j>of<size>`),
`d <key>` (a delete is about to start), `D <key>` (delete acknowledged).
"""

from __future__ import annotations

import random
import sys
import threading

from kvstore.lsm import Engine, WriteBatch

OPTIONS = {
    "memtable_bytes": 8 * 1024,
    "memtable_entry_overhead": 32,
    "table_file_bytes": 4 * 1024,
    "level1_bytes": 16 * 1024,
    "l0_compaction_trigger": 2,
    "block_size": 256,
    "compaction_process": False,  # test_crash checks the worker process separately
}
THREADS = 3

_out = threading.Lock()


def value_for(key: bytes) -> bytes:
    return b"value-of-" + key * 3


def say(line: str) -> None:
    with _out:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def writer(db: Engine, rng: random.Random, round_: int, thread: int) -> None:
    acked: list[bytes] = []
    n = thread
    while True:
        n += THREADS  # batch and key numbers are unique across the threads
        roll = rng.random()
        if roll < 0.6:
            key = b"%dp%d" % (round_, n)
            db.put(key, value_for(key))
            acked.append(key)
            say(f"P {key.decode()}")
        elif roll < 0.9:
            size = rng.randrange(2, 8)
            batch = WriteBatch()
            for j in range(size):
                key = b"%db%d.%dof%d" % (round_, n, j, size)
                batch.put(key, value_for(key))
            db.write(batch)
            say(f"B {n} {size}")
        elif acked:
            key = acked.pop(rng.randrange(len(acked)))
            say(f"d {key.decode()}")  # intent: killed now, the key may go or stay
            db.delete(key)
            say(f"D {key.decode()}")


def main() -> None:
    folder, seed, round_ = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    db = Engine.open(folder, sync="always", **OPTIONS)
    say("ready")
    threads = [threading.Thread(target=writer, args=(db, random.Random(seed + t), round_, t),
                                daemon=True) for t in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


if __name__ == "__main__":
    main()
