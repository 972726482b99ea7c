"""`kv auth` (kvstore/cli_auth.py): tokens made, hashed and added to an auth file that the
node would accept; a change that would break the file is refused and the file unchanged."""

from __future__ import annotations

from kvstore.auth import hash_token, parse
from kvstore.cli import main

BASE = '[roles.reader]\nrules = [{ kind = "kv", prefix = "", perms = ["read"] }]\n'


def test_add_user_appends_a_hash_and_prints_the_token_once(tmp_path, capsys):
    path = tmp_path / "auth.toml"
    path.write_text(BASE)
    assert main(["auth", "add-user", "bob", "--role", "reader", "--file", str(path)]) == 0
    token = capsys.readouterr().out.strip()
    assert len(token) >= 40 and token not in path.read_text()
    config = parse(path.read_text())
    assert config.authenticate(token).name == "bob"
    assert config.users["bob"][0] == hash_token(token)


def test_add_user_refuses_a_change_that_breaks_the_file(tmp_path, capsys):
    path = tmp_path / "auth.toml"
    path.write_text(BASE)
    assert main(["auth", "add-user", "eve", "--role", "ghost", "--file", str(path)]) == 1
    assert "undefined role 'ghost'" in capsys.readouterr().err
    assert main(["auth", "add-user", "peer", "--role", "reader", "--file", str(path)]) == 1
    assert path.read_text() == BASE


def test_hash_token_and_new_token(capsys):
    assert main(["auth", "hash-token", "app-token-2"]) == 0
    assert capsys.readouterr().out.strip() == hash_token("app-token-2")
    assert main(["auth", "new-token"]) == 0
    token_line, hash_line = capsys.readouterr().out.splitlines()
    assert hash_line.split(" = ")[1] == hash_token(token_line.split(" = ")[1])


def test_check_reports_a_valid_file_and_names_the_problem_of_a_bad_one(tmp_path, capsys):
    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    good.write_text(BASE)
    bad.write_text(BASE + "[users.x]\ntoken = 'plain'\n")
    assert main(["auth", "check", str(good)]) == 0
    assert "valid" in capsys.readouterr().out
    assert main(["auth", "check", str(bad)]) == 1
    assert "users.x.token (line 4)" in capsys.readouterr().err
    assert main(["auth", "check", str(tmp_path / "missing.toml")]) == 1
    assert "cannot read auth file" in capsys.readouterr().err
