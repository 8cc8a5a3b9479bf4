"""The twin's TLS client: arduino-esp32's ssl_client.cpp on Mbed TLS (python-mbedtls).

Mbed TLS itself does the TLS 1.2 protocol (handshake, key exchange, records, encryption). What
the bundled Mbed TLS (2.28.8, built with MBEDTLS_HAVE_TIME_DATE) cannot do is verify a
certificate the way a device of a given profile does: stock arduino-esp32 ignores certificate
dates, and only Mbed TLS >= 3.5 (arduino-esp32 3.1+) matches IP-address SANs. So Mbed TLS runs
with verification optional (python-mbedtls `validate_certificates=False` sets
MBEDTLS_SSL_VERIFY_OPTIONAL: it verifies, records flags and goes on), and this module applies
the device's own verification at the moment the device does it:

* the handshake is driven through python-mbedtls's memory buffers; this module reads the
  server's bytes from the socket and hands them over one handshake message at a time (a TLS 1.2
  handshake is plaintext until ChangeCipherSpec; re-framing records does not change the
  handshake transcript);
* when Mbed TLS asks for the server's Certificate message, the chain is verified here first:
  Mbed TLS's own signature check (`CRT.verify`), issuer/subject matching, CA bit, key usage,
  path length, the X.509 profile, and the host name with the profile's rules - a port of
  mbedtls x509_crt_verify_chain()/x509_crt_verify_name() without time checks (2.28.4, 3.6.0);
* on a failure the client sends the single fatal alert Mbed TLS would (ssl_tls.c's order),
  closes the socket and raises TlsError(-9984, ...), as start_ssl_client() returns it.

Facts: shared/reference/esp32-ota-device.md sections 8 and 9.
"""

from __future__ import annotations

import base64
import errno as errnos
import ipaddress
import logging
import os
import re
import select
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone

from mbedtls import tls as mtls
from mbedtls import x509 as mx509
from mbedtls._tls import _get_ciphersuite_name
from mbedtls.exceptions import TLSError as MbedError

from rig.virtual.profiles import Profile

log = logging.getLogger(__name__)

__all__ = [
    "ALERTS",
    "BADCERT",
    "Certificate",
    "TlsError",
    "TlsSession",
    "TlsTimeout",
    "alert_for_flags",
    "check_server_certificate",
    "connect",
    "load_ca_bundle",
    "mbedtls_strerror",
    "verify_certificate",
    "verify_info",
]

# --- Mbed TLS constants ---------------------------------------------------------------------

ERR_CERT_VERIFY_FAILED = -0x2700  # MBEDTLS_ERR_X509_CERT_VERIFY_FAILED, -9984
ERR_X509_FATAL_ERROR = -0x3000  # chain longer than MBEDTLS_X509_MAX_INTERMEDIATE_CA
ERR_BAD_HS_CERTIFICATE = -0x7A00  # MBEDTLS_ERR_SSL_BAD_HS_CERTIFICATE (3.x: _BAD_CERTIFICATE)
ERR_CONN_EOF = -0x7280
ERR_PEER_CLOSE_NOTIFY = -0x7880
ERR_SSL_TIMEOUT = -0x6800
ERR_NET_RECV_FAILED = -0x004C
ERR_NET_SEND_FAILED = -0x004E
ERR_NET_CONN_RESET = -0x0050
ERR_UNKNOWN_SIG_ALG = -0x262E  # MBEDTLS_ERR_X509_UNKNOWN_SIG_ALG + MBEDTLS_ERR_OID_NOT_FOUND
MAX_INTERMEDIATE_CA = 8

# Verification flags (mbedtls x509.h) and mbedtls_x509_crt_verify_info()'s texts, in its order.
BADCERT = {
    "EXPIRED": 0x01,
    "REVOKED": 0x02,
    "CN_MISMATCH": 0x04,
    "NOT_TRUSTED": 0x08,
    "MISSING": 0x40,
    "OTHER": 0x0100,
    "FUTURE": 0x0200,
    "KEY_USAGE": 0x0800,
    "EXT_KEY_USAGE": 0x1000,
    "NS_CERT_TYPE": 0x2000,
    "BAD_MD": 0x4000,
    "BAD_PK": 0x8000,
    "BAD_KEY": 0x010000,
}
_VERIFY_STRINGS = (
    (0x01, "The certificate validity has expired"),
    (0x02, "The certificate has been revoked (is on a CRL)"),
    (0x04, "The certificate Common Name (CN) does not match with the expected CN"),
    (0x08, "The certificate is not correctly signed by the trusted CA"),
    (0x10, "The CRL is not correctly signed by the trusted CA"),
    (0x20, "The CRL is expired"),
    (0x40, "Certificate was missing"),
    (0x80, "Certificate verification was skipped"),
    (0x0100, "Other reason (can be used by verify callback)"),
    (0x0200, "The certificate validity starts in the future"),
    (0x0400, "The CRL is from the future"),
    (0x0800, "Usage does not match the keyUsage extension"),
    (0x1000, "Usage does not match the extendedKeyUsage extension"),
    (0x2000, "Usage does not match the nsCertType extension"),
    (0x4000, "The certificate is signed with an unacceptable hash."),
    (0x8000, "The certificate is signed with an unacceptable PK alg (eg RSA vs ECDSA)."),
    (0x010000, "The certificate is signed with an unacceptable key (eg bad curve, RSA too short)."),
    (0x020000, "The CRL is signed with an unacceptable hash."),
    (0x040000, "The CRL is signed with an unacceptable PK alg (eg RSA vs ECDSA)."),
    (0x080000, "The CRL is signed with an unacceptable key (eg bad curve, RSA too short)."),
)

