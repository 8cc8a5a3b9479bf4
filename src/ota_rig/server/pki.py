"""The certificates an OTA scenario needs, made with trustme and written as PEM files.

A device that updates itself over HTTPS trusts one or more CA certificates compiled into its
sketch, and the update server presents a leaf certificate signed by one of them. `Pki` makes
both kinds in one folder::

    pki = Pki(tmp_path)
    cert = pki.dns()                        # DNS:ota.local, signed by the "main" CA
    server.add_listener("main", cert)       # the server presents cert.cert_pem + cert.key_pem
    sketch_ca = pki.authority().pem         # what the device trusts

The kinds a scenario asks for are methods: `dns` (from the main CA, or from the "new" CA of a
rotation drill), `ip`, `expired`, `not_yet_valid`, `other_ca`, `cn_only_ip` and `self_signed`.
They differ in exactly the property the scenario tests and are otherwise alike: an ECDSA P-256
key, basicConstraints CA:false, keyUsage, extendedKeyUsage serverAuth, valid 2000-3000 unless the dates are the point.

Why the IP kinds matter (reference section 9.5): Mbed TLS before 3.5 compares only dNSName
subjectAltNames, so trustme's IP-only SAN is refused by arduino-esp32 2.0.x and accepted from
3.1. A certificate with no SAN extension at all falls back to the subject CN and is accepted
by every core. trustme cannot make that one, nor a self-signed leaf, so `cn_only_ip` and
`self_signed` are built with `cryptography`.

Private keys are written with mode 0600, like any key a server reads.
"""

import datetime
import hashlib
import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_HOST = "ota.local"
DEFAULT_IP = "127.0.0.1"
ORGANIZATION = "rig"
# The validity trustme gives its certificates, for the ones built here by hand.
VALID_FROM = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)
VALID_UNTIL = datetime.datetime(3000, 1, 1, tzinfo=datetime.timezone.utc)


@dataclass(frozen=True)
class Authority:
    """A certificate authority: `pem` is what a device trusts, `cert_pem` the same as a file.

    `ca` is the trustme CA itself, which holds the private key that signs leaves.
    """

    name: str
    cert_pem: Path
    pem: str
    ca: trustme.CA = field(repr=False, compare=False)


@dataclass(frozen=True)
class ServerCert:
    """A leaf certificate a server presents, and the key that goes with it.

    `cert_pem` holds the leaf followed by any intermediate certificates (what the server
    sends in its Certificate message, the root excluded); `key_pem` the private key.
    `identities` are the names the certificate is for, in the order given; `host` is the
    first of them, the one a URL uses. Dates are timezone-aware UTC, as read back from the
    certificate, and `fingerprint` is the SHA-256 of the leaf's DER encoding in hex.
    """

    name: str
    identities: tuple[str, ...]
    cert_pem: Path
    key_pem: Path
    authority: Authority | None  # None: self-signed
    not_before: datetime.datetime
    not_after: datetime.datetime
    fingerprint: str

    @property
    def host(self) -> str:
        return self.identities[0]


