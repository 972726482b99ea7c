"""A development certificate authority and the certificates of a TLS cluster (with the
`cryptography` package); `kv certs` (kvstore/cli_certs.py) is its command line.

Issuing (`make_ca`, `make_node`, `make_client`) does no I/O; `init`, `issue_node` and
`issue_client` write files. Every name is checked first (CertError, a ValueError, saying
what is wrong), so bad input writes nothing.

Files in DIR (PEM; keys are written 0600, certificates 0644, nothing is overwritten
without `--force`):

    ca.crt, ca.key                    the CA (ECDSA P-256, self-signed, CA:TRUE, pathlen 0)
    node-HOST-PORT.crt, .key          a node: subject CN=HOST, OU="ringlock node"; SAN the
                                      host (an IP address or a DNS name); EKU serverAuth and
                                      clientAuth (it serves and it dials its peers)
    client-NAME.crt, .key             a user: CN=NAME, OU="ringlock client"; EKU clientAuth

The node certificate names its host only, so nodes sharing a host could share one; each
node gets its own key all the same. Peer routes accept only the OU of node certificates
(kvstore/tls.py). This is a development CA: its key sits unencrypted beside the
certificates; production clusters use their own PKI with the same subject rules.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kvstore.tls import CLIENT_OU, NODE_OU

CA_DAYS = 3650
LEAF_DAYS = 825
_DNS_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_CLIENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class CertError(ValueError):
    """Bad input or a file that cannot be written; the message says which."""


@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


# -- names ------------------------------------------------------------------------------------


def parse_host(host: str) -> x509.GeneralName:
    """`host` as the SAN it goes into: an IPAddress or a DNSName; CertError otherwise."""
    if not isinstance(host, str) or not host:
        raise CertError("a host is an IP address or a DNS name, not empty")
    try:
        return x509.IPAddress(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        pass
    name = host[:-1] if host.endswith(".") else host
    if len(name) > 253 or not all(_DNS_LABEL.match(label) for label in name.split(".")):
        raise CertError(f"not an IP address or a DNS name: {host[:80]!r}")
    return x509.DNSName(name.lower())


def parse_node(node: str) -> tuple[str, int]:
    """"HOST:PORT" (a node's name) as (host, port); CertError when malformed."""
    host, sep, port = node.rpartition(":") if isinstance(node, str) else ("", "", "")
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise CertError(f"a node is named HOST:PORT with a port in 1..65535, not {node!r:.80}")
    parse_host(host)
    return host.strip("[]"), int(port)


def node_stem(node: str) -> str:
    host, port = parse_node(node)
    return f"node-{host.replace(':', '_')}-{port}"


def check_client_name(name: str) -> str:
    if not isinstance(name, str) or not _CLIENT_NAME.match(name):
        raise CertError(f"a client name is 1-64 letters, digits, '.', '_' or '-', not "
                        f"{name!r:.80}")
    return name


# -- issuing (no I/O) ---------------------------------------------------------------------------


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)  # some clock skew


def make_ca(common_name: str = "ringlock development CA", days: int = CA_DAYS) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ringlock"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    start = _now()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return Issued(cert, key)


def _leaf(ca: Issued, common_name: str, unit: str, sans: list[x509.GeneralName],
          usages: list[x509.ObjectIdentifier], days: int) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ringlock"),
                         x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit),
                         x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    start = _now()
    builder = (x509.CertificateBuilder().subject_name(subject)
               .issuer_name(ca.cert.subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(start).not_valid_after(start + dt.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False,
                                            key_cert_sign=False, crl_sign=False,
                                            content_commitment=False, data_encipherment=False,
                                            key_agreement=True, encipher_only=False,
                                            decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   ca.key.public_key()), critical=False))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return Issued(builder.sign(ca.key, hashes.SHA256()), key)


def make_node(ca: Issued, node: str, days: int = LEAF_DAYS) -> Issued:
    """A node's certificate: SAN its host, serverAuth + clientAuth, OU NODE_OU."""
    host, _port = parse_node(node)
    return _leaf(ca, host, NODE_OU, [parse_host(host)],
                 [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH], days)