ALERTS = {
    0: "close_notify", 10: "unexpected_message", 20: "bad_record_mac", 22: "record_overflow",
    40: "handshake_failure", 42: "bad_certificate", 43: "unsupported_certificate",
    44: "certificate_revoked", 45: "certificate_expired", 46: "certificate_unknown",
    47: "illegal_parameter", 48: "unknown_ca", 49: "access_denied", 50: "decode_error",
    51: "decrypt_error", 70: "protocol_version", 71: "insufficient_security",
    80: "internal_error", 90: "user_canceled", 100: "no_renegotiation",
    110: "unsupported_extension", 112: "unrecognized_name",
}
# ssl_parse_certificate_verify(): the first matching flag picks the one fatal alert sent.
_ALERT_ORDER = (
    (BADCERT["OTHER"], 49),
    (BADCERT["CN_MISMATCH"], 42),
    (BADCERT["KEY_USAGE"] | BADCERT["EXT_KEY_USAGE"] | BADCERT["NS_CERT_TYPE"]
     | BADCERT["BAD_PK"] | BADCERT["BAD_KEY"], 43),
    (BADCERT["EXPIRED"], 45),
    (BADCERT["REVOKED"], 44),
    (BADCERT["NOT_TRUSTED"], 48),
)
_CERT_UNKNOWN = 46

_CT_CCS, _CT_ALERT, _CT_HANDSHAKE, _CT_APPDATA = 20, 21, 22, 23
_HS_SERVER_HELLO, _HS_CERTIFICATE = 2, 11
_MAX_FRAGMENT = 16384


def mbedtls_strerror(code: int) -> str:
    """mbedtls_strerror() of a negative Mbed TLS code, from the bundled Mbed TLS."""
    return MbedError(abs(code)).msg


def verify_info(flags: int, prefix: str = "") -> list[str]:
    """mbedtls_x509_crt_verify_info(): one line per flag (no newline), caller's prefix first."""
    lines = []
    for bit, text in _VERIFY_STRINGS:
        if flags & bit:
            lines.append(prefix + text)
            flags &= ~bit
    if flags:
        lines.append(prefix + "Unknown reason (this should not happen)")
    return lines


def alert_for_flags(flags: int) -> int:
    """The alert number Mbed TLS sends for a failed verification with these flags."""
    for mask, alert in _ALERT_ORDER:
        if flags & mask:
            return alert
    return _CERT_UNKNOWN


# --- errors -----------------------------------------------------------------------------------


class TlsError(Exception):
    """A failed TLS connection, as start_ssl_client()/mbedtls would report it.

    code: negative Mbed TLS code (-9984 for a refused certificate) or -1 (TCP failure,
    handshake timeout). text: mbedtls_strerror(code), or strerror(errno) for TCP failures.
    flags: verification flags (0 if none). alert: name of the alert this client sent, or None.
    stage: "setup" (CA bundle unparsable), "tcp", "handshake", "verify" or "io".
    errno: the host's errno for TCP failures; device_errno: what lwIP reports for it (a
    refused port is ECONNREFUSED on the host but ECONNRESET, 104, on an ESP32).
    """

    def __init__(self, code: int, text: str, *, stage: str, flags: int = 0,
                 alert: str | None = None, errno: int | None = None,
                 device_errno: int | None = None) -> None:
        super().__init__(f"[{stage}] ({code}) {text}")
        self.code, self.text, self.stage, self.flags = code, text, stage, flags
        self.alert, self.errno, self.device_errno = alert, errno, device_errno

    @classmethod
    def from_mbedtls(cls, exc: MbedError, stage: str, alert: str | None = None) -> TlsError:
        code = -(exc.err or 0)
        return cls(code, exc.msg, stage=stage, alert=alert)

    @classmethod
    def from_os(cls, exc: OSError, stage: str) -> TlsError:
        num = exc.errno if exc.errno is not None else (
            errnos.ETIMEDOUT if isinstance(exc, TimeoutError) else errnos.EIO)
        device = errnos.ECONNRESET if num == errnos.ECONNREFUSED else num  # lwIP: RST -> ERR_RST
        return cls(-1, os.strerror(num), stage=stage, errno=num, device_errno=device)


class TlsTimeout(TlsError):
    """No data within the time given: recv() (stage "io", code -0x6800), the handshake (code
    -1, as ssl_client's handshake_timeout) or the TCP connect (code -1, errno ETIMEDOUT)."""


# --- a small DER reader: what Mbed TLS keeps of a certificate ---------------------------------


