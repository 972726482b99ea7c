"""One three-member lock cluster shared by the client-side test modules (test_client,
test_fencing, test_lock_cli, test_election): starting one costs seconds on a loaded machine.

It starts on first use and stops when the pytest session ends (`config.add_cleanup`), even
after a failure. Tests that share it use their own lock and entry names; a test that
kills a member starts it again before it ends, and each module first restarts any member
found dead.
"""

from __future__ import annotations

import pytest

from tests.lockservice.cluster import LockCluster

_KEY = pytest.StashKey[LockCluster]()


def shared_lock_cluster(request: pytest.FixtureRequest,
                        tmp_path_factory: pytest.TempPathFactory) -> LockCluster:
    stash = request.config.stash
    cluster = stash.get(_KEY, None)
    if cluster is None:
        cluster = LockCluster(tmp_path_factory.mktemp("lockclient"))
        request.config.add_cleanup(cluster.close)
        stash[_KEY] = cluster
        cluster.start_all()
    for member in cluster.ids:
        if member not in cluster.alive():
            cluster.start(member)
    cluster.leader()
    return cluster


def members(cluster: LockCluster) -> list[str]:
    return [f"127.0.0.1:{p}" for p in cluster.ports.values()]