def make_client(ca: Issued, name: str, days: int = LEAF_DAYS) -> Issued:
    """A user's certificate: clientAuth only, OU CLIENT_OU (refused on peer routes)."""
    return _leaf(ca, check_client_name(name), CLIENT_OU, [],
                 [ExtendedKeyUsageOID.CLIENT_AUTH], days)


# -- files ------------------------------------------------------------------------------------


def _pem(issued: Issued) -> tuple[bytes, bytes]:
    return (issued.cert.public_bytes(serialization.Encoding.PEM),
            issued.key.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()))


def _write(path: Path, data: bytes, mode: int, force: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(path, flags, mode)
    except FileExistsError:
        raise CertError(f"{path} exists; pass --force to replace it") from None
    except OSError as exc:
        raise CertError(f"cannot write {path}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), mode)  # also when --force replaced a file of another mode
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_pair(folder: Path, stem: str, issued: Issued, force: bool = False) -> tuple[Path, Path]:
    """FOLDER/STEM.crt (0644) and FOLDER/STEM.key (0600); CertError if either exists
    (without `force`) or cannot be written. Both are checked before either is written."""
    crt, key = folder / f"{stem}.crt", folder / f"{stem}.key"
    if not force:
        for path in (crt, key):
            if path.exists():
                raise CertError(f"{path} exists; pass --force to replace it")
    cert_pem, key_pem = _pem(issued)
    _write(key, key_pem, 0o600, force)
    _write(crt, cert_pem, 0o644, force)
    return crt, key


def ensure_dir(folder: Path) -> Path:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CertError(f"cannot create {folder}: {exc.strerror}") from None
    if not folder.is_dir():
        raise CertError(f"{folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CertError(f"{folder} is not writable")
    return folder


def load_ca(folder: Path) -> Issued:
    """The CA in FOLDER (ca.crt, ca.key); CertError when absent or damaged."""
    try:
        cert = x509.load_pem_x509_certificate((folder / "ca.crt").read_bytes())
        key = serialization.load_pem_private_key((folder / "ca.key").read_bytes(), None)
    except FileNotFoundError as exc:
        raise CertError(f"no CA in {folder} ({exc.filename} is missing): run "
                        f"`kv certs init --dir {folder}` first") from None
    except OSError as exc:
        raise CertError(f"cannot read the CA in {folder}: {exc.strerror}") from None
    except (ValueError, TypeError) as exc:
        raise CertError(f"the CA in {folder} is damaged: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertError(f"the CA key in {folder} is not an EC key (not made by kv certs)")
    return Issued(cert, key)


def init(folder: Path, nodes: Sequence[str] = (), clients: Sequence[str] = (), *,
         force: bool = False, days: int = LEAF_DAYS) -> list[Path]:
    """A new CA in `folder`, then a certificate per node and client; the files written.
    Every name is checked before anything is written."""
    for node in nodes:
        parse_node(node)
    for name in clients:
        check_client_name(name)
    ensure_dir(folder)
    ca = make_ca()
    written = list(write_pair(folder, "ca", ca, force))
    for node in nodes:
        written += write_pair(folder, node_stem(node), make_node(ca, node, days), force)
    for name in clients:
        written += write_pair(folder, f"client-{name}", make_client(ca, name, days), force)
    return written


def issue_node(folder: Path, node: str, *, force: bool = False,
               days: int = LEAF_DAYS) -> list[Path]:
    stem = node_stem(node)
    ca = load_ca(ensure_dir(folder))
    return list(write_pair(folder, stem, make_node(ca, node, days), force))


def issue_client(folder: Path, name: str, *, force: bool = False,
                 days: int = LEAF_DAYS) -> list[Path]:
    stem = f"client-{check_client_name(name)}"
    ca = load_ca(ensure_dir(folder))
    return list(write_pair(folder, stem, make_client(ca, name, days), force))
