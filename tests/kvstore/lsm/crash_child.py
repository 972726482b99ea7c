"""Child process of test_crash.py: writes with sync="always" and reports every write the
engine acknowledged, one line each on stdout, until it is killed.

    python -m tests.kvstore.lsm.crash_child FOLDER SEED ROUND

Lines: `ready`, then `P <key>` (put acknowledged; the value is derived from the key),
`B <n> <size>` (batch n of `size` puts acknowledged, keys `<round>b<n>.<j>of<size>`),
`d <key>` (a delete is about to start), `D <key>` (delete acknowledged).
"""

from __future__ import annotations

import random
import sys

from kvstore.lsm import Engine, WriteBatch

OPTIONS = {
    "memtable_bytes": 8 * 1024,
    "memtable_entry_overhead": 32,
    "table_file_bytes": 4 * 1024,
    "level1_bytes": 16 * 1024,
    "l0_compaction_trigger": 2,
    "block_size": 256,
}


def value_for(key: bytes) -> bytes:
    return b"value-of-" + key * 3


def main() -> None:
    folder, seed, round_ = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(seed)
    out = sys.stdout
    db = Engine.open(folder, sync="always", **OPTIONS)
    out.write("ready\n")
    out.flush()
    acked: list[bytes] = []
    n = 0
    while True:
        n += 1
        roll = rng.random()
        if roll < 0.6:
            key = b"%dp%d" % (round_, n)
            db.put(key, value_for(key))
            acked.append(key)
            out.write(f"P {key.decode()}\n")
        elif roll < 0.9:
            size = rng.randrange(2, 8)
            batch = WriteBatch()
            for j in range(size):
                key = b"%db%d.%dof%d" % (round_, n, j, size)
                batch.put(key, value_for(key))
            db.write(batch)
            out.write(f"B {n} {size}\n")
        elif acked:
            key = acked.pop(rng.randrange(len(acked)))
            out.write(f"d {key.decode()}\n")  # intent: killed now, the key may go or stay
            out.flush()
            db.delete(key)
            out.write(f"D {key.decode()}\n")
        out.flush()


if __name__ == "__main__":
    main()
