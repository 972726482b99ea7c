"""A node's configuration: `kv serve` flags, an optional TOML file, validated into NodeConfig.

Flags (the contract's; `kv serve` and `python -m kvstore.node` accept exactly these):

    --name HOST:PORT   the node's name and advertised address (required)
    --listen HOST:PORT the address to bind when it is not the name (behind a proxy or a
                       NAT; the chaos harness puts a link proxy on the name's address)
    --data DIR         its data folder (required)
    --join SEED        a member to join through when DIR holds no ring yet
    --n --r --w        replicas per key, and default read and write quorums (3, 2, 2)
    --ring-size Q      partitions of a new cluster's ring (256; ignored when joining)
    --sync POLICY      LSM sync policy: interval (default), always, none
    --lock-id ID --lock-peers ID=HOST:PORT,...   host a lock-service voter
    --max-value BYTES  largest value the public API accepts (1 MiB)
    --config FILE      a TOML file with the same keys (`ring-size` or `ring_size`, ...);
                       flags given on the command line win over the file
    --log-level LEVEL  DEBUG, INFO (default), WARNING, ERROR
    --log-format FMT   plain (default) or json: one JSON object per line (kvstore/logs.py)
    --auth-file FILE   tokens and ACLs (TOML, docs/auth.md); without it the node is open
    --tls-cert FILE --tls-key FILE --tls-ca FILE   all three or none: serve HTTPS only and
                       call peers over TLS (kvstore/tls.py, docs/tls.md); the files are
                       read when the node starts (a bad one: an error and exit status 1)

`lock-peers` in TOML is either the flag's string or a table `{1 = "127.0.0.1:7001", ...}`.
Every value is checked here (ConfigError, a ValueError, with one sentence saying what is
wrong); nothing is opened until the whole configuration is valid.
"""

from __future__ import annotations

import argparse
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from kvstore.ring import MAX_RING_SIZE

SYNC_POLICIES = ("interval", "always", "none")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("plain", "json")
DEFAULT_MAX_VALUE = 1 << 20


class ConfigError(ValueError):
    """The node's configuration is invalid; the message says which setting and why."""


