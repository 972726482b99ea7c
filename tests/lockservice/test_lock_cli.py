"""`kv lock run|status`, `kv elect`, `kv leader` as real processes against three members.

Run through `python -m lockservice.cli` (the same `register()` that `kv` mounts). Times
from different processes are compared on CLOCK_MONOTONIC, which Linux keeps system-wide.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lockservice.cli import main
from lockservice.client import LockClient
from lockservice.sequencer import Sequencer
from lockservice.supervise import exit_status
from tests.lockservice.cluster import REPO, LockCluster
from tests.lockservice.proxy import Partition
from tests.lockservice.shared_cluster import members, shared_lock_cluster
from tests.waiting import wait_until

# A child that logs its start, a heartbeat every 10 ms, and SIGTERM (then exits 0, or
# ignores it when told to): `child.py LOG [ignore-term]`.
CHILD = textwrap.dedent("""
    import os, signal, sys, time
    log = open(sys.argv[1], "a", buffering=1)
    def term(*_):
        log.write(f"term {time.monotonic()}\\n")
        if "ignore-term" not in sys.argv:
            sys.exit(0)
    signal.signal(signal.SIGTERM, term)
    log.write(f"start {os.getpid()} {time.monotonic()} {os.environ['RINGLOCK_SEQUENCER']}\\n")
    while True:
        log.write(f"beat {time.monotonic()}\\n")
        time.sleep(0.01)
""")


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> LockCluster:
    return shared_lock_cluster(request, tmp_path_factory)



def kv(addresses: list[str], *args: str, **kw) -> subprocess.Popen[str]:
    env = {**os.environ, "RINGLOCK_LOCK_MEMBERS": ",".join(addresses)}
    return subprocess.Popen([sys.executable, "-m", "lockservice.cli", *args], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **kw)


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out, err


def lines(log: Path, kind: str) -> list[list[str]]:
    if not log.exists():
        return []
    return [ln.split()[1:] for ln in log.read_text().splitlines() if ln.startswith(kind + " ")]


def test_lock_run_hands_over_the_sequencer_and_exit_code(cluster: LockCluster,
                                                         capsys) -> None:
    code, out, err = finish(kv(members(cluster), "lock", "run", "cli/a", "--", "sh", "-c",
                               'echo "$RINGLOCK_SEQUENCER"; exit 41'))
    assert code == 41, err  # CMD's own status
    token = out.strip()
    with LockClient(members(cluster)) as client:
        assert Sequencer.from_token(token).name == "cli/a"
        assert not client.check_sequencer(token)  # released when kv exited
        held = client.acquire("cli/a")
        code = main(["lock", "run", "cli/a", "--members", ",".join(members(cluster)),
                     "--timeout", "0.2", "--", "true"])  # in-process: busy before any child
        assert code == 1 and "busy" in capsys.readouterr().err
        client.release(held)
    assert [exit_status(c) for c in (0, 3, -signal.SIGTERM)] == [0, 3, 128 + signal.SIGTERM]


def test_lock_status_leader_and_usage_errors(cluster: LockCluster, capsys,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process (the same `register()`): status, leader, and refusals with exit 2 / 1."""
    addresses = ",".join(members(cluster))
    monkeypatch.delenv("RINGLOCK_LOCK_MEMBERS", raising=False)
    with LockClient(members(cluster)) as client:
        held = client.acquire("cli/status")
        assert main(["lock", "status", "cli/status", "--members", addresses]) == 0
        out = capsys.readouterr().out
        assert f"session {held.session}" in out and "exclusive" in out
        assert main(["leader", "cli/status", "--members", addresses]) == 3
    capsys.readouterr()
    cases = [(["lock", "run", "cli/x", "--members", addresses], "command to run"),
             (["lock", "run", "cli/x", "--members", addresses, "--"], "command to run"),
             (["elect", "cli/x", "--members", addresses, "--", "true"], "--value"),
             (["lock", "status", "cli/x", "--members", "z"], "not a member address"),
             (["lock", "status", "cli/x"], "no lock-service members"),  # env unset here
             (["lock", "run", "cli/x", "--members", addresses, "--lock-delay", "0",
               "--kill-after", "2", "--", "true"], "--kill-after must be under 1.00 s")]
    for args, message in cases:
        assert main(args) == 2, args
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["lock", "run", "cli/x", "--ttl", "ten", "--", "true"])
    assert exc.value.code == 2
    assert main(["lock", "status", "cli/x", "--members", "127.0.0.1:1",
                 "--request-timeout", "0.5"]) == 1
    assert "no lock-service member answered" in capsys.readouterr().err


