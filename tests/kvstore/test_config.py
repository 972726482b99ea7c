"""A node's configuration: the contract's flags, a TOML file under them, and every bad
value refused with one sentence before anything is opened."""

from __future__ import annotations

import argparse

import pytest

from kvstore.config import ConfigError, NodeConfig, add_arguments, from_args, parse_lock_peers


def parse(*argv: str) -> NodeConfig:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return from_args(parser.parse_args(list(argv)))


def test_flags_and_defaults() -> None:
    cfg = parse("--name", "127.0.0.1:7001", "--data", "/d")
    assert (cfg.n, cfg.r, cfg.w, cfg.ring_size, cfg.sync) == (3, 2, 2, 256, "interval")
    assert (cfg.host, cfg.port, cfg.join, cfg.lock_id, cfg.lock_peers) == (
        "127.0.0.1", 7001, None, None, {})
    cfg = parse("--name", "127.0.0.2:7002", "--data", "/d", "--join", "127.0.0.1:7001",
                "--n", "5", "--r", "3", "--w", "1", "--ring-size", "64", "--sync", "always",
                "--lock-id", "2", "--lock-peers", "1=127.0.0.1:7001, 2=127.0.0.2:7002",
                "--max-value", "4096", "--log-level", "debug")
    assert (cfg.join, cfg.n, cfg.r, cfg.w, cfg.ring_size, cfg.sync) == (
        "127.0.0.1:7001", 5, 3, 1, 64, "always")
    assert cfg.lock_peers == {1: "127.0.0.1:7001", 2: "127.0.0.2:7002"} and cfg.lock_id == 2
    assert (cfg.max_value, cfg.log_level) == (4096, "DEBUG")


def test_listen_binds_elsewhere_than_the_name() -> None:
    cfg = parse("--name", "127.0.0.11:7001", "--data", "/d", "--listen", "127.0.0.11:17001")
    assert (cfg.name, cfg.host, cfg.port) == ("127.0.0.11:7001", "127.0.0.11", 17001)


def test_toml_fills_in_and_flags_win(tmp_path) -> None:
    path = tmp_path / "node.toml"
    path.write_text('name = "127.0.0.1:7001"\ndata = "/from-file"\nring-size = 32\n'
                    'r = 1\nsync = "none"\n[lock-peers]\n1 = "127.0.0.1:7001"\n')
    cfg = parse("--config", str(path), "--r", "3", "--lock-id", "1")
    assert (cfg.name, cfg.data, cfg.ring_size, cfg.r, cfg.sync) == (
        "127.0.0.1:7001", "/from-file", 32, 3, "none")
    assert cfg.lock_peers == {1: "127.0.0.1:7001"} and cfg.lock_id == 1
    path.write_text('name = "127.0.0.1:7001"\ndata = "d"\nlock_peers = "1=127.0.0.1:7001"\n')
    assert parse("--config", str(path)).lock_peers == {1: "127.0.0.1:7001"}


BAD_TOML = ['name = "127.0.0.1:7001"\ndata = "d"\nreplicas = 3\n',  # unknown key
            'name = "127.0.0.1:7001"\ndata = "d"\nn = "three"\n',
            'name = "127.0.0.1:7001"\ndata = "d"\n[lock-peers]\nx = "127.0.0.1:1"\n',
            "name = ",  # not TOML
            'name = "127.0.0.1:7001"\n']  # no data


@pytest.mark.parametrize("text", BAD_TOML)
def test_bad_toml_is_refused(tmp_path, text) -> None:
    path = tmp_path / "node.toml"
    path.write_text(text)
    with pytest.raises(ConfigError):
        parse("--config", str(path))