@dataclass(frozen=True)
class NodeConfig:
    name: str
    data: str
    listen: str | None = None  # bind here instead of at the name (a proxy holds the name)
    join: str | None = None
    n: int = 3
    r: int = 2
    w: int = 2
    ring_size: int = 256
    sync: str = "interval"
    lock_id: int | None = None
    lock_peers: dict[int, str] = field(default_factory=dict)
    # --lock-limit NAME=VALUE: fields of lockservice.limits.Limits (the same on every voter:
    # the lock table applies them, so voters that differ would disagree)
    lock_limits: dict[str, int] = field(default_factory=dict)
    max_value: int = DEFAULT_MAX_VALUE
    log_level: str = "INFO"
    log_format: str = "plain"
    timeout_s: float = 5.0  # default request deadline (not a flag)
    auth_file: Path | None = None  # --auth-file: tokens and ACLs (kvstore/auth_http.py)
    tls_cert: Path | None = None  # the node's certificate, key and CA (kvstore/tls.py)
    tls_key: Path | None = None
    tls_ca: Path | None = None

    @property
    def host(self) -> str:
        """The host to bind: `listen`'s when given, else the name's."""
        return (self.listen or self.name).rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        """The port to bind: `listen`'s when given, else the name's."""
        return int((self.listen or self.name).rsplit(":", 1)[1])

    def __post_init__(self) -> None:
        check_address("name", self.name)
        if self.listen is not None:
            check_address("listen", self.listen)
        if not isinstance(self.data, str) or not self.data:
            raise ConfigError("data must name a folder")
        if self.join is not None:
            check_address("join", self.join)
        for key in ("n", "r", "w", "ring_size", "max_value"):
            value = getattr(self, key)
            if type(value) is not int or value < 1:
                raise ConfigError(f"{key} must be a positive integer, not {value!r}")
        if not self.r <= self.n or not self.w <= self.n:
            raise ConfigError(f"r ({self.r}) and w ({self.w}) must not exceed n ({self.n})")
        if self.ring_size > MAX_RING_SIZE or self.ring_size & (self.ring_size - 1):
            raise ConfigError(f"ring-size must be a power of two up to {MAX_RING_SIZE}")
        if self.sync not in SYNC_POLICIES:
            raise ConfigError(f"sync must be one of {', '.join(SYNC_POLICIES)}")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"log-level must be one of {', '.join(LOG_LEVELS)}")
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(f"log-format must be one of {', '.join(LOG_FORMATS)}")
        for ident, address in self.lock_peers.items():
            if type(ident) is not int or ident < 1:
                raise ConfigError(f"lock peer ids must be positive integers: {ident!r}")
            check_address(f"lock peer {ident}", address)
        if self.lock_id is not None:
            if type(self.lock_id) is not int or self.lock_id not in self.lock_peers:
                raise ConfigError("lock-id must be one of the ids in lock-peers")
            if self.lock_peers[self.lock_id] != self.name:
                raise ConfigError(f"lock peer {self.lock_id} must be this node ({self.name})")
        check_lock_limits(self.lock_limits)
        if self.auth_file is not None:  # read when the node starts (kvstore/node.py)
            if not isinstance(self.auth_file, str | Path) or not str(self.auth_file):
                raise ConfigError(f"auth-file must name a file, not {self.auth_file!r}")
            object.__setattr__(self, "auth_file", Path(self.auth_file))
        tls = {k: getattr(self, k) for k in ("tls_cert", "tls_key", "tls_ca")}
        if any(v is not None for v in tls.values()):
            if any(v is None or not isinstance(v, str | Path) or not str(v) for v in tls.values()):
                raise ConfigError("tls-cert, tls-key and tls-ca go together: give all three "
                                  "files, or none")
            for key, value in tls.items():
                object.__setattr__(self, key, Path(value))


def check_address(what: str, value: object) -> str:
    """`value` as a "host:port" string, or ConfigError."""
    if not isinstance(value, str) or ":" not in value:
        raise ConfigError(f"{what} must be host:port, not {value!r}")
    host, port = value.rsplit(":", 1)
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535 or len(value) > 255:
        raise ConfigError(f"{what} must be host:port with a port in 1..65535, not {value!r}")
    return value


def check_lock_limits(limits: object) -> None:
    """ConfigError unless `limits` names fields of lockservice.limits.Limits with values
    that Limits accepts."""
    from lockservice.limits import Limits  # lockservice imports nothing of kvstore

    known = {f.name for f in fields(Limits)}
    if not isinstance(limits, dict):
        raise ConfigError(f"lock-limits must map limit names to integers, not {limits!r:.80}")
    for name, value in limits.items():
        if name not in known:
            raise ConfigError(f"unknown lock limit {name!r}; known: {', '.join(sorted(known))}")
        if type(value) is not int or value < 0:
            raise ConfigError(f"lock limit {name} must be a non-negative integer, not {value!r}")
    try:
        Limits(**limits)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"lock limits: {exc}") from None


def parse_lock_limit(text: str) -> tuple[str, int]:
    """"max_sessions_per_client=100" -> ("max_sessions_per_client", 100)."""
    name, sep, value = text.partition("=")
    if not sep or not value.strip().isdigit():
        raise ConfigError(f"lock-limit is NAME=INTEGER, not {text!r}")
    return name.strip().replace("-", "_"), int(value)


