"""A lock member queues a reconnect storm even while its event loop is stalled.

After a leader change every client, and every member relaying KeepAlives, opens new
connections to the new leader at the same moment, while that leader is busiest. With
aiohttp's default listen backlog (128) the kernel dropped the connections beyond it, and TCP
retransmits a dropped SYN only after 1, 2, 4, 8 s: KeepAlives waited past their lease and
hundreds of 1,000 sessions expired (bench/lock.py keepalive --keepalive-fault pause). The
member is stopped (SIGSTOP) so that it accepts nothing; the kernel alone must complete the
handshakes of a storm of STORM connections.
"""

from __future__ import annotations

import contextlib
import errno
import select
import signal
import socket
import time
from pathlib import Path

from tests.lockservice.cluster import LockCluster

STORM = 600  # more than 4 x aiohttp's default backlog, well under the 4096 we ask for


def test_a_stalled_member_queues_every_connection_of_a_reconnect_storm(tmp_path: Path) -> None:
    cluster = LockCluster(tmp_path, n=1)
    socks: list[socket.socket] = []
    try:
        cluster.start_all()
        proc = cluster.procs[1]
        proc.send_signal(signal.SIGSTOP)
        try:
            for _ in range(STORM):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setblocking(False)
                code = s.connect_ex(("127.0.0.1", cluster.ports[1]))
                assert code in (0, errno.EINPROGRESS), errno.errorcode.get(code, code)
                socks.append(s)
            pending = set(socks)
            deadline = time.monotonic() + 5.0  # a handshake in the kernel takes microseconds
            while pending and time.monotonic() < deadline:
                _, writable, _ = select.select([], list(pending), [], 0.1)
                for s in writable:
                    assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
                    pending.discard(s)
            assert not pending, f"{len(pending)} of {STORM} connections not accepted"
        finally:
            proc.send_signal(signal.SIGCONT)
    finally:
        for s in socks:
            with contextlib.suppress(OSError):
                s.close()
        cluster.close()
