"""examples/scheduler.py end to end (issue 7's integration example, docs/election.md):
three copies of the scheduler against a real store node that is also the lock service's
voter (one node keeps the test quick: what is killed here is a scheduler, not a node;
replicated failover of the lock service is tests/lockservice/test_client.py's); the
leader is SIGKILLed mid-run, another takes over, and no job is dispatched twice.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import Cluster
from tests.lockservice.cluster import REPO
from tests.waiting import wait_until

JOBS = 12


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster(tmp_path_factory.mktemp("sched"), size=1, lock_voters=1) as c:
        yield c


def dispatches(log: Path) -> list[list[str]]:
    return [ln.split() for ln in log.read_text().splitlines()] if log.exists() else []


def test_three_schedulers_dispatch_every_job_once_across_a_leader_kill(
        cluster: Cluster, tmp_path: Path) -> None:
    log = tmp_path / "dispatch.log"
    members = ",".join(cluster.names)
    procs = []
    for i in range(3):
        with open(tmp_path / f"s{i}.err", "wb") as err:  # the child keeps its own copy
            procs.append(subprocess.Popen(
                [sys.executable, "examples/scheduler.py", "--name", f"s{i}", "--jobs",
                 str(JOBS), "--interval", "0.05", "--ttl", "3000", "--lock-delay", "0",
                 "--lock-members", members, "--kv-nodes", members, "--dispatch-log", str(log)],
                cwd=REPO, stdout=subprocess.DEVNULL, stderr=err))
    try:
        assert wait_until(lambda: len(dispatches(log)) >= 3, 120)
        first = dispatches(log)[0][1]
        victim = procs[int(first[1:])]
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        for p in procs:
            if p is not victim:
                p.wait(180)
                assert p.returncode == 0
        done = dispatches(log)
        jobs = [d[0] for d in done]
        assert len(jobs) == len(set(jobs))  # no job dispatched twice
        leaders = [d[1] for d in done]
        assert leaders[0] == first and set(leaders) - {first}  # another copy took over
        lost = JOBS - len(jobs)
        assert lost <= 1  # at most the one the killed leader recorded but did not dispatch
        generations = [int(d[2]) for d in done]
        assert generations == sorted(generations)  # each term's sequencer is newer
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
