"""`kv certs` (kvstore/certs.py, kvstore/cli_certs.py) and the contexts of kvstore/tls.py,
without node processes: the CA signs what it issues, SANs and key usages are right, keys
are private, nothing is overwritten without --force, hostile names and unwritable folders
get a clear error and write nothing; contexts refuse bad files with the file's name; the
peer-route check and the client's choice of scheme as pure functions.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kvstore import certs, cli_certs, tls
from kvstore.cli import main as kv_main
from kvstore.config import ConfigError, NodeConfig, add_arguments, from_args
from lockservice import members


@pytest.fixture(scope="module")
def ca() -> certs.Issued:
    return certs.make_ca()


def san(cert: x509.Certificate) -> x509.SubjectAlternativeName:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


def eku(cert: x509.Certificate) -> set:
    return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def ou(cert: x509.Certificate) -> str:
    return cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value


def test_the_ca_signs_a_node_certificate_that_names_its_ip_and_serves_and_dials(ca) -> None:
    node = certs.make_node(ca, "127.0.0.1:7001")
    node.cert.verify_directly_issued_by(ca.cert)  # raises if the CA did not sign it
    assert san(node.cert).get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1")]
    assert san(node.cert).get_values_for_type(x509.DNSName) == []
    assert eku(node.cert) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert ou(node.cert) == tls.NODE_OU
    assert not node.cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca.cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_a_dns_named_node_gets_a_dns_san_and_an_ipv6_node_an_ip_san(ca) -> None:
    dns = certs.make_node(ca, "ringlock-0.ringlock.default.svc:7001")
    assert san(dns.cert).get_values_for_type(x509.DNSName) == [
        "ringlock-0.ringlock.default.svc"]
    v6 = certs.make_node(ca, "[::1]:7001")
    assert san(v6.cert).get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("::1")]


def test_a_client_certificate_is_client_only_and_not_a_node(ca) -> None:
    client = certs.make_client(ca, "alice")
    client.cert.verify_directly_issued_by(ca.cert)
    assert eku(client.cert) == {ExtendedKeyUsageOID.CLIENT_AUTH}
    assert ou(client.cert) == tls.CLIENT_OU


def test_a_certificate_of_another_ca_is_not_issued_by_ours(ca) -> None:
    other = certs.make_node(certs.make_ca(), "127.0.0.1:7001")
    with pytest.raises(InvalidSignature):  # same issuer name, another key
        other.cert.verify_directly_issued_by(ca.cert)


def test_init_writes_the_ca_and_certificates_with_private_keys(tmp_path: Path) -> None:
    folder = tmp_path / "certs"
    written = certs.init(folder, ["127.0.0.1:7001", "localhost:7002"], ["alice"])
    names = sorted(p.name for p in written)
    assert names == sorted(["ca.crt", "ca.key", "node-127.0.0.1-7001.crt",
                            "node-127.0.0.1-7001.key", "node-localhost-7002.crt",
                            "node-localhost-7002.key", "client-alice.crt", "client-alice.key"])
    for path in written:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o600 if path.suffix == ".key" else 0o644), path
    # the files make working contexts: a node's server side and a client that verifies it
    server = tls.server_context(folder / "node-localhost-7002.crt",
                                folder / "node-localhost-7002.key", folder / "ca.crt")
    assert server.verify_mode == ssl.CERT_OPTIONAL
    assert server.minimum_version == ssl.TLSVersion.TLSv1_2
    client = tls.client_context(folder / "ca.crt", folder / "client-alice.crt",
                                folder / "client-alice.key")
    assert client.check_hostname and client.verify_mode == ssl.CERT_REQUIRED


def test_nothing_is_overwritten_without_force(tmp_path: Path) -> None:
    folder = tmp_path / "certs"
    certs.init(folder)
    before = (folder / "ca.key").read_bytes()
    with pytest.raises(certs.CertError, match="exists; pass --force"):
        certs.init(folder)
    assert (folder / "ca.key").read_bytes() == before
    certs.issue_node(folder, "127.0.0.1:7001")
    node_key = (folder / "node-127.0.0.1-7001.key").read_bytes()
    with pytest.raises(certs.CertError, match="exists"):
        certs.issue_node(folder, "127.0.0.1:7001")
    assert (folder / "node-127.0.0.1-7001.key").read_bytes() == node_key
    certs.issue_node(folder, "127.0.0.1:7001", force=True)
    assert (folder / "node-127.0.0.1-7001.key").read_bytes() != node_key
    issued = x509.load_pem_x509_certificate((folder / "node-127.0.0.1-7001.crt").read_bytes())
    issued.verify_directly_issued_by(certs.load_ca(folder).cert)


@pytest.mark.parametrize("node", [
    "", "7001", "host:", ":7001", "host:0", "host:65536", "host:70x", "bad_name:7001",
    "-leading.example:7001", "a..b:7001", "x" * 64 + ".example:7001", "../../etc:7001",
    "host name:7001", "h\x00st:7001", "é.example:7001",
])
def test_hostile_node_names_are_refused_and_write_nothing(tmp_path: Path, node: str) -> None:
    folder = tmp_path / "certs"
    with pytest.raises(certs.CertError):
        certs.init(folder, ["127.0.0.1:7001", node])
    assert not folder.exists()


@pytest.mark.parametrize("name", ["", "../x", "a/b", "a b", "-x", "x" * 65, "é", "a\nb"])
def test_hostile_client_names_are_refused(tmp_path: Path, name: str) -> None:
    certs.init(tmp_path)
    with pytest.raises(certs.CertError, match="client name"):
        certs.issue_client(tmp_path, name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ca.crt", "ca.key"]


def test_an_unwritable_folder_or_a_missing_ca_gets_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(certs.CertError, match="cannot create"):
        certs.init(blocker / "certs")
    with pytest.raises(certs.CertError, match="no CA in"):
        certs.issue_node(tmp_path / "empty", "127.0.0.1:7001")
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "ca.crt").write_text("garbage")
    (tmp_path / "damaged" / "ca.key").write_text("garbage")
    with pytest.raises(certs.CertError, match="damaged"):
        certs.issue_client(tmp_path / "damaged", "alice")


def test_kv_certs_prints_what_it_wrote_and_fails_with_one_line(tmp_path: Path,
                                                             capsys) -> None:
    folder = tmp_path / "c"
    assert kv_main(["certs", "init", "--dir", str(folder), "--node",
                    "127.0.0.1:7001,127.0.0.1:7002", "--client", "ops"]) == 0
    out = capsys.readouterr().out.split()
    assert len(out) == 8 and str(folder / "client-ops.key") in out
    assert kv_main(["certs", "node", "127.0.0.1:7003", "--dir", str(folder)]) == 0
    capsys.readouterr()
    assert kv_main(["certs", "node", "127.0.0.1:7003", "--dir", str(folder)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("kv certs node: ") and "--force" in err and err.count("\n") == 1
    assert kv_main(["certs", "node", "nope", "--dir", str(folder)]) == 1
    assert "HOST:PORT" in capsys.readouterr().err
    assert kv_main(["certs", "client", "x", "--dir", str(folder), "--days", "0"]) == 1
    assert "--days" in capsys.readouterr().err


def test_the_certs_command_parses_without_cryptography_loaded() -> None:
    parser = argparse.ArgumentParser()
    cli_certs.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["certs", "node", "127.0.0.1:1", "--dir", "d", "--force"])
    assert (args.verb, args.name, args.dir, args.force) == ("node", "127.0.0.1:1", Path("d"),
                                                           True)


# -- kvstore/tls.py ---------------------------------------------------------------------------


def test_contexts_name_the_file_that_is_wrong(tmp_path: Path) -> None:
    certs.init(tmp_path, ["127.0.0.1:7001", "127.0.0.1:7002"])
    crt, key = tmp_path / "node-127.0.0.1-7001.crt", tmp_path / "node-127.0.0.1-7001.key"
    with pytest.raises(tls.TLSError, match=r"certificate file .*missing\.crt does not exist"):
        tls.server_context(tmp_path / "missing.crt", key, tmp_path / "ca.crt")
    (tmp_path / "junk.pem").write_text("hello")
    with pytest.raises(tls.TLSError, match=r"CA file .*junk\.pem is not PEM"):
        tls.server_context(crt, key, tmp_path / "junk.pem")
    with pytest.raises(tls.TLSError, match="cannot be used together"):
        tls.server_context(crt, tmp_path / "node-127.0.0.1-7002.key", tmp_path / "ca.crt")
    with pytest.raises(tls.TLSError, match="needs its key"):
        tls.client_context(tmp_path / "ca.crt", crt, None)
    (tmp_path / "bad-ca.crt").write_text("-----BEGIN CERTIFICATE-----\nAAAA\n"
                                         "-----END CERTIFICATE-----\n")
    with pytest.raises(tls.TLSError, match="CA file"):
        tls.client_context(tmp_path / "bad-ca.crt")


def test_peer_routes_are_known_and_only_node_certificates_pass() -> None:
    assert tls.is_peer_request("/internal/v1/merge", {})
    assert tls.is_peer_request("/raft/stream", {})
    assert tls.is_peer_request("/lock/v1/sessions", {tls.FORWARDED_HEADER: "1"})
    assert not tls.is_peer_request("/kv/internal/x", {})
    assert not tls.is_peer_request("/lock/v1/sessions", {})
    node = {"subject": ((("organizationName", "ringlock"),),
                        (("organizationalUnitName", tls.NODE_OU),), (("commonName", "h"),))}
    client = {"subject": ((("organizationalUnitName", tls.CLIENT_OU),),)}
    assert tls.peer_refusal(node) is None
    assert tls.peer_refusal(None)[:2] == (401, "unauthenticated")
    assert tls.peer_refusal({})[:2] == (401, "unauthenticated")
    assert tls.peer_refusal(client)[:2] == (403, "forbidden")


def test_the_client_scheme_follows_the_options_and_the_urls(tmp_path: Path) -> None:
    certs.init(tmp_path)
    ca = tmp_path / "ca.crt"
    assert tls.client_setup(["127.0.0.1:1"]) == ("http", None)
    assert tls.client_setup("http://127.0.0.1:1,127.0.0.1:2") == ("http", None)
    scheme, ctx = tls.client_setup(["https://127.0.0.1:1"])
    assert scheme == "https" and ctx.verify_mode == ssl.CERT_REQUIRED
    assert tls.client_setup(["127.0.0.1:1"], ca)[0] == "https"
    with pytest.raises(tls.TLSError, match="mixes"):
        tls.client_setup(["https://127.0.0.1:1", "http://127.0.0.1:2"])
    with pytest.raises(tls.TLSError, match="mixes"):
        tls.client_setup(["http://127.0.0.1:1"], ca)


def test_the_node_takes_all_three_tls_files_or_none() -> None:
    base = {"name": "127.0.0.1:7001", "data": "d"}
    assert NodeConfig(**base).tls_cert is None
    full = NodeConfig(**base, tls_cert="a.crt", tls_key="a.key", tls_ca="ca.crt")
    assert full.tls_cert == Path("a.crt") and full.tls_ca == Path("ca.crt")
    for partial in ({"tls_cert": "a.crt"}, {"tls_cert": "a", "tls_key": "b"},
                    {"tls_cert": "a", "tls_key": "b", "tls_ca": ""},
                    {"tls_cert": "a", "tls_key": "b", "tls_ca": 5}):
        with pytest.raises(ConfigError, match="go together"):
            NodeConfig(**base, **partial)


def test_lock_members_take_https_urls_and_tls_files(tmp_path: Path) -> None:
    certs.init(tmp_path, [], ["ops"])
    assert members.parse_members("1=https://127.0.0.1:7001,https://h:2") == [
        "https://127.0.0.1:7001", "https://h:2"]
    with pytest.raises(ValueError, match="host:port"):
        members.parse_members("https://127.0.0.1")
    group = members.Members(["https://127.0.0.1:7001", "https://127.0.0.1:7002"])
    assert (group.scheme, group.addresses) == ("https", ["127.0.0.1:7001", "127.0.0.1:7002"])
    context = members.client_context(str(tmp_path / "ca.crt"), str(tmp_path / "client-ops.crt"),
                                     str(tmp_path / "client-ops.key"))
    assert members.Members(["127.0.0.1:7001"], tls=context).scheme == "https"
    assert members.Members(["127.0.0.1:7001"]).scheme == "http"
    with pytest.raises(ValueError, match="mix"):
        members.Members(["https://127.0.0.1:7001", "http://127.0.0.1:7002"])
    with pytest.raises(ValueError, match="cannot be used"):
        members.client_context(str(tmp_path / "missing.crt"))
    with pytest.raises(ValueError, match="needs its key"):
        members.client_context(None, str(tmp_path / "client-ops.crt"))


def test_the_tls_files_come_from_flags_or_the_toml_file(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    toml = tmp_path / "node.toml"
    toml.write_text('name = "127.0.0.1:7001"\ndata = "d"\ntls-cert = "n.crt"\n'
                    'tls-key = "n.key"\ntls-ca = "ca.crt"\n')
    config = from_args(parser.parse_args(["--config", str(toml), "--tls-ca", "other.crt"]))
    assert (config.tls_cert, config.tls_key, config.tls_ca) == (
        Path("n.crt"), Path("n.key"), Path("other.crt"))  # the flag wins over the file
    toml.write_text('name = "127.0.0.1:7001"\ndata = "d"\ntls-cert = "n.crt"\n')
    with pytest.raises(ConfigError, match="go together"):
        from_args(parser.parse_args(["--config", str(toml)]))


async def _handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> dict | None:
    """One TLS connection on 127.0.0.1: the client certificate the server saw."""
    seen: list = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(writer.get_extra_info("peercert"))
        writer.write(b"ok")
        await writer.drain()
        writer.close()

    listener = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server)
    port = listener.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client,
                                                       server_hostname="127.0.0.1")
        assert await reader.read() == b"ok"
        writer.close()
    finally:
        listener.close()
        await listener.wait_closed()
    return seen[0]


def test_a_ca_rotation_works_through_a_file_of_both_cas(tmp_path: Path) -> None:
    """docs/tls.md "Rotating certificates": nodes and clients that trust old + new CA
    accept certificates of either; a client that trusts only the old CA refuses a node
    that already has its new certificate."""
    node = "127.0.0.1:7001"
    old, new = tmp_path / "old", tmp_path / "new"
    certs.init(old, [node])
    certs.init(new, [node])
    both = tmp_path / "both.crt"
    both.write_bytes((old / "ca.crt").read_bytes() + (new / "ca.crt").read_bytes())
    stem = certs.node_stem(node)
    rotated = tls.server_context(new / f"{stem}.crt", new / f"{stem}.key", both)
    not_yet = tls.client_context(both, old / f"{stem}.crt", old / f"{stem}.key")
    peer = asyncio.run(_handshake(rotated, not_yet))
    assert tls.peer_refusal(peer) is None  # an old-CA node certificate still passes
    stale_client = tls.client_context(old / "ca.crt")
    with pytest.raises(ssl.SSLCertVerificationError):
        asyncio.run(_handshake(rotated, stale_client))