def parse_lock_peers(text: str) -> dict[int, str]:
    """"1=127.0.0.1:7001,2=127.0.0.1:7002" -> {1: "127.0.0.1:7001", 2: ...}."""
    peers: dict[int, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        ident, sep, address = part.partition("=")
        if not sep or not ident.strip().isdigit():
            raise ConfigError(f"lock-peers entries are ID=HOST:PORT, not {part!r}")
        if int(ident) in peers:
            raise ConfigError(f"lock peer {ident} is named twice")
        peers[int(ident)] = check_address(f"lock peer {ident}", address.strip())
    return peers


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the node's flags to `parser` (defaults None: a TOML file may fill them)."""
    add = parser.add_argument
    add("--name", help="this node's name and address, HOST:PORT (required)")
    add("--data", help="the node's data folder (required)")
    add("--listen", metavar="HOST:PORT",
        help="address to bind when it is not --name (behind a proxy or NAT)")
    add("--join", metavar="SEED", help="join the cluster of SEED (HOST:PORT) on first start")
    add("--n", type=int, help="replicas per key (default 3)")
    add("--r", type=int, help="default read quorum (default 2)")
    add("--w", type=int, help="default write quorum (default 2)")
    add("--ring-size", type=int, help="partitions of a new cluster's ring (default 256)")
    add("--sync", choices=SYNC_POLICIES, help="storage sync policy (default interval)")
    add("--lock-id", type=int, help="host lock-service voter ID (one of --lock-peers)")
    add("--lock-peers", metavar="ID=HOST:PORT,...", help="the lock service's voters")
    add("--lock-limit", action="append", metavar="NAME=VALUE",
        help="a lock-service limit (lockservice/limits.py, e.g. max_sessions_per_client=100; "
        "repeatable; the same on every voter)")
    add("--max-value", type=int, help="largest value accepted, in bytes (default 1 MiB)")
    add("--config", metavar="FILE.toml", help="read settings from a TOML file (flags win)")
    add("--log-level", type=str.upper, choices=LOG_LEVELS, help="log level (default INFO)")
    add("--log-format", choices=LOG_FORMATS, help="log lines: plain (default) or json")
    add("--auth-file", metavar="FILE", help="tokens and ACLs (TOML, docs/auth.md); "
        "without it the node is open")
    add("--tls-cert", metavar="FILE", help="the node's TLS certificate (PEM; with --tls-key "
        "and --tls-ca: serve HTTPS only, call peers over TLS)")
    add("--tls-key", metavar="FILE", help="the key of --tls-cert (PEM)")
    add("--tls-ca", metavar="FILE", help="the CA that signs node and client certificates")


_KEYS = {f.name for f in fields(NodeConfig)} - {"timeout_s"}
_FLAGS = {"lock_limits": "lock_limit"}  # settings whose flag has another name


def from_args(args: argparse.Namespace) -> NodeConfig:
    """The NodeConfig of parsed flags (and of `--config FILE` under them)."""
    settings: dict[str, Any] = {}
    if getattr(args, "config", None):
        settings.update(read_toml(args.config))
    file_limits = settings.get("lock_limits")
    for key in _KEYS:
        value = getattr(args, _FLAGS.get(key, key), None)
        if value is not None:
            settings[key] = value
    if isinstance(settings.get("lock_limits"), list):  # flags add to (and win over) the file's
        from_file = file_limits if isinstance(file_limits, dict) else {}
        settings["lock_limits"] = {**from_file, **dict(map(parse_lock_limit,
                                                            settings["lock_limits"]))}
    if isinstance(settings.get("lock_peers"), str):
        settings["lock_peers"] = parse_lock_peers(settings["lock_peers"])
    for key in ("name", "data"):
        if not settings.get(key):
            raise ConfigError(f"--{key} is required (on the command line or in --config)")
    return NodeConfig(**settings)


def read_toml(path: str) -> dict[str, Any]:
    """The settings in a TOML file; ConfigError for unreadable files or unknown keys."""
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    settings: dict[str, Any] = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name not in _KEYS:
            raise ConfigError(f"config file {path}: unknown setting {key!r}")
        if name == "lock_peers" and isinstance(value, dict):
            try:
                value = {int(k): v for k, v in value.items()}
            except ValueError:
                raise ConfigError(f"config file {path}: lock-peers keys must be ids") from None
        if name == "lock_limits" and isinstance(value, dict):
            value = {str(k).replace("-", "_"): v for k, v in value.items()}
        if name == "log_level" and isinstance(value, str):
            value = value.upper()
        settings[name] = value
    return settings
