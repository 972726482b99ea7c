"""kvstore/auth.py as pure logic: the auth file's model, tokens and the ACL decision.

Chubby §2.4 (ACLs name who may read, write and change a node's names) and etcd's roles
(a user has roles; a role grants read/write on key prefixes; default deny): each test
names the promise it proves. No I/O here: files are strings.
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvstore import auth
from kvstore.auth import (
    PEER,
    Allowed,
    AuthFileError,
    Denied,
    Kind,
    Perm,
    Principal,
    Rule,
    decide,
    hash_token,
    parse,
)

READER, APP, LOCKER, ADMIN = "reader-token-1", "app-token-2", "lock-token-3", "admin-token-4"
PEER_TOKEN = "peer-token-0123456789abcdef"

FILE = f"""
# the examples of docs/auth.md
[peer]
token = "{PEER_TOKEN}"

[public]
paths = ["/health", "/metrics"]

[roles.reader]
rules = [{{ kind = "kv", prefix = "", perms = ["read"] }}]

[roles.app-writer]
rules = [{{ kind = "kv", prefix = "app/", perms = ["read", "write"] }}]

[[roles.lock-user.rules]]
kind = "lock"
prefix = "jobs/"
perms = ["read", "write"]

[[roles.lock-user.rules]]
kind = "entry"
prefix = "jobs/"
perms = ["read", "write"]

[roles.admin]
rules = [{{ kind = "*", perms = ["admin"] }}]

[users.rita]
token_sha256 = "{hash_token(READER)}"
roles = ["reader"]

[users.alice]
token_sha256 = "{hash_token(APP)}"
roles = ["app-writer"]

[users.lou]
token_sha256 = "{hash_token(LOCKER)}"
roles = ["lock-user"]

[users.root]
token_sha256 = "{hash_token(ADMIN)}"
roles = ["admin"]