class Pki:
    """CAs and server certificates for one scenario, written as PEM files into `folder`.

    CAs are made on first use and kept by name: "main" signs the certificates a device
    trusts, "other" stands for somebody else's CA, "new" for the CA a fleet rotates to.
    Files: `ca-<name>.pem` / `ca-<name>.key` for a CA, `<name>.pem` / `<name>.key` for a leaf.
    """

    def __init__(self, folder: Path, hostname: str = DEFAULT_HOST, address: str = DEFAULT_IP) -> None:
        self.folder = Path(folder)
        self.hostname = hostname  # the server's DNS name, as the device's update URL says it
        self.address = address  # the server's IP address, for certificates that name an address
        self.folder.mkdir(parents=True, exist_ok=True)
        self._authorities: dict[str, Authority] = {}
        self._certs: dict[str, ServerCert] = {}

    def authority(self, name: str = "main") -> Authority:
        """The CA called `name`, made (and written) the first time it is asked for."""
        if name not in self._authorities:
            ca = trustme.CA(organization_name=ORGANIZATION, organization_unit_name=f"{name} CA")
            cert_pem = self.folder / f"ca-{name}.pem"
            write_pem(cert_pem, ca.cert_pem.bytes())
            write_pem(self.folder / f"ca-{name}.key", ca.private_key_pem.bytes(), private=True)
            pem = ca.cert_pem.bytes().decode("ascii")
            self._authorities[name] = Authority(name, cert_pem, pem, ca)
        return self._authorities[name]

    def issue(
        self,
        name: str,
        *identities: str,
        ca: str = "main",
        not_before: datetime.datetime | None = None,
        not_after: datetime.datetime | None = None,
    ) -> ServerCert:
        """A leaf for DNS names and/or IP addresses, signed by the CA called `ca`.

        trustme puts every identity into the subjectAltName extension: a DNS name as
        dNSName, an address as iPAddress (and nothing in the subject CN). Dates default to
        2000-01-01 .. 3000-01-01; a naive datetime counts as UTC. Each name is issued once.
        """
        if not identities:
            raise ValueError("a server certificate needs at least one identity")
        if name in self._certs:
            raise ValueError(f"certificate {name!r} was already issued")
        authority = self.authority(ca)
        leaf = authority.ca.issue_cert(
            *identities,
            organization_name=ORGANIZATION,
            organization_unit_name=name,
            not_before=not_before,
            not_after=not_after,
        )
        chain = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
        return self._store(name, identities, authority, chain, leaf.private_key_pem.bytes())

    def dns(self, host: str | None = None, ca: str = "main") -> ServerCert:
        """The ordinary case: SAN DNS:`host` (default: the Pki's hostname), from the CA called
        `ca` (the main one unless a rotation drill says "new"). Every core accepts it."""
        host = host or self.hostname
        return self._kind(f"dns-{host}" if ca == "main" else f"dns-{host}-{ca}-ca", host, ca=ca)

    def ip(self, address: str | None = None) -> ServerCert:
        """SAN IP:`address` (default: the Pki's address) only, as trustme makes it: refused
        by Mbed TLS < 3.5."""
        address = address or self.address
        return self._kind(f"ip-{address}", address)

    def expired(self, host: str | None = None) -> ServerCert:
        """Valid from 60 days ago until yesterday; otherwise like `dns`."""
        return self._dated("expired", host, -60, -1)

    def not_yet_valid(self, host: str | None = None) -> ServerCert:
        """Valid from tomorrow for 60 days; otherwise like `dns`."""
        return self._dated("not-yet-valid", host, 1, 60)

    def _dated(self, kind: str, host: str | None, first_day: int, last_day: int) -> ServerCert:
        """Like `dns`, valid from `first_day` to `last_day` days from now."""
        host = host or self.hostname
        now = _now()
        return self._kind(
            f"{kind}-{host}",
            host,
            not_before=now + datetime.timedelta(days=first_day),
            not_after=now + datetime.timedelta(days=last_day),
        )

    def other_ca(self, host: str | None = None) -> ServerCert:
        """Like `dns`, but signed by the "other" CA, which the device does not trust."""
        host = host or self.hostname
        return self._kind(f"other-ca-{host}", host, ca="other")

    def cn_only_ip(self, address: str | None = None) -> ServerCert:
        """A leaf whose only identity is `address` in the subject CN: no subjectAltName.

        Signed by the main CA, with the extensions a real server certificate has. Mbed TLS
        falls back to the CN when there is no SAN extension, so every core accepts it;
        OpenSSL-based clients do not.
        """
        address = str(ipaddress.ip_address(address or self.address))
        name = f"cn-only-{address}"
        if name not in self._certs:
            self._hand_made(name, address, sans=(), signer=self.authority())
        return self._certs[name]

    def self_signed(self, host: str | None = None) -> ServerCert:
        """SAN DNS:`host`, signed by its own key, as `openssl req -x509` or a device's web
        UI makes one: no CA a device trusts vouches for it."""
        host = host or self.hostname
        name = f"self-signed-{host}"
        if name not in self._certs:
            self._hand_made(name, host, sans=(x509.DNSName(host),), signer=None)
        return self._certs[name]

    def _hand_made(
        self, name: str, identity: str, sans: tuple[x509.GeneralName, ...], signer: "Authority | None"
    ) -> ServerCert:
        """A leaf trustme cannot make, built with `cryptography`: subject CN `identity`, the
        given SANs (none: no SAN extension at all), basicConstraints CA:false, keyUsage,
        extendedKeyUsage serverAuth and key identifiers; signed by `signer`'s CA, or by its
        own key when `signer` is None."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, name),
                x509.NameAttribute(NameOID.COMMON_NAME, identity),
            ]
        )
        if signer is None:
            issuer, signing_key = subject, key
        else:
            issuer = x509.load_pem_x509_certificate(signer.ca.cert_pem.bytes()).subject
            ca_key = load_pem_private_key(signer.ca.private_key_pem.bytes(), password=None)
            if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
                raise TypeError(f"the {signer.name} CA's key is not an EC key, the kind trustme.CA() makes")
            signing_key = ca_key
        usage = x509.KeyUsage(
            digital_signature=True,
            content_commitment=False,
            key_encipherment=True,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=False,
            crl_sign=False,
            encipher_only=False,
            decipher_only=False,
        )
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(VALID_FROM)
            .not_valid_after(VALID_UNTIL)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage, critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(signing_key.public_key()),
                critical=False,
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
        cert = builder.sign(signing_key, hashes.SHA256())
        key_pem = key.private_bytes(Encoding.PEM, PrivateFormat.TraditionalOpenSSL, NoEncryption())
        return self._store(name, (identity,), signer, cert.public_bytes(Encoding.PEM), key_pem)

    def find(self, name: str) -> ServerCert:
        """The certificate issued under `name` (KeyError if none was)."""
        return self._certs[name]

    def bundle(self, *authorities: Authority) -> str:
        """The PEM text of several CA certificates, one after the other: a sketch's trust list."""
        if not authorities:
            raise ValueError("a bundle needs at least one authority")
        return "".join(authority.pem for authority in authorities)

    def write_bundle(self, filename: str, *authorities: Authority) -> Path:
        """Write `bundle(*authorities)` to `folder/filename` and return its path."""
        path = self.folder / filename
        write_pem(path, self.bundle(*authorities).encode("ascii"))
        return path

    def _kind(self, name: str, identity: str, **options) -> ServerCert:
        """The certificate `name`, issued for `identity` the first time it is asked for."""
        if name not in self._certs:
            self.issue(name, identity, **options)
        return self._certs[name]

    def _store(
        self,
        name: str,
        identities: tuple[str, ...],
        authority: "Authority | None",
        chain_pem: bytes,
        key_pem: bytes,
    ) -> ServerCert:
        """Write a leaf's files and describe it from what was written."""
        cert_path = self.folder / f"{name}.pem"
        key_path = self.folder / f"{name}.key"
        write_pem(cert_path, chain_pem)
        write_pem(key_path, key_pem, private=True)
        leaf = x509.load_pem_x509_certificates(chain_pem)[0]
        cert = ServerCert(
            name=name,
            identities=tuple(identities),
            cert_pem=cert_path,
            key_pem=key_path,
            authority=authority,
            not_before=leaf.not_valid_before_utc,
            not_after=leaf.not_valid_after_utc,
            fingerprint=fingerprint(leaf),
        )
        self._certs[name] = cert
        return cert


def fingerprint(cert: x509.Certificate) -> str:
    """A certificate's SHA-256 fingerprint: of its DER encoding, in lowercase hex."""
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


def write_pem(path: Path, data: bytes, private: bool = False) -> None:
    """Write `data` to `path`; a private file is mode 0600 whatever the umask or old mode."""
    mode = 0o600 if private else 0o644
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as file:
        if private:
            os.fchmod(file.fileno(), mode)
        file.write(data)
