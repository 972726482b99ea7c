"""The `kv` command line: usage, and `get`/`put`/`delete`/`ring`/`serve` against a real
3-node cluster. Keys and values are bytes end to end (every byte value round-trips through
arguments, --hex and stdin/stdout); errors are one line on stderr with a non-zero exit,
never a traceback.

A few tests run the real `kv` process; the rest call `kvstore.cli.main` in this process
(the same code after argv parsing) because a Python start costs a second on a busy machine.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from kvstore.cli import main
from tests.kvstore.api_cluster import free_base_port, running_cluster

EVERY = bytes(range(256))


def kv(*args: str | bytes, stdin: bytes = b"", env: dict | None = None
       ) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "kvstore.cli", *args], input=stdin,
                          capture_output=True, timeout=120, env=env)


@pytest.fixture
def run(capsysbinary, monkeypatch):
    """`kv ARGS` in this process: exit code and the bytes written to stdout and stderr."""
    def run(*args: str, stdin: bytes = b"") -> SimpleNamespace:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
        code = main(list(args))
        out, err = capsysbinary.readouterr()
        return SimpleNamespace(returncode=code, stdout=out, stderr=err)
    return run


def test_kv_version_names_the_distribution() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "kvstore.cli", "--version"],
        capture_output=True, text=True, check=True,
    )
    assert out.stdout.startswith("ringlock ")


def test_kv_without_a_command_prints_usage_and_fails() -> None:
    out = subprocess.run([sys.executable, "-m", "kvstore.cli"], capture_output=True, text=True)
    assert out.returncode == 2
    assert "usage: kv" in out.stderr


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory):
    with running_cluster(tmp_path_factory.mktemp("cli") / "c", nodes=3) as cluster:
        yield ",".join(cluster.names)


def test_put_then_get_prints_the_exact_bytes(run, nodes) -> None:
    assert run("put", "--node", nodes, "greeting", "hello world").stdout == b"OK\n"
    out = run("get", "--node", nodes, "greeting")
    assert (out.returncode, out.stdout) == (0, b"hello world")  # no newline: not a terminal
    # put overwrites by default (it reads the context first): no sibling appears
    assert run("put", "--node", nodes, "greeting", "hi").returncode == 0
    assert run("get", "--node", nodes, "greeting").stdout == b"hi"


def test_every_byte_value_round_trips_through_hex_stdin_and_argv(run, nodes) -> None:
    assert run("put", "--node", nodes, "--hex", EVERY.hex(), EVERY.hex()).returncode == 0
    assert run("get", "--node", nodes, "--hex", EVERY.hex()).stdout == EVERY.hex().encode() + b"\n"
    # raw argv bytes (all but NUL, which POSIX arguments cannot hold) and stdin
    key = os.fsdecode(EVERY[1:])
    assert kv("put", "--node", nodes, key, stdin=EVERY).returncode == 0
    assert kv("get", "--node", nodes, key).stdout == EVERY
    assert run("get", "--node", nodes, "--hex", EVERY[1:].hex()).stdout == \
        EVERY.hex().encode() + b"\n"


def test_json_output_siblings_and_resolution(run, nodes) -> None:
    assert run("put", "--node", nodes, "pet", "cat").returncode == 0
    seen = json.loads(run("get", "--node", nodes, "--json", "pet").stdout)
    assert seen["text"] == ["cat"] and seen["deleted"] is False
    for value in ("dog", "fish"):
        assert run("put", "--node", nodes, "--context", seen["context"], "pet", value
                  ).returncode == 0
    both = run("get", "--node", nodes, "pet")
    assert both.returncode == 3 and sorted(both.stdout.split()) == [b"dog", b"fish"]
    assert b"2 siblings" in both.stderr
    doc = json.loads(run("get", "--node", nodes, "--json", "pet").stdout)
    assert sorted(doc["text"]) == ["dog", "fish"]
    assert run("put", "--node", nodes, "--context", doc["context"], "pet", "both").returncode == 0
    assert run("get", "--node", nodes, "pet").stdout == b"both"
    blind = run("put", "--node", nodes, "--blind", "pet", "blind")  # Dynamo's blind write
    assert blind.returncode == 0 and run("get", "--node", nodes, "pet").returncode == 3


def test_delete_then_get_says_deleted(run, nodes) -> None:
    assert run("put", "--node", nodes, "doomed", "x").returncode == 0
    assert run("delete", "--node", nodes, "doomed").stdout == b"OK\n"
    out = run("get", "--node", nodes, "doomed")
    assert out.returncode == 1 and b"doomed: was deleted" in out.stderr
    out = run("get", "--node", nodes, "--json", "doomed")
    assert out.returncode == 1 and json.loads(out.stdout)["deleted"] is True
    out = run("get", "--node", nodes, "never-written")
    assert out.returncode == 1 and b"not found" in out.stderr


def test_ring_lists_every_member(run, nodes) -> None:
    out = run("ring", "--node", nodes)
    assert out.returncode == 0 and b"3 members" in out.stdout
    assert all(n.encode() in out.stdout for n in nodes.split(","))
    doc = json.loads(run("ring", "--node", nodes, "--json").stdout)
    assert len(doc["owners"]) == doc["ring_size"]


def test_node_defaults_come_from_kv_nodes(run, nodes, monkeypatch) -> None:
    monkeypatch.setenv("KV_NODES", nodes)
    assert run("put", "from-env", "yes").returncode == 0
    assert run("get", "--node", nodes.split(",")[2], "from-env").stdout == b"yes"


@pytest.mark.parametrize("args, message", [
    (("get", "--hex", "zz"), b"kv get: invalid request: KEY is not hexadecimal"),
    (("put", "--hex", "00", "0g"), b"kv put: invalid request: VALUE is not hexadecimal"),
    (("put", "k", "v", "--context", "garbage"), b"kv put: invalid context"),
    (("get", "-r", "9", "k"), b"kv get: invalid request: r must be"),
    (("get", "-r", "0", "k"), b"kv get: invalid request: r must be a positive int"),
    (("put", "k", "v", "--sequencer", "forged"), b"not a sequencer token"),
    (("get", "k" * 1025), b"a key must be 1..1024 bytes"),
    (("get", ""), b"a key must be 1..1024 bytes"),
])
def test_errors_are_one_line_without_traceback(run, nodes, args, message) -> None:
    out = run(*args[:1], "--node", nodes, *args[1:])
    assert out.returncode == 1, out
    assert message in out.stderr and b"Traceback" not in out.stderr
    assert out.stderr.count(b"\n") == 1


def test_an_unreachable_node_is_a_clear_error() -> None:
    out = kv("get", "--node", f"127.0.0.1:{free_base_port(1)}", "k")
    assert out.returncode == 1 and b"is unavailable: cannot connect" in out.stderr
    assert b"Traceback" not in out.stderr
    out = kv("put", "--node", "not-an-address", "k", "v")
    assert out.returncode == 1 and b"must be host:port" in out.stderr


def test_serve_checks_its_flags(run) -> None:
    out = run("serve")
    assert out.returncode == 2 and b"--name is required" in out.stderr
    out = run("serve", "--name", "127.0.0.1:1", "--data", "x", "--r", "5")
    assert out.returncode == 2 and b"must not exceed n" in out.stderr
    assert b"Traceback" not in out.stderr


def test_lock_commands_are_wired_and_load_only_when_asked(run) -> None:
    help_text = subprocess.run([sys.executable, "-m", "kvstore.cli", "--help"],
                               capture_output=True, text=True).stdout
    assert all(f"    {c} " in help_text for c in ("lock", "elect", "leader"))
    code = subprocess.run([sys.executable, "-c", "import sys, kvstore.cli; "
                           "kvstore.cli.build_parser(['get', 'k']); "
                           "sys.exit('lockservice.cli' in sys.modules)"]).returncode
    assert code == 0  # `kv get` does not pay for the lock client's imports
    out = run("leader", "jobs", "--members", f"127.0.0.1:{free_base_port(1)}",
              "--request-timeout", "0.5")
    assert out.returncode == 1 and b"no lock-service member answered" in out.stderr


def test_aae_commands_are_wired(run, nodes) -> None:
    out = run("aae", "status", "--node", nodes.split(",")[0], "--json")
    assert out.returncode == 0 and "totals" in json.loads(out.stdout)
    out = run("aae", "status", "--node", f"127.0.0.1:{free_base_port(1)}")
    assert out.returncode == 1 and b"kv aae status" in out.stderr
    assert b"Traceback" not in out.stderr


def test_local_lock_members_are_a_default_not_a_change_of_environment(tmp_path, monkeypatch):
    """`kv lock` finds ./ringlock-cluster's voters, without writing them into os.environ
    (in-process callers and later child processes would inherit a stale member list)."""
    folder = tmp_path / "ringlock-cluster"
    folder.mkdir()
    (folder / "cluster.json").write_text(json.dumps(
        {"host": "127.0.0.1", "base_port": 27401, "lock_members": 2,
         "nodes": ["127.0.0.1:27401", "127.0.0.1:27402", "127.0.0.1:27403"]}))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RINGLOCK_LOCK_MEMBERS", raising=False)
    from kvstore.cli import build_parser

    args = build_parser(["lock", "status", "jobs"]).parse_args(["lock", "status", "jobs"])
    assert args.members == "127.0.0.1:27401,127.0.0.1:27402"
    assert "RINGLOCK_LOCK_MEMBERS" not in os.environ
    monkeypatch.setenv("RINGLOCK_LOCK_MEMBERS", "127.0.0.1:1")  # the environment still wins
    args = build_parser(["lock", "status", "jobs"]).parse_args(["lock", "status", "jobs"])
    assert args.members == "127.0.0.1:1"
