"""Certificates as the device's Mbed TLS parses them: mbedtls_x509_crt_parse() and _parse_der().

A small DER reader keeps what Mbed TLS keeps of a certificate (names as sequences of attributes,
basicConstraints, keyUsage, extKeyUsage, subjectAltName, the signature and key algorithms, the
raw TBS and signature) and refuses what it refuses, with its error codes (Mbed TLS 2.28 and 3.6
`x509_crt.c`): a certificate that is no DER SEQUENCE (MBEDTLS_ERR_X509_INVALID_FORMAT), an
unknown version, an unknown signature algorithm (which the TLS client skips in a chain), an
unknown public key algorithm or curve, an unknown critical extension. It is not `cryptography`'s
strict X.509 loader, which refuses certificates the device accepts; `cryptography` only checks
a signature over the raw TBS bytes (mbedtls_pk_verify_ext()).

`parse_bundle()` is mbedtls_x509_crt_parse(ca, pem, strlen(pem) + 1), as ssl_client.cpp calls
it: PEM blocks when the text holds a PEM header (blocks that fail are skipped while others
parse), else the whole buffer, its terminating NUL included, as one DER certificate.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

__all__ = ["Certificate", "X509Error", "certificate_list", "parse_bundle", "signature_ok"]

# Mbed TLS codes (x509.h, pem.h, asn1.h, pk.h, base64.h).
ERR_X509_INVALID_FORMAT = -0x2180
ERR_X509_INVALID_VERSION = -0x2200
ERR_X509_INVALID_EXTENSIONS = -0x2500
ERR_X509_UNKNOWN_VERSION = -0x2580
ERR_X509_UNKNOWN_SIG_ALG = -0x2600
ERR_X509_CERT_UNKNOWN_FORMAT = -0x2780
ERR_PK_UNKNOWN_PK_ALG = -0x3C80
ERR_PK_UNKNOWN_NAMED_CURVE = -0x3A00
ERR_PEM_INVALID_DATA = -0x1100
ERR_OID_NOT_FOUND = -0x002E
ERR_ASN1_UNEXPECTED_TAG = -0x0062
ERR_ASN1_OUT_OF_DATA = -0x0060
ERR_BASE64_INVALID_CHARACTER = -0x002C


class X509Error(ValueError):
    """A certificate or bundle Mbed TLS refuses; `code` is what its parser returns."""

    def __init__(self, code: int, detail: str = "") -> None:
        super().__init__(f"({code}) {detail}".strip())
        self.code = code


# --- DER ----------------------------------------------------------------------------------------


def _tlv(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of content, end of content) of the DER element at pos."""
    if pos + 2 > len(data):
        raise X509Error(ERR_X509_INVALID_FORMAT + ERR_ASN1_OUT_OF_DATA, "DER element cut short")
    tag, length = data[pos], data[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        length = int.from_bytes(data[pos:pos + n], "big")
        pos += n
    if pos + length > len(data):
        raise X509Error(ERR_X509_INVALID_FORMAT + ERR_ASN1_OUT_OF_DATA, "DER element runs past its container")
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
    if not parts:
        return ""
    first = min(parts[0] // 40, 2)
    return ".".join(str(p) for p in [first, parts[0] - 40 * first, *parts[1:]])


# One attribute of a Name as mbedtls_x509_name keeps it: OID, value tag, value, next_merged.
Ava = tuple[bytes, int, bytes, bool]

_SIG_ALGS = {
    "1.2.840.113549.1.1.4": ("md5", "rsa"), "1.2.840.113549.1.1.5": ("sha1", "rsa"),
    "1.2.840.113549.1.1.14": ("sha224", "rsa"), "1.2.840.113549.1.1.11": ("sha256", "rsa"),
    "1.2.840.113549.1.1.12": ("sha384", "rsa"), "1.2.840.113549.1.1.13": ("sha512", "rsa"),
    "1.2.840.113549.1.1.10": ("sha1", "rsa"),  # RSASSA-PSS; hash from the parameters
    "1.2.840.10045.4.1": ("sha1", "ecdsa"), "1.2.840.10045.4.3.1": ("sha224", "ecdsa"),
    "1.2.840.10045.4.3.2": ("sha256", "ecdsa"), "1.2.840.10045.4.3.3": ("sha384", "ecdsa"),
    "1.2.840.10045.4.3.4": ("sha512", "ecdsa"),
}
_OID_PSS = "1.2.840.113549.1.1.10"
_HASHES = {"1.3.14.3.2.26": "sha1", "2.16.840.1.101.3.4.2.4": "sha224",
           "2.16.840.1.101.3.4.2.1": "sha256", "2.16.840.1.101.3.4.2.2": "sha384",
           "2.16.840.1.101.3.4.2.3": "sha512"}
_CURVES = {"1.2.840.10045.3.1.7": "secp256r1", "1.3.132.0.34": "secp384r1",
           "1.3.132.0.35": "secp521r1", "1.3.132.0.10": "secp256k1",
           "1.3.36.3.3.2.8.1.1.7": "bp256r1", "1.3.36.3.3.2.8.1.1.11": "bp384r1",
           "1.3.36.3.3.2.8.1.1.13": "bp512r1", "1.2.840.10045.3.1.1": "secp192r1",
           "1.3.132.0.33": "secp224r1", "1.3.132.0.31": "secp192k1", "1.3.132.0.32": "secp224k1"}
_RSA_KEYS = ("1.2.840.113549.1.1.1", _OID_PSS)
_EC_KEY = "1.2.840.10045.2.1"
# Extensions Mbed TLS reads; any other marked critical makes the certificate unparsable.
_KNOWN_EXTENSIONS = {"2.5.29.19", "2.5.29.15", "2.5.29.37", "2.5.29.17", "2.16.840.1.113730.1.1",
                     "2.5.29.32", "2.5.29.35", "2.5.29.14"}
# mbedtls_oid_get_attr_short_name(), for mbedtls_x509_dn_gets().
_SHORT_NAMES = {"2.5.4.3": "CN", "2.5.4.6": "C", "2.5.4.7": "L", "2.5.4.8": "ST", "2.5.4.10": "O",
                "2.5.4.11": "OU", "2.5.4.5": "serialNumber", "2.5.4.12": "title", "2.5.4.4": "SN",
                "2.5.4.42": "GN", "2.5.4.43": "initials", "2.5.4.44": "generationQualifier",
                "2.5.4.65": "pseudonym", "2.5.4.46": "dnQualifier", "2.5.4.9": "street",
                "2.5.4.17": "postalCode", "1.2.840.113549.1.9.1": "emailAddress",
                "0.9.2342.19200300.100.1.25": "DC", "0.9.2342.19200300.100.1.1": "uid"}
OID_CN = bytes.fromhex("550403")
SAN_DNS, SAN_URI, SAN_IP = 2, 6, 7


@dataclass
class Certificate:
    """One certificate as the device's Mbed TLS keeps it."""

    der: bytes
    subject: str  # mbedtls_x509_dn_gets() form, e.g. "CN=localhost, O=..."
    issuer: str
    not_before: datetime  # UTC
    not_after: datetime  # UTC
    serial_number: int
    version: int = field(default=3, repr=False)
    tbs: bytes = field(default=b"", repr=False)
    signature: bytes = field(default=b"", repr=False)
    spki: bytes = field(default=b"", repr=False)
    issuer_name: list[Ava] = field(default_factory=list, repr=False)
    subject_name: list[Ava] = field(default_factory=list, repr=False)
    ca: bool = field(default=False, repr=False)
    max_pathlen: int = field(default=0, repr=False)  # mbedtls: pathLenConstraint + 1, 0 if none
    key_usage: int | None = field(default=None, repr=False)
    ext_key_usage: list[str] | None = field(default=None, repr=False)
    san: list[tuple[int, bytes]] | None = field(default=None, repr=False)  # (tag number, value)
    sig_md: str | None = field(default=None, repr=False)
    sig_pk: str | None = field(default=None, repr=False)
    pss: bool = field(default=False, repr=False)
    pk_type: str | None = field(default=None, repr=False)  # "rsa" or "ec"
    rsa_bits: int = field(default=0, repr=False)
    curve: str | None = field(default=None, repr=False)

    @property
    def dns_names(self) -> list[str]:
        return [v.decode("latin-1") for t, v in self.san or () if t == SAN_DNS]

    @property
    def ip_addresses(self) -> list[str]:
        return [str(ipaddress.ip_address(v)) for t, v in self.san or ()
                if t == SAN_IP and len(v) in (4, 16)]

    @classmethod
    def from_der(cls, der: bytes) -> Certificate:
        """mbedtls_x509_crt_parse_der(); raises X509Error with its code."""
        d = bytes(der)
        try:
            return cls._parse(d)
        except X509Error:
            raise
        except (IndexError, ValueError, KeyError) as exc:
            raise X509Error(ERR_X509_INVALID_FORMAT, f"certificate DER not understood: {exc}") from None

    @classmethod
    def _parse(cls, d: bytes) -> Certificate:
        try:  # x509_crt_parse_der_core(): any fault of the outer SEQUENCE is plain INVALID_FORMAT
            tag, s, e = _tlv(d, 0)
        except X509Error:
            tag = None
        if tag != 0x30:
            raise X509Error(ERR_X509_INVALID_FORMAT, "not a DER SEQUENCE")
        tbs_element, (_, as_, ae), (_, ss, se) = _items(d, s, e)[:3]
        _, ts, te = tbs_element
        fields = _items(d, ts, te)
        version = 1
        if fields[0][0] == 0xA0:  # [0] version
            _, vs, ve = _tlv(d, fields[0][1])
            version = int.from_bytes(d[vs:ve], "big") + 1
            fields = fields[1:]
        if not 1 <= version <= 3:
            raise X509Error(ERR_X509_UNKNOWN_VERSION, f"version {version}")
        serial, _alg, issuer, validity, subject, spki, *rest = fields
        sig_md, sig_pk, pss = cls._sig_alg(d, as_, ae)
        (_, b_s, b_e), (_, a_s, a_e) = _items(d, validity[1], validity[2])[:2]
        cert = cls(der=d, subject=_dn_gets(d, subject), issuer=_dn_gets(d, issuer),
                   not_before=_time(d, b_s, b_e, d[validity[1]]), not_after=_time(d, a_s, a_e, d[b_e]),
                   serial_number=int.from_bytes(d[serial[1]:serial[2]], "big"), version=version,
                   tbs=d[ts - _header(tbs_element):te], signature=d[ss + 1:se], spki=d[spki[1] - _header(spki):spki[2]],
                   issuer_name=_name(d, issuer), subject_name=_name(d, subject),
                   sig_md=sig_md, sig_pk=sig_pk, pss=pss)
        cert._spki(d, spki)
        for tag, xs, _xe in rest:
            if tag == 0xA3 and version == 3:  # [3] extensions
                _, es_, ee_ = _tlv(d, xs)
                for _t, es, ee in _items(d, es_, ee_):
                    cert._extension(d, _items(d, es, ee))
        return cert

    @staticmethod
    def _sig_alg(d: bytes, s: int, e: int) -> tuple[str, str, bool]:
        parts = _items(d, s, e)
        oid = _oid(d[parts[0][1]:parts[0][2]])
        if oid not in _SIG_ALGS:
            raise X509Error(ERR_X509_UNKNOWN_SIG_ALG + ERR_OID_NOT_FOUND, f"signature algorithm {oid}")
        md, pk = _SIG_ALGS[oid]
        if oid == _OID_PSS and len(parts) > 1:  # RSASSA-PSS-params [0] hashAlgorithm
            for tag, ps, _pe in _items(d, parts[1][1], parts[1][2]):
                if tag == 0xA0:
                    _, hs, he = _tlv(d, ps)
                    h = _items(d, hs, he)[0]
                    md = _HASHES.get(_oid(d[h[1]:h[2]]), md)
        return md, pk, oid == _OID_PSS

    def _spki(self, d: bytes, element: tuple[int, int, int]) -> None:
        (_, als, ale), (_, ks, _ke) = _items(d, element[1], element[2])[:2]
        alg = _items(d, als, ale)
        oid = _oid(d[alg[0][1]:alg[0][2]])
        if oid in _RSA_KEYS:
            self.pk_type = "rsa"
            _, rs, re_ = _tlv(d, ks + 1)  # BIT STRING: skip the unused-bits byte
            _, ms, me = _items(d, rs, re_)[0]
            self.rsa_bits = int.from_bytes(d[ms:me], "big").bit_length()
        elif oid == _EC_KEY:
            self.pk_type = "ec"
            if len(alg) < 2 or alg[1][0] != 0x06 or _oid(d[alg[1][1]:alg[1][2]]) not in _CURVES:
                raise X509Error(ERR_PK_UNKNOWN_NAMED_CURVE, "EC key on a curve Mbed TLS does not know")
            self.curve = _CURVES[_oid(d[alg[1][1]:alg[1][2]])]
        else:
            raise X509Error(ERR_PK_UNKNOWN_PK_ALG, f"public key algorithm {oid}")

    def _extension(self, d: bytes, parts: list[tuple[int, int, int]]) -> None:
        oid = _oid(d[parts[0][1]:parts[0][2]])
        critical = len(parts) == 3 and parts[1][0] == 0x01 and d[parts[1][1]] != 0
        _, vs, _ve = parts[-1]  # extnValue OCTET STRING
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
        elif critical and oid not in _KNOWN_EXTENSIONS:
            raise X509Error(ERR_X509_INVALID_EXTENSIONS + ERR_ASN1_UNEXPECTED_TAG, f"critical extension {oid}")


def _header(element: tuple[int, int, int]) -> int:
    """The length of an element's tag and length bytes."""
    length = element[2] - element[1]
    return 2 if length < 0x80 else 2 + (length.bit_length() + 7) // 8


def _name(d: bytes, element: tuple[int, int, int]) -> list[Ava]:
    out: list[Ava] = []
    for _set_tag, ss, se in _items(d, element[1], element[2]):
        avas = _items(d, ss, se)
        for i, (_t, as_, ae) in enumerate(avas):
            (_, os_, oe), (vtag, vs, ve) = _items(d, as_, ae)[:2]
            out.append((d[os_:oe], vtag, d[vs:ve], i < len(avas) - 1))
    return out


def _dn_gets(d: bytes, element: tuple[int, int, int]) -> str:
    """mbedtls_x509_dn_gets(): short names, ", " between RDNs, " + " inside one; bytes outside
    printable ASCII as '?'."""
    text = ""
    merged = False
    for oid, _tag, value, next_merged in _name(d, element):
        if text:
            text += " + " if merged else ", "
        text += _SHORT_NAMES.get(_oid(oid), "??") + "=" + "".join(
            chr(c) if 32 <= c < 127 else "?" for c in value)
        merged = next_merged
    return text


def _time(d: bytes, s: int, e: int, tag: int) -> datetime:
    text = d[s:e].decode("ascii").rstrip("Z")
    if tag == 0x17:  # UTCTime: YY < 50 is 20YY
        year = int(text[:2])
        text = str(2000 + year if year < 50 else 1900 + year) + text[2:]
    return datetime.strptime(text[:14], "%Y%m%d%H%M%S").replace(tzinfo=timezone.utc)


# --- signatures -----------------------------------------------------------------------------------

_HASH_CLASSES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "md5": hashes.MD5,
    "sha1": hashes.SHA1,
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


def signature_ok(child: Certificate, parent: Certificate) -> bool:
    """mbedtls_pk_verify_ext() of child's signature over its raw TBS with parent's key."""
    if child.sig_md is None or (child.sig_pk == "rsa") != (parent.pk_type == "rsa"):
        return False
    try:
        key = serialization.load_der_public_key(parent.spki)
        digest = _HASH_CLASSES[child.sig_md]()
        if isinstance(key, rsa.RSAPublicKey):
            scheme = padding.PSS(padding.MGF1(digest), padding.PSS.AUTO) if child.pss else padding.PKCS1v15()
            key.verify(child.signature, child.tbs, scheme, digest)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(child.signature, child.tbs, ec.ECDSA(digest))
        else:
            return False
    except (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError):
        return False
    return True


# --- what arrives: a bundle, a Certificate message ------------------------------------------------

_PEM_BEGIN, _PEM_END = b"-----BEGIN CERTIFICATE-----", b"-----END CERTIFICATE-----"


def parse_bundle(pem: str | bytes) -> list[Certificate]:
    """mbedtls_x509_crt_parse(ca, pem, strlen(pem) + 1): the certificates that parse, or
    X509Error with the code Mbed TLS returns when none does."""
    data = (pem.encode() if isinstance(pem, str) else bytes(pem)).split(b"\0", 1)[0] + b"\0"
    if _PEM_BEGIN not in data:  # DER: the whole buffer, NUL included, is one certificate
        return [Certificate.from_der(data)]
    out: list[Certificate] = []
    first_error = 0
    for block in re.finditer(re.escape(_PEM_BEGIN) + rb"(.*?)" + re.escape(_PEM_END), data, re.S):
        try:
            der = base64.b64decode(b"".join(block.group(1).split()), validate=True)
        except (binascii.Error, ValueError):
            first_error = first_error or ERR_PEM_INVALID_DATA + ERR_BASE64_INVALID_CHARACTER
            continue
        try:
            out.append(Certificate.from_der(der))
        except X509Error as err:
            first_error = first_error or err.code
    if out:
        return out
    raise X509Error(first_error or ERR_X509_CERT_UNKNOWN_FORMAT, "no certificate in the bundle parses")


def certificate_list(msg: bytes) -> list[bytes] | None:
    """The DER certificates of a TLS Certificate handshake message, or None if Mbed TLS finds
    it malformed (lengths that do not add up, a certificate under 128 bytes)."""
    body = msg[4:]
    if len(body) < 3 or int.from_bytes(body[:3], "big") != len(body) - 3:
        return None
    out, i = [], 3
    while i < len(body):
        if i + 3 > len(body):
            return None
        n = int.from_bytes(body[i : i + 3], "big")
        if n < 128 or i + 3 + n > len(body):
            return None
        out.append(body[i + 3 : i + 3 + n])
        i += 3 + n
    return out