[users.nobody]
token_sha256 = "{hash_token('nobody-token')}"
"""


@pytest.fixture(scope="module")
def config() -> auth.AuthConfig:
    return parse(FILE)


def who(config: auth.AuthConfig, token: str) -> Principal:
    principal = config.authenticate(token)
    assert principal is not None
    return principal


def test_tokens_authenticate_by_their_hash_only(config):
    assert who(config, READER).name == "rita"
    assert who(config, APP).name == "alice"
    assert config.authenticate(PEER_TOKEN) is PEER
    assert hash_token(APP) == hashlib.sha256(APP.encode()).hexdigest()
    for wrong in ("", "app-token-", APP + "x", hash_token(APP), "x" * 10_000):
        assert config.authenticate(wrong) is None
    assert APP not in FILE and READER not in FILE  # the file holds hashes, not tokens


def test_reader_reads_every_key_and_writes_none(config):
    rita = who(config, READER)
    assert isinstance(decide(rita, Kind.KV, b"any/key", Perm.READ), Allowed)
    denied = decide(rita, Kind.KV, b"any/key", Perm.WRITE)
    assert isinstance(denied, Denied)
    assert "rita" in denied.reason and "write" in denied.reason and "any/key" in denied.reason
    assert isinstance(decide(rita, Kind.LOCK, "any", Perm.READ), Denied)  # kv rule only


def test_prefix_writer_writes_inside_its_prefix_only(config):
    alice = who(config, APP)
    assert isinstance(decide(alice, Kind.KV, b"app/x", Perm.WRITE), Allowed)
    assert isinstance(decide(alice, Kind.KV, b"app/", Perm.WRITE), Allowed)
    for outside in (b"other/x", b"app", b"ap", b"APP/x", b"\x00app/x"):
        assert isinstance(decide(alice, Kind.KV, outside, Perm.WRITE), Denied)


def test_lock_user_names_and_sessions(config):
    lou = who(config, LOCKER)
    assert isinstance(decide(lou, Kind.LOCK, "jobs/a", Perm.WRITE), Allowed)
    assert isinstance(decide(lou, Kind.ENTRY, "jobs/leader", Perm.WRITE), Allowed)
    assert isinstance(decide(lou, Kind.LOCK, "other/a", Perm.WRITE), Denied)
    assert isinstance(decide(lou, Kind.KV, b"jobs/a", Perm.READ), Denied)
    assert isinstance(decide(lou, Kind.SESSION, "", Perm.WRITE), Allowed)
    # a reader holds no lock-service write: no sessions for it
    assert isinstance(decide(who(config, READER), Kind.SESSION, "", Perm.WRITE), Denied)


def test_admin_permission_implies_read_and_write_on_every_kind(config):
    root = who(config, ADMIN)
    for kind in (Kind.KV, Kind.LOCK, Kind.ENTRY, Kind.ADMIN, Kind.SESSION):
        for perm in (Perm.READ, Perm.WRITE, Perm.ADMIN):
            assert isinstance(decide(root, kind, "x", perm), Allowed)


def test_user_without_roles_may_do_nothing_default_deny(config):
    nobody = who(config, "nobody-token")
    for kind in (Kind.KV, Kind.LOCK, Kind.ENTRY, Kind.ADMIN, Kind.SESSION):
        assert isinstance(decide(nobody, kind, "", Perm.READ), Denied)


def test_peer_may_do_everything():
    assert isinstance(decide(PEER, Kind.ADMIN, "/admin/v1/join", Perm.WRITE), Allowed)


def test_public_paths_default_to_health_only():
    assert parse("").public_paths == frozenset({"/health"})
    assert parse(FILE).public_paths == frozenset({"/health", "/metrics"})


# -- hypothesis: the decision's laws -----------------------------------------------------

names = st.binary(max_size=12)
kinds = st.sampled_from([Kind.KV, Kind.LOCK, Kind.ENTRY, Kind.ADMIN])
perms = st.sampled_from(list(Perm))


@settings(max_examples=300, deadline=None)
@given(prefix=names, name=names, kind=kinds, perm=perms,
       granted=st.sets(perms, min_size=1))
def test_a_prefix_rule_never_allows_a_name_outside_its_prefix(prefix, name, kind, perm,
                                                               granted):
    user = Principal("u", ("r",), (Rule(kind, prefix, frozenset(granted)),))
    verdict = decide(user, kind, name, perm)
    if not name.startswith(prefix):
        assert isinstance(verdict, Denied)
    else:
        assert isinstance(verdict, Allowed) == (perm in granted or Perm.ADMIN in granted)


@settings(max_examples=200, deadline=None)
@given(rules=st.lists(st.tuples(kinds, names, st.sets(perms, min_size=1)), max_size=4),
       kind=kinds, name=names, perm=perms)
def test_more_roles_never_take_a_permission_away(rules, kind, name, perm):
    """Allowed by some rule == allowed by the union (rules only grant; order is irrelevant)."""
    made = [Rule(k, p, frozenset(g)) for k, p, g in rules]
    alone = [isinstance(decide(Principal("u", (), (r,)), kind, name, perm), Allowed)
             for r in made]
    together = decide(Principal("u", (), tuple(reversed(made))), kind, name, perm)
    assert isinstance(together, Allowed) == any(alone)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_any_text_parses_or_raises_auth_file_error(text):
    try:
        parse(text)
    except AuthFileError as exc:
        assert str(exc).startswith("auth file")


# -- malformed files: each names its key (and line) -------------------------------------

BAD = [
    ("[users.x]\ntoken = 'plain'\n", "users.x.token (line 2)", "never the token itself"),
    ("[users.x]\ntoken_sha256 = 'abc'\n", "users.x.token_sha256 (line 2)", "64 lowercase hex"),
    (f"[users.x]\ntoken_sha256 = '{'a' * 64}'\nroles = ['ghost']\n", "users.x.roles (line 3)",
     "undefined role 'ghost'"),
    (f"[users.x]\ntoken_sha256 = '{'a' * 64}'\ncolour = 1\n", "users.x.colour (line 3)",
     "not a known setting"),
    (f"[users.x]\ntoken_sha256 = '{'a' * 64}'\n[users.y]\ntoken_sha256 = '{'a' * 64}'\n",
     "users.y.token_sha256 (line 4)", "same token as user 'x'"),
    ("[users.peer]\ntoken_sha256 = 'a'\n", "users.peer", 'not "peer"'),
    ("[roles.r]\nrules = [{ kind = 'keys', perms = ['read'] }]\n",
     "roles.r.rules[0].kind (line 2)", "must be one of kv, lock, entry, admin, *"),
    ("[roles.r]\nrules = [{ kind = 'kv', perms = ['execute'] }]\n",
     "roles.r.rules[0].perms (line 2)", '"read", "write", "admin"'),
    ("[roles.r]\nrules = [{ kind = 'kv', perms = [] }]\n", "roles.r.rules[0].perms",
     "non-empty"),
    ("[roles.r]\nrules = [{ kind = 'kv', prefix = 7, perms = ['read'] }]\n",
     "roles.r.rules[0].prefix", "string"),
    ("[roles.r]\nrules = 'all'\n", "roles.r.rules (line 2)", "list of"),
    ("[[roles.r.rules]]\nkind = 'kv'\nperms = ['read']\nwho = 'me'\n",
     "roles.r.rules[0].who (line 4)", "not a known setting"),
    ("[peer]\ntoken = 'short'\n", "peer.token (line 2)", "16.."),
    ("[peer]\ntoken = 'has a space in it!!'\n", "peer.token", "without spaces"),
    ("[public]\npaths = ['health']\n", "public.paths (line 2)", '"/health"'),
    ("roles = 3\n", "roles (line 1)", "must be a table"),
    ("[extra]\n", "extra (line 1)", "not a known setting"),
    ("[users\n", "not valid TOML", "line 1"),
]


@pytest.mark.parametrize(("text", "where", "problem"), BAD)
def test_malformed_file_names_the_key_and_line(text, where, problem):
    with pytest.raises(AuthFileError) as caught:
        parse(text, source="auth file t.toml")
    message = str(caught.value)
    assert message.startswith("auth file t.toml")
    assert where in message and problem in message, message


def test_peer_token_may_not_also_be_a_user_token():
    text = (f"[peer]\ntoken = '{PEER_TOKEN}'\n[users.x]\n"
            f"token_sha256 = '{hash_token(PEER_TOKEN)}'\n")
    with pytest.raises(AuthFileError, match="is also user 'x'"):
        parse(text)


def test_the_example_file_of_docs_auth_md_is_valid():
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "auth.md").read_text()
    example = doc.split("```toml\n", 1)[1].split("```", 1)[0]
    config = parse(example)
    alice = config.users["alice"][1]
    assert config.authenticate("app-token-2") == alice
    assert isinstance(decide(alice, Kind.KV, b"app/1", Perm.WRITE), Allowed)
    assert isinstance(decide(alice, Kind.LOCK, "jobs/1", Perm.WRITE), Allowed)
    assert isinstance(decide(alice, Kind.KV, b"other", Perm.READ), Denied)


@settings(max_examples=150, deadline=None)
@given(rules=st.lists(st.tuples(st.sampled_from(["kv", "lock", "entry", "admin", "*"]),
                                st.text(st.characters(exclude_categories=("Cs",)),
                                        max_size=20),
                                st.sets(st.sampled_from(["read", "write", "admin"]),
                                        min_size=1)),
                      max_size=5),
       token=st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=40))
def test_a_written_file_reads_back_as_the_same_rules(rules, token):
    """The parser keeps any prefix (quotes, control characters, non-ASCII) byte for byte."""

    def toml(text: str) -> str:  # a TOML basic string: escape what TOML requires
        return '"' + "".join(f"\\u{ord(c):04x}" if c in '"\\' or ord(c) < 0x20
                             or ord(c) == 0x7F else c for c in text) + '"'

    lines = ["[roles.r]", "rules = ["]
    lines += [f"  {{ kind = {toml(k)}, prefix = {toml(p)}, "
              f"perms = [{', '.join(toml(x) for x in sorted(g))}] }}," for k, p, g in rules]
    lines += ["]", "[users.u]", f'token_sha256 = "{hash_token(token)}"', 'roles = ["r"]']
    config = parse("\n".join(lines) + "\n")
    user = config.authenticate(token)
    assert user is not None and user.name == "u"
    assert user.rules == tuple(Rule(None if k == "*" else Kind(k), p.encode(),
                                    frozenset(Perm(x) for x in g)) for k, p, g in rules)