def test_a_missing_config_file_is_refused(tmp_path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        parse("--config", str(tmp_path / "absent.toml"))


BAD_FLAGS = [
    [],
    ["--name", "127.0.0.1:7001"],
    ["--name", "127.0.0.1", "--data", "d"],
    ["--name", "127.0.0.1:0", "--data", "d"],
    ["--name", "127.0.0.1:70000", "--data", "d"],
    ["--name", ":7001", "--data", "d"],
    ["--name", "127.0.0.1:7001", "--data", "d", "--join", "nowhere"],
    ["--name", "127.0.0.1:7001", "--data", "d", "--listen", "127.0.0.1"],
    ["--name", "127.0.0.1:7001", "--data", "d", "--n", "0"],
    ["--name", "127.0.0.1:7001", "--data", "d", "--r", "4"],
    ["--name", "127.0.0.1:7001", "--data", "d", "--n", "2", "--w", "3"],
    ["--name", "127.0.0.1:7001", "--data", "d", "--ring-size", "100"],
    ["--name", "127.0.0.1:7001", "--data", "d", "--ring-size", str(1 << 13)],
    ["--name", "127.0.0.1:7001", "--data", "d", "--max-value", "0"],
    ["--name", "127.0.0.1:7001", "--data", "d", "--lock-id", "1"],
    ["--name", "127.0.0.1:7001", "--data", "d", "--lock-id", "2",
     "--lock-peers", "1=127.0.0.1:7001"],
    ["--name", "127.0.0.1:7001", "--data", "d", "--lock-id", "1",
     "--lock-peers", "1=127.0.0.1:7002"],
    ["--name", "127.0.0.1:7001", "--data", "d", "--lock-peers", "1=127.0.0.1:7001,1=a:2"],
    ["--name", "127.0.0.1:7001", "--data", "d", "--lock-peers", "one=127.0.0.1:7001"],
    ["--name", "127.0.0.1:7001", "--data", "d", "--lock-peers", "1:127.0.0.1:7001"],
    ["--name", "127.0.0.1:7001", "--data", "d", "--lock-peers", "0=127.0.0.1:7001"],
    ["--name", "127.0.0.1:7001", "--data", "d", "--lock-limit", "max_sessions_per_client"],
    ["--name", "127.0.0.1:7001", "--data", "d", "--lock-limit", "no_such_limit=3"],
    ["--name", "127.0.0.1:7001", "--data", "d", "--lock-limit", "max_waiters_per_lock=-1"],
    ["--name", "127.0.0.1:7001", "--data", "d", "--lock-limit", "min_ttl_ms=0"],
]


def test_lock_limits_from_flags_and_the_file(tmp_path) -> None:
    """--lock-limit NAME=VALUE (repeatable) and a [lock-limits] table; flags win."""
    path = tmp_path / "node.toml"
    path.write_text('[lock-limits]\nmax-waiters-per-lock = 8\nmax_sessions_per_client = 5\n')
    cfg = parse("--name", "127.0.0.1:7001", "--data", "/d", "--config", str(path),
                "--lock-limit", "max_sessions_per_client=2", "--lock-limit", "max_entries=9")
    assert cfg.lock_limits == {"max_waiters_per_lock": 8, "max_sessions_per_client": 2,
                               "max_entries": 9}
    assert parse("--name", "127.0.0.1:7001", "--data", "/d").lock_limits == {}
    path.write_text('lock-limits = 3\n')
    with pytest.raises(ConfigError, match="lock-limits"):
        parse("--name", "127.0.0.1:7001", "--data", "/d", "--config", str(path))


@pytest.mark.parametrize("argv", BAD_FLAGS, ids=range(len(BAD_FLAGS)))
def test_bad_flags_are_refused_with_a_sentence(argv) -> None:
    with pytest.raises(ConfigError) as info:
        parse(*argv)
    assert str(info.value)


def test_lock_peers_parse() -> None:
    assert parse_lock_peers("") == {}
    assert parse_lock_peers("3=10.0.0.3:7003,1=10.0.0.1:7001,") == {
        3: "10.0.0.3:7003", 1: "10.0.0.1:7001"}


def test_python_m_kvstore_node_refuses_bad_flags_with_exit_2(capsys) -> None:
    from kvstore.node import _cli

    with pytest.raises(SystemExit) as info:
        _cli(["--name", "127.0.0.1:7001", "--data", "d", "--r", "9"])
    assert info.value.code == 2
    assert "must not exceed n" in capsys.readouterr().err