def _tlv(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of content, end of content) of the DER element at pos."""
    tag = data[pos]
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        length = int.from_bytes(data[pos:pos + n], "big")
        pos += n
    if pos + length > len(data):
        raise ValueError("DER element runs past its container")
    return tag, pos, pos + length


def _items(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    out = []
    while start < end:
        tag, s, e = _tlv(data, start)
        out.append((tag, s, e))
        start = e
    return out


def _oid(raw: bytes) -> str:
    parts: list[int] = []
    value = 0
    for byte in raw:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            parts.append(value)
            value = 0
    first = min(parts[0] // 40, 2)
    return ".".join(str(p) for p in [first, parts[0] - 40 * first, *parts[1:]])


# One attribute of a Name as mbedtls_x509_name keeps it: OID, value tag, value, next_merged.
_Ava = tuple[bytes, int, bytes, bool]

_SIG_ALGS = {
    "1.2.840.113549.1.1.4": ("md5", "rsa"), "1.2.840.113549.1.1.5": ("sha1", "rsa"),
    "1.2.840.113549.1.1.14": ("sha224", "rsa"), "1.2.840.113549.1.1.11": ("sha256", "rsa"),
    "1.2.840.113549.1.1.12": ("sha384", "rsa"), "1.2.840.113549.1.1.13": ("sha512", "rsa"),
    "1.2.840.113549.1.1.10": ("sha1", "rsa"),  # RSASSA-PSS; hash from the parameters
    "1.2.840.10045.4.1": ("sha1", "ecdsa"), "1.2.840.10045.4.3.1": ("sha224", "ecdsa"),
    "1.2.840.10045.4.3.2": ("sha256", "ecdsa"), "1.2.840.10045.4.3.3": ("sha384", "ecdsa"),
    "1.2.840.10045.4.3.4": ("sha512", "ecdsa"),
}
_HASHES = {"1.3.14.3.2.26": "sha1", "2.16.840.1.101.3.4.2.4": "sha224",
           "2.16.840.1.101.3.4.2.1": "sha256", "2.16.840.1.101.3.4.2.2": "sha384",
           "2.16.840.1.101.3.4.2.3": "sha512"}
_CURVES = {"1.2.840.10045.3.1.7": "secp256r1", "1.3.132.0.34": "secp384r1",
           "1.3.132.0.35": "secp521r1", "1.3.132.0.10": "secp256k1",
           "1.3.36.3.3.2.8.1.1.7": "bp256r1", "1.3.36.3.3.2.8.1.1.11": "bp384r1",
           "1.3.36.3.3.2.8.1.1.13": "bp512r1", "1.2.840.10045.3.1.1": "secp192r1",
           "1.3.132.0.33": "secp224r1"}
_OID_CN = bytes.fromhex("550403")
_OID_SERVER_AUTH = "1.3.6.1.5.5.7.3.1"
_OID_ANY_EKU = "2.5.29.37.0"
# keyUsage bits as mbedtls stores them (first BIT STRING byte lowest).
KU_DIGITAL_SIGNATURE, KU_KEY_ENCIPHERMENT, KU_KEY_AGREEMENT, KU_KEY_CERT_SIGN = 0x80, 0x20, 0x08, 0x04
_KU_MAY = 0x01 | 0x8000  # encipherOnly, decipherOnly
_SAN_DNS, _SAN_URI, _SAN_IP = 2, 6, 7


@dataclass
class Certificate:
    """One certificate as the twin's Mbed TLS sees it (the parsed `crt` is python-mbedtls's)."""

    der: bytes
    subject: str  # mbedtls_x509_dn_gets() form, e.g. "CN=localhost, O=..."
    issuer: str
    not_before: datetime  # UTC
    not_after: datetime  # UTC
    serial_number: int
    crt: mx509.CRT = field(repr=False)
    # What verification needs, read from the DER.
    version: int = field(default=3, repr=False)
    issuer_name: list[_Ava] = field(default_factory=list, repr=False)
    subject_name: list[_Ava] = field(default_factory=list, repr=False)
    ca: bool = field(default=False, repr=False)
    max_pathlen: int = field(default=0, repr=False)  # mbedtls: pathLenConstraint + 1, 0 if none
    key_usage: int | None = field(default=None, repr=False)
    ext_key_usage: list[str] | None = field(default=None, repr=False)
    san: list[tuple[int, bytes]] | None = field(default=None, repr=False)  # (tag number, value)
    sig_md: str | None = field(default=None, repr=False)
    sig_pk: str | None = field(default=None, repr=False)
    pk_type: str | None = field(default=None, repr=False)  # "rsa" or "ec"
    rsa_bits: int = field(default=0, repr=False)
    curve: str | None = field(default=None, repr=False)

    @property
    def dns_names(self) -> list[str]:
        return [v.decode("latin-1") for t, v in self.san or () if t == _SAN_DNS]

    @property
    def ip_addresses(self) -> list[str]:
        return [str(ipaddress.ip_address(v)) for t, v in self.san or ()
                if t == _SAN_IP and len(v) in (4, 16)]

    @classmethod
    def from_der(cls, der: bytes) -> Certificate:
        """Parse with Mbed TLS (raises mbedtls TLSError as mbedtls_x509_crt_parse_der does)."""
        crt = mx509.CRT.from_DER(der)
        cert = cls(der=bytes(der), subject=crt.subject, issuer=crt.issuer,
                   not_before=crt.not_before.replace(tzinfo=timezone.utc),
                   not_after=crt.not_after.replace(tzinfo=timezone.utc),
                   serial_number=crt.serial_number, crt=crt, version=crt.version)
        try:
            cert._read_der()
        except (IndexError, ValueError, KeyError) as exc:
            raise ValueError(f"certificate DER not understood: {exc}") from exc
        return cert

    def _read_der(self) -> None:
        d = self.der
        _, s, e = _tlv(d, 0)
        (_, ts, te), (_, as_, ae), _sig = _items(d, s, e)[:3]
        self.sig_md, self.sig_pk = self._sig_alg(d, as_, ae)
        fields = _items(d, ts, te)
        if fields[0][0] == 0xA0:  # [0] version
            fields = fields[1:]
        _serial, _alg, issuer, _validity, subject, spki, *rest = fields
        self.issuer_name = self._name(d, issuer)
        self.subject_name = self._name(d, subject)
        self._spki(d, spki)
        for tag, xs, xe in rest:
            if tag == 0xA3:  # [3] extensions
                _, ss, se = _tlv(d, xs)
                for _t, es, ee in _items(d, ss, se):
                    self._extension(d, _items(d, es, ee))

    @staticmethod
    def _sig_alg(d: bytes, s: int, e: int) -> tuple[str | None, str | None]:
        parts = _items(d, s, e)
        oid = _oid(d[parts[0][1]:parts[0][2]])
        md, pk = _SIG_ALGS.get(oid, (None, None))
        if oid == "1.2.840.113549.1.1.10" and len(parts) > 1:  # RSASSA-PSS-params [0] hashAlgorithm
            for tag, ps, pe in _items(d, parts[1][1], parts[1][2]):
                if tag == 0xA0:
                    _, hs, he = _tlv(d, ps)
                    h = _items(d, hs, he)[0]
                    md = _HASHES.get(_oid(d[h[1]:h[2]]), md)
        return md, pk

    @staticmethod
    def _name(d: bytes, element: tuple[int, int, int]) -> list[_Ava]:
        out: list[_Ava] = []
        for _set_tag, ss, se in _items(d, element[1], element[2]):
            avas = _items(d, ss, se)
            for i, (_t, as_, ae) in enumerate(avas):
                (_, os_, oe), (vtag, vs, ve) = _items(d, as_, ae)[:2]
                out.append((d[os_:oe], vtag, d[vs:ve], i < len(avas) - 1))
        return out

    def _spki(self, d: bytes, element: tuple[int, int, int]) -> None:
        (_, als, ale), (_, ks, ke) = _items(d, element[1], element[2])[:2]
        alg = _items(d, als, ale)
        oid = _oid(d[alg[0][1]:alg[0][2]])
        if oid in ("1.2.840.113549.1.1.1", "1.2.840.113549.1.1.10"):
            self.pk_type = "rsa"
            _, rs, re_ = _tlv(d, ks + 1)  # BIT STRING: skip the unused-bits byte
            _, ms, me = _items(d, rs, re_)[0]
            self.rsa_bits = int.from_bytes(d[ms:me], "big").bit_length()
        elif oid == "1.2.840.10045.2.1":
            self.pk_type = "ec"
            if len(alg) > 1 and alg[1][0] == 0x06:
                self.curve = _CURVES.get(_oid(d[alg[1][1]:alg[1][2]]), "unknown")

    def _extension(self, d: bytes, parts: list[tuple[int, int, int]]) -> None:
        oid = _oid(d[parts[0][1]:parts[0][2]])
        _, vs, ve = parts[-1]  # extnValue OCTET STRING
        _, s, e = _tlv(d, vs)
        if oid == "2.5.29.19":  # basicConstraints
            for tag, cs, ce in _items(d, s, e):
                if tag == 0x01:
                    self.ca = d[cs] != 0
                elif tag == 0x02:
                    self.max_pathlen = int.from_bytes(d[cs:ce], "big") + 1
        elif oid == "2.5.29.15":  # keyUsage BIT STRING
            bits = d[s + 1:e]
            self.key_usage = sum(b << (8 * i) for i, b in enumerate(bits[:4]))
        elif oid == "2.5.29.37":  # extKeyUsage
            self.ext_key_usage = [_oid(d[os_:oe]) for _t, os_, oe in _items(d, s, e)]
        elif oid == "2.5.29.17":  # subjectAltName
            self.san = [(tag & 0x1F, d[gs:ge]) for tag, gs, ge in _items(d, s, e)]


# --- verification: mbedtls x509_crt_verify_chain() / verify_name(), dates off -----------------


def _memcasecmp(a: bytes, b: bytes) -> bool:
    """x509_memcasecmp() == 0 (same length assumed by the caller)."""
    for x, y in zip(a, b):
        diff = x ^ y
        if diff == 0:
            continue
        if diff == 32 and (0x61 <= x <= 0x7A or 0x41 <= x <= 0x5A):
            continue
        return False
    return True


def _string_eq(a: tuple[int, bytes], b: tuple[int, bytes]) -> bool:
    if a == b:
        return True
    utf8_or_printable = (0x0C, 0x13)
    return (a[0] in utf8_or_printable and b[0] in utf8_or_printable
            and len(a[1]) == len(b[1]) and _memcasecmp(a[1], b[1]))


def _name_eq(a: list[_Ava], b: list[_Ava]) -> bool:
    """x509_name_cmp() == 0."""
    return len(a) == len(b) and all(
        x[0] == y[0] and _string_eq((x[1], x[2]), (y[1], y[2])) and x[3] == y[3]
        for x, y in zip(a, b))


def _check_cn(name: bytes, host: bytes) -> bool:
    """x509_crt_check_cn(): exact case-insensitive match, or `*.` for the leftmost label."""
    if len(name) == len(host) and _memcasecmp(host, name):
        return True
    if len(name) < 3 or name[:2] != b"*.":
        return False
    dot = host.find(b".")
    if dot <= 0:
        return False
    return len(host) - dot == len(name) - 1 and _memcasecmp(name[1:], host[dot:])


def _ip_bytes(host: str) -> bytes | None:
    """mbedtls_x509_crt_parse_cn_inet_pton() (ESP-IDF builds use lwIP's inet_pton)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.inet_pton(family, host)
    except OSError:
        return None


def _name_matches(cert: Certificate, host: str, profile: Profile) -> bool:
    """x509_crt_verify_name(): SANs only when the extension exists, else the subject's CNs."""
    h = host.encode()
    if cert.san is None:
        return any(oid == _OID_CN and _check_cn(value, h) for oid, _t, value, _m in cert.subject_name)
    if any(tag == _SAN_DNS and _check_cn(value, h) for tag, value in cert.san):
        return True
    if not profile.ip_san_matches:  # Mbed TLS < 3.5: dNSName only
        return False
    ip = _ip_bytes(host)
    if ip is not None and any(tag == _SAN_IP and value == ip for tag, value in cert.san):
        return True
    return any(tag == _SAN_URI and value == h for tag, value in cert.san)


def _mbedtls_major(profile: Profile) -> int:
    return int(profile.mbedtls.split(".")[0])


def _md_ok(md: str | None, profile: Profile) -> bool:
    """mbedtls_x509_crt_profile_default: SHA-2 (2.28), SHA-256 and up (3.x)."""
    allowed = {"sha256", "sha384", "sha512"}
    if _mbedtls_major(profile) < 3:
        allowed.add("sha224")
    return md in allowed


def _key_ok(cert: Certificate, profile: Profile) -> bool:
    """x509_profile_check_key(): RSA >= 2048 bits; EC curves any (2.28) or >= 128-bit (3.x)."""
    if cert.pk_type == "rsa":
        return cert.rsa_bits >= 2048
    if cert.pk_type == "ec":
        if _mbedtls_major(profile) < 3:
            return cert.curve is not None
        return cert.curve in {"secp256r1", "secp384r1", "secp521r1", "bp256r1", "bp384r1", "bp512r1"}
    return False


def _ku_ok(cert: Certificate, usage: int) -> bool:
    """mbedtls_x509_crt_check_key_usage() == 0."""
    if cert.key_usage is None:
        return True
    must = usage & ~_KU_MAY
    if (cert.key_usage & ~_KU_MAY) & must != must:
        return False
    may = usage & _KU_MAY
    return (cert.key_usage & _KU_MAY) | may == may


def _signed_by(child: Certificate, parent: Certificate) -> bool:
    """x509_crt_check_signature() == 0, by Mbed TLS's pk verify."""
    if (child.sig_pk == "rsa") != (parent.pk_type == "rsa"):
        return False
    try:
        return bool(parent.crt.verify(child.crt))
    except (MbedError, ValueError, TypeError):
        return False


def _is_parent(child: Certificate, parent: Certificate, top: bool) -> bool:
    """x509_crt_check_parent() == 0."""
    if not _name_eq(child.issuer_name, parent.subject_name):
        return False
    if top and parent.version < 3:
        return True
    return parent.ca and _ku_ok(parent, KU_KEY_CERT_SIGN)


def _find_parent(child: Certificate, candidates: list[Certificate], top: bool, path_cnt: int,
                 self_cnt: int) -> tuple[Certificate | None, bool]:
    """x509_crt_find_parent_in() without the time preference (HAVE_TIME_DATE off)."""
    for parent in candidates:
        if not _is_parent(child, parent, top):
            continue
        if parent.max_pathlen > 0 and parent.max_pathlen < 1 + path_cnt - self_cnt:
            continue
        good = _signed_by(child, parent)
        if top and not good:
            continue
        return parent, good
    return None, False


def verify_certificate(chain: list[Certificate], trusted: list[Certificate], host: str,
                       profile: Profile) -> tuple[int, int]:
    """Mbed TLS's x509_crt_verify_restartable() for a device of `profile`, dates ignored.

    chain: the server's certificates, leaf first. Returns (result, flags): result 0, -9984
    (MBEDTLS_ERR_X509_CERT_VERIFY_FAILED) or -0x3000 (fatal: chain too long, flags all set).
    """
    if not chain:
        return ERR_CERT_VERIFY_FAILED, (BADCERT["CN_MISMATCH"] | BADCERT["NOT_TRUSTED"]
                                        | BADCERT["BAD_MD"] | BADCERT["BAD_PK"] | BADCERT["BAD_KEY"])
    leaf = chain[0]
    flags = 0 if _name_matches(leaf, host, profile) else BADCERT["CN_MISMATCH"]
    if leaf.pk_type is None:
        flags |= BADCERT["BAD_PK"]
    if not _key_ok(leaf, profile):
        flags |= BADCERT["BAD_KEY"]
    # x509_crt_verify_chain()
    child, child_trusted, self_cnt, length = leaf, False, 0, 0
    while True:
        length += 1
        if child_trusted:
            break
        if not _md_ok(child.sig_md, profile):
            flags |= BADCERT["BAD_MD"]
        if child.sig_pk is None:
            flags |= BADCERT["BAD_PK"]
        if length == 1 and _name_eq(child.issuer_name, child.subject_name) and any(
                t.der == child.der for t in trusted):
            break  # a locally trusted end-entity certificate
        index = next(i for i, c in enumerate(chain) if c is child)
        parent, good = _find_parent(child, trusted, True, length - 1, self_cnt)
        parent_trusted = parent is not None
        if parent is None:
            parent, good = _find_parent(child, chain[index + 1:], False, length - 1, self_cnt)
        if parent is None:
            flags |= BADCERT["NOT_TRUSTED"]
            break
        if length != 1 and _name_eq(child.issuer_name, child.subject_name):
            self_cnt += 1
        if not parent_trusted and length > MAX_INTERMEDIATE_CA:
            return ERR_X509_FATAL_ERROR, 0xFFFFFFFF
        if not good:
            flags |= BADCERT["NOT_TRUSTED"]
        if not _key_ok(parent, profile):
            flags |= BADCERT["BAD_KEY"]
        child, child_trusted = parent, parent_trusted
    return (ERR_CERT_VERIFY_FAILED if flags else 0), flags


def _usage_for_suite(suite: str | None) -> int:
    """mbedtls_ssl_check_cert_usage(): the keyUsage the ciphersuite's key exchange needs."""
    kx = (suite or "").removeprefix("TLS-").split("-WITH-")[0]
    if kx in ("RSA", "RSA-PSK"):
        return KU_KEY_ENCIPHERMENT
    if kx in ("DHE-RSA", "ECDHE-RSA", "ECDHE-ECDSA"):
        return KU_DIGITAL_SIGNATURE
    if kx in ("ECDH-RSA", "ECDH-ECDSA"):
        return KU_KEY_AGREEMENT
    return 0


def check_server_certificate(chain: list[Certificate], trusted: list[Certificate], host: str,
                             profile: Profile, suite: str | None) -> tuple[int, int]:
    """ssl_parse_certificate_verify() under MBEDTLS_SSL_VERIFY_REQUIRED: (code, flags).

    code 0 means accepted; -9984 when X.509 verification failed; -0x7A00 when only the
    certificate's usage extensions do not fit the ciphersuite.
    """
    code, flags = verify_certificate(chain, trusted, host, profile)
    if chain:
        usage = 0
        if not _ku_ok(chain[0], _usage_for_suite(suite)):
            usage |= BADCERT["KEY_USAGE"]
        eku = chain[0].ext_key_usage
        if eku is not None and _OID_SERVER_AUTH not in eku and _OID_ANY_EKU not in eku:
            usage |= BADCERT["EXT_KEY_USAGE"]
        if usage and code == 0:
            code = ERR_BAD_HS_CERTIFICATE
        flags |= usage
    return code, flags


# --- CA bundle --------------------------------------------------------------------------------

_PEM_BLOCK = re.compile(rb"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", re.S)


def load_ca_bundle(pem: str | bytes) -> list[Certificate]:
    """mbedtls_x509_crt_parse(ca, pem, strlen(pem) + 1) as ssl_client.cpp calls it.

    Raises mbedtls TLSError when nothing parses (the code start_ssl_client() returns); blocks
    that fail while others parse are skipped, as Mbed TLS does.
    """
    data = pem.encode() if isinstance(pem, str) else bytes(pem)
    mx509.CRT(data + b"\0")  # Mbed TLS's own verdict on the whole bundle, with its error code
    out = []
    for block in _PEM_BLOCK.findall(data):
        try:
            out.append(Certificate.from_der(base64.b64decode(b"".join(block.split()))))
        except (MbedError, ValueError):
            continue
    return out


# --- the server's flight, message by message --------------------------------------------------


def _record(content_type: int, version: bytes, payload: bytes) -> bytes:
    """A plaintext record; payloads come from one received record, so they fit in one."""
    return bytes([content_type]) + version + len(payload).to_bytes(2, "big") + payload


class _ServerStream:
    """Re-frames the server's plaintext handshake records one message a record, and marks the
    Certificate message; from the server's ChangeCipherSpec on (or on bytes that are not TLS
    records) everything passes through untouched.

    A message is never joined across records: Mbed TLS 2.28 refuses a handshake message split
    over records (MBEDTLS_ERR_SSL_FEATURE_UNAVAILABLE), so such a tail is passed on as it came
    and Mbed TLS refuses it as the device would.
    """

    def __init__(self) -> None:
        self._raw = bytearray()
        self._version = b"\x03\x03"
        self.passthrough = False
        self.items: deque[tuple[str, bytes]] = deque()  # ("bytes", record) or ("certificate", msg)
        self.suite: str | None = None

    def add(self, data: bytes) -> None:
        self._raw += data
        while not self.passthrough and len(self._raw) >= 5:
            ctype, major, length = self._raw[0], self._raw[1], int.from_bytes(self._raw[3:5], "big")
            if ctype not in (_CT_CCS, _CT_ALERT, _CT_HANDSHAKE, _CT_APPDATA) or major != 3 \
                    or length > _MAX_FRAGMENT + 2048:
                self._pass_rest()
                break
            if len(self._raw) < 5 + length:
                return
            self._version = bytes(self._raw[1:3])
            body = bytes(self._raw[5:5 + length])
            del self._raw[:5 + length]
            if ctype == _CT_HANDSHAKE:
                self._split_messages(body)
                continue
            self.items.append(("bytes", _record(ctype, self._version, body)))
            if ctype == _CT_CCS:
                self._pass_rest()
        if self.passthrough and self._raw:
            self._pass_rest()

    def drain(self) -> None:
        """The connection ended: hand over whatever is left as it came."""
        self._pass_rest()

    def _pass_rest(self) -> None:
        self.passthrough = True
        if self._raw:
            self.items.append(("bytes", bytes(self._raw)))
            self._raw.clear()

    def _split_messages(self, body: bytes) -> None:
        while body:
            size = 4 + int.from_bytes(body[1:4], "big") if len(body) >= 4 else len(body) + 1
            if len(body) < size:  # a message that goes on in the next record
                self.items.append(("bytes", _record(_CT_HANDSHAKE, self._version, body)))
                return
            msg, body = body[:size], body[size:]
            if msg[0] == _HS_SERVER_HELLO:
                self._note_suite(msg)
            if msg[0] == _HS_CERTIFICATE:
                self.items.append(("certificate", msg))
            else:
                self.items.append(("bytes", _record(_CT_HANDSHAKE, self._version, msg)))

    def _note_suite(self, msg: bytes) -> None:
        at = 4 + 2 + 32
        if len(msg) > at:
            at += 1 + msg[at]
            if len(msg) >= at + 2:
                try:
                    self.suite = _get_ciphersuite_name(int.from_bytes(msg[at:at + 2], "big"))
                except Exception:  # noqa: BLE001 - an id Mbed TLS does not know: no usage check
                    self.suite = None

    def record(self, msg: bytes) -> bytes:
        return _record(_CT_HANDSHAKE, self._version, msg)


def _certificate_list(msg: bytes) -> list[bytes] | None:
    """The DER certificates of a Certificate message, or None if it is malformed."""
    body = msg[4:]
    if len(body) < 3 or int.from_bytes(body[:3], "big") != len(body) - 3:
        return None
    out, i = [], 3
    while i < len(body):
        if i + 3 > len(body):
            return None
        n = int.from_bytes(body[i:i + 3], "big")
        if n < 128 or i + 3 + n > len(body):
            return None
        out.append(body[i + 3:i + 3 + n])
        i += 3 + n
    return out


# --- the connection -----------------------------------------------------------------------------


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _tcp_connect(address: str, port: int, timeout: float) -> socket.socket:
    try:
        sock = socket.create_connection((address, port), timeout=timeout)
    except OSError as exc:
        raise (TlsTimeout if isinstance(exc, TimeoutError) else TlsError).from_os(exc, "tcp") from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def connect(host: str, port: int, ca_bundle: str | None, profile: Profile, *, timeout: float = 5.0,
            address: str | None = None) -> TlsSession:
    """start_ssl_client() with setCACert(ca_bundle): TCP, then TLS 1.2 with the profile's checks.
    `ca_bundle` None is setInsecure(): MBEDTLS_SSL_VERIFY_NONE, no chain, name or date check.

    host is the URL host (TLS name and SNI); address is the IP dialled (default: host if it is an
    IP literal, else 127.0.0.1, as the twin resolves every name). Raises TlsError.
    """
    dial = address or (host if _is_ip(host) else "127.0.0.1")
    # start_ssl_client() connects TCP first and parses the CA bundle after: setCACert("") is a
    # real, empty bundle (not NULL), which Mbed TLS refuses with -0x2180 once the socket is up;
    # the server sees a connection closed without a byte (ssl_client.cpp, 2.x and 3.x).
    sock = _tcp_connect(dial, port, timeout)
    try:
        trusted = None if ca_bundle is None else load_ca_bundle(ca_bundle)
    except MbedError as exc:
        sock.close()
        raise TlsError.from_mbedtls(exc, "setup") from None
    session = TlsSession(sock, host, profile, trusted)
    session._handshake(time.monotonic() + timeout)
    return session


def _configuration(profile: Profile) -> mtls.TLSConfiguration:
    """The client's Mbed TLS configuration: verification is ours (MBEDTLS_SSL_VERIFY_OPTIONAL
    underneath), TLS 1.2 at most, and as old as the profile's core allows (2.0.14's sdkconfig
    keeps TLS 1.0 and 1.1; Mbed TLS 3.x has no TLS below 1.2)."""
    return mtls.TLSConfiguration(
        validate_certificates=False,
        lowest_supported_version=mtls.TLSVersion[profile.oldest_tls],
        highest_supported_version=mtls.TLSVersion.TLSv1_2,
    )


class TlsSession:
    """An established TLS 1.2 connection (see connect())."""

    def __init__(self, sock: socket.socket, host: str, profile: Profile,
                 trusted: list[Certificate] | None) -> None:
        self._sock = sock
        self.host = host
        self.profile = profile
        self._trusted = trusted
        self._tls = mtls.ClientContext(_configuration(profile)).wrap_buffers(host)  # SNI = host, IP or not
        self._stream = _ServerStream()
        self._eof = False
        self._closed = False
        self.peer_certificate: Certificate | None = None
        self.peer_chain: list[Certificate] = []
        self.verify_flags = 0
        self._verified = False  # the device's checks ran on the Certificate Mbed TLS took

    # -- properties --
    @property
    def version(self) -> str:
        """"TLSv1.2" (or "TLSv1.1", "TLSv1"), as mbedtls_ssl_get_version() says it."""
        v = self._tls.negotiated_tls_version()
        return {mtls.TLSVersion.TLSv1: "TLSv1", mtls.TLSVersion.TLSv1_1: "TLSv1.1",
                mtls.TLSVersion.TLSv1_2: "TLSv1.2", mtls.TLSVersion.TLSv1_3: "TLSv1.3"}.get(v, str(v))

    @property
    def cipher(self) -> str | None:
        """mbedtls_ssl_get_ciphersuite(), e.g. "TLS-ECDHE-ECDSA-WITH-AES-256-GCM-SHA384"."""
        return self._tls.cipher()

    # -- socket plumbing --
    def _flush(self) -> bytes:
        data = self._tls.peek_outgoing(1 << 20)
        if data:
            try:
                self._sock.sendall(data)
            except OSError as exc:
                raise self._net_error(exc, send=True) from None
            finally:
                self._tls.consume_outgoing(len(data))
        return data

    def _net_error(self, exc: OSError, *, send: bool) -> TlsError:
        if isinstance(exc, (ConnectionResetError, BrokenPipeError)):
            code = ERR_NET_CONN_RESET
        else:
            code = ERR_NET_SEND_FAILED if send else ERR_NET_RECV_FAILED
        return TlsError(code, mbedtls_strerror(code), stage="io", errno=exc.errno)

    def _read_socket(self, deadline: float) -> bytes:
        if self._closed:
            raise TlsError(-1, "connection closed", stage="io")
        wait = max(0.0, deadline - time.monotonic())  # 0: a poll, for a read that must not wait
        if not select.select([self._sock], [], [], wait)[0]:
            raise TimeoutError
        try:
            # python-mbedtls's input ring buffer holds 32 KB. With a partial record of up to
            # 16 KB waiting in it, 8 KB more always fits.
            return self._sock.recv(8192)
        except OSError as exc:
            raise self._net_error(exc, send=False) from None

    # -- handshake --
    def _handshake(self, deadline: float) -> None:
        try:
            while self._tls._handshake_state is not mtls.HandshakeStep.HANDSHAKE_OVER:
                try:
                    self._tls.do_handshake()
                except mtls.WantReadError:
                    self._flush()
                    self._feed_one(deadline)
                except mtls.WantWriteError:
                    self._flush()
                except MbedError as exc:
                    sent = self._flush_quietly()
                    raise TlsError.from_mbedtls(exc, "handshake", alert=_plain_alert(sent)) from None
            self._flush()
            if not self._verified:  # fail closed: never accept a certificate not checked here
                raise TlsError(ERR_CERT_VERIFY_FAILED, mbedtls_strerror(ERR_CERT_VERIFY_FAILED),
                               stage="verify", flags=BADCERT["OTHER"])
        except TlsError:
            self._abort()
            raise
        except TimeoutError:
            self._abort()
            raise TlsTimeout(-1, "TLS handshake timed out", stage="handshake") from None
        except BaseException:
            self._abort()
            raise
        log.debug("TLS to %s: %s %s", self.host, self.version, self.cipher)

    def _feed_one(self, deadline: float) -> None:
        """Give Mbed TLS the next record it waits for; verify before the Certificate."""
        while not self._stream.items:
            if self._eof:
                raise TlsError(ERR_CONN_EOF, mbedtls_strerror(ERR_CONN_EOF), stage="handshake")
            data = self._read_socket(deadline)
            if data:
                self._stream.add(data)
            else:
                self._eof = True
                self._stream.drain()
        kind, payload = self._stream.items.popleft()
        if kind == "certificate":
            if self._tls._handshake_state is mtls.HandshakeStep.SERVER_CERTIFICATE:
                self._verify(payload)
            payload = self._stream.record(payload)
        self._tls.receive_from_network(payload)

    def _verify(self, msg: bytes) -> None:
        ders = _certificate_list(msg)
        if ders is None:
            return  # malformed: Mbed TLS refuses it itself (decode_error)
        chain = []
        for der in ders:
            try:
                chain.append(Certificate.from_der(der))
            except MbedError as exc:
                if -exc.err == ERR_UNKNOWN_SIG_ALG:
                    continue  # Mbed TLS skips these too
                return  # Mbed TLS refuses the message itself (bad_certificate + parse error)
        self.peer_chain = chain
        self.peer_certificate = chain[0] if chain else None
        if self._trusted is None:  # setInsecure(): whatever the server sent is accepted
            self._verified = True
            return
        code, flags = check_server_certificate(chain, self._trusted, self.host, self.profile,
                                               self._stream.suite)
        self.verify_flags = flags
        if code == 0:
            self._verified = True
            return
        alert = alert_for_flags(flags)
        log.debug("certificate of %s refused, flags %#x, alert %s", self.host, flags, ALERTS[alert])
        try:
            self._sock.sendall(bytes([_CT_ALERT, 3, 3, 0, 2, 2, alert]))
        except OSError:
            pass
        self._abort()
        raise TlsError(code, mbedtls_strerror(code), stage="verify", flags=flags,
                       alert=ALERTS[alert])

    def _flush_quietly(self) -> bytes:
        try:
            return self._flush()
        except TlsError:
            return b""

    def _abort(self) -> None:
        self._closed = True
        self._sock.close()

    # -- application data --
    def send(self, data: bytes) -> None:
        """mbedtls_ssl_write() all of data. Raises TlsError (stage "io")."""
        if self._closed:
            raise TlsError(-1, "connection closed", stage="io")
        view = memoryview(data)
        try:
            for i in range(0, len(view), _MAX_FRAGMENT):
                self._write(view[i:i + _MAX_FRAGMENT])
        except MbedError as exc:
            raise TlsError.from_mbedtls(exc, "io") from None

    def _write(self, chunk: memoryview) -> None:
        while True:
            try:
                self._tls.write(chunk)
                break
            except mtls.WantWriteError:
                self._flush()
        self._flush()

    def recv(self, max_bytes: int, timeout: float) -> bytes:
        """Up to max_bytes of application data.

        b"" when the server closed with close_notify (ssl_client ignores -0x7880). Raises
        TlsTimeout (code -0x6800, stage "io") if nothing arrives within timeout (the
        session stays usable), and TlsError (code -0x7280, "SSL - The connection indicated an
        EOF") when TCP closes without close_notify, as mbedtls_ssl_read() reports it.
        """
        deadline = time.monotonic() + timeout
        buffer = bytearray(max_bytes)
        while True:
            try:
                n = self._tls.readinto(buffer, max_bytes)
                self._flush()
                return bytes(buffer[:n])
            except mtls.WantReadError:
                self._flush()
            except mtls.WantWriteError:
                self._flush()
                continue
            except mtls.RaggedEOF:
                return b""
            except MbedError as exc:
                if exc.err is not None and -exc.err == ERR_PEER_CLOSE_NOTIFY:
                    return b""
                raise TlsError.from_mbedtls(exc, "io") from None
            if self._eof:
                raise TlsError(ERR_CONN_EOF, mbedtls_strerror(ERR_CONN_EOF), stage="io")
            try:
                data = self._read_socket(deadline)
            except TimeoutError:
                raise TlsTimeout(ERR_SSL_TIMEOUT, mbedtls_strerror(ERR_SSL_TIMEOUT),
                                 stage="io") from None
            if data:
                self._tls.receive_from_network(data)
            else:
                self._eof = True

    def close(self, notify: bool = False) -> None:
        """Close the connection as WiFiClientSecure::stop() does: stop_ssl_socket() closes the
        socket and frees the context without a close_notify. notify=True sends one first."""
        if self._closed:
            return
        if notify:
            try:
                self._tls.shutdown()
                self._flush()
            except (MbedError, TlsError, OSError):
                pass
        self._abort()

    def __enter__(self) -> TlsSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _plain_alert(sent: bytes) -> str | None:
    """The alert in a plaintext alert record Mbed TLS just sent, if any."""
    i = 0
    while i + 5 <= len(sent):
        length = int.from_bytes(sent[i + 3:i + 5], "big")
        if sent[i] == _CT_ALERT and length == 2 and i + 7 <= len(sent):
            return ALERTS.get(sent[i + 6], str(sent[i + 6]))
        i += 5 + length
    return None