@pytest.mark.parametrize("ignore_term", [False, True], ids=["sigterm", "sigkill"])
def test_lock_run_stops_its_child_before_the_lock_passes_on(
        cluster: LockCluster, tmp_path: Path, ignore_term: bool) -> None:
    """Chubby §2.8: cut off from the members, `kv lock run` stops CMD when its session
    falls into jeopardy; another client gets the lock only after CMD is gone (lock-delay 0:
    only the lease protects it)."""
    child, log = tmp_path / "child.py", tmp_path / "child.log"
    child.write_text(CHILD)
    name = f"cli/cut-{ignore_term}"
    partition = Partition(list(cluster.ports.values()))
    try:
        cmd = [sys.executable, str(child), str(log)] + (["ignore-term"] if ignore_term else [])
        proc = kv(partition.addresses, "lock", "run", name, "--ttl", "3000", "--lock-delay",
                  "0", "--kill-after", "0.1", "--", *cmd)
        assert wait_until(lambda: lines(log, "start"), 60), finish(proc, 5)
        with LockClient(members(cluster)) as other:
            partition.cut()
            other.acquire(name, timeout=60)
            granted = time.monotonic()
            code, _, err = finish(proc)
        assert code == 75 and "lost lock" in err
        beats = [float(b[0]) for b in lines(log, "beat")]
        assert beats and beats[-1] < granted  # the child ran no more once the lock moved on
        terms = lines(log, "term")
        assert terms and float(terms[0][0]) < granted
        if not ignore_term:
            assert len(beats) < 2 or beats[-1] <= float(terms[0][0]) + 0.05
        assert not Path(f"/proc/{lines(log, 'start')[0][0]}").exists()
    finally:
        partition.close()


def test_a_killed_kv_takes_its_child_with_it(cluster: LockCluster, tmp_path: Path) -> None:
    child, log = tmp_path / "child.py", tmp_path / "child.log"
    child.write_text(CHILD)
    proc = kv(members(cluster), "lock", "run", "cli/orphan", "--", sys.executable, str(child),
              str(log), "ignore-term")
    assert wait_until(lambda: lines(log, "start"), 60), finish(proc, 5)
    pid = int(lines(log, "start")[0][0])
    proc.kill()
    finish(proc)
    assert wait_until(lambda: not Path(f"/proc/{pid}").exists()
                      or "State:\tZ" in Path(f"/proc/{pid}/status").read_text(), 30)


def test_elect_runs_the_command_while_leader_then_resigns(cluster: LockCluster,
                                                         tmp_path: Path, capsys) -> None:
    child, log = tmp_path / "child.py", tmp_path / "child.log"
    child.write_text(CHILD)
    addresses = ",".join(members(cluster))
    proc = kv(members(cluster), "elect", "cli/el", "--value", "node-7", "--", sys.executable,
              str(child), str(log))
    assert wait_until(lambda: lines(log, "start"), 60), finish(proc, 5)
    assert main(["leader", "cli/el", "--members", addresses, "--json"]) == 0
    out = capsys.readouterr().out
    assert '"value": "node-7"' in out and lines(log, "start")[0][2] in out  # its sequencer
    proc.send_signal(signal.SIGTERM)  # passed on to the command, which exits 0
    code, _, err = finish(proc)
    assert code == 0, err
    assert main(["leader", "cli/el", "--members", addresses]) == 3  # resigned at the end
    assert "no leader" in capsys.readouterr().err
