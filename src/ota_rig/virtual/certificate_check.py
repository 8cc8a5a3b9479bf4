"""The device's certificate decision: is the server's chain good enough, and if not, why.

When the server's Certificate message arrives, Mbed TLS under MBEDTLS_SSL_VERIFY_REQUIRED (what
WiFiClientSecure::setCACert() sets) decides on the chain with x509_crt_verify_restartable(), then
checks the leaf's usage against the ciphersuite (ssl_parse_certificate_verify()). This module is
that decision, ported from mbedtls x509_crt.c as the device applies it, without sockets or TLS:

* the chain (x509_crt_verify_chain()): from the leaf up, each certificate's parent is looked
  for first among the trusted CAs (the bundle), then among the certificates the server sent
  after it; a parent is one whose subject equals the child's issuer (x509_name_cmp(): same
  attributes in the same order, PrintableString/UTF8String compared case-insensitively), that
  has the CA bit and keyCertSign (a trusted certificate older than v3 needs neither), whose
  pathLenConstraint allows the depth, and whose key verifies the child's signature over its raw
  TBS (a trusted parent must verify it; a sent one that does not is kept and flagged). No parent
  anywhere is NOT_TRUSTED; a chain that goes past MBEDTLS_X509_MAX_INTERMEDIATE_CA (8)
  certificates without reaching a trusted one is a fatal error (-0x3000, every flag set). A
  self-signed leaf that is itself in the bundle is trusted as it is;
* the X.509 profile (mbedtls_x509_crt_profile_default): each signature the chain relies on
  must use SHA-2 (2.28) or SHA-256 and up (3.x) (BAD_MD) and a known algorithm (BAD_PK); each
  key, the leaf's and its parents', must be RSA of 2048 bits and up or EC on a known curve, on
  3.x only P-256/384/521 and the Brainpool ones (BAD_KEY);
* the name (x509_crt_verify_name()): the URL host against the leaf's subjectAltName dNSNames
  when the extension exists (and, from Mbed TLS 3.5, its iPAddress and URI entries), else against
  the subject's CNs; a `*.` wildcard covers exactly the leftmost label (CN_MISMATCH);
* the usage (mbedtls_ssl_check_cert_usage()): the leaf's keyUsage, when present, must allow
  what the suite's key exchange does with the key; its extendedKeyUsage, when present, must
  include serverAuth or anyExtendedKeyUsage.
  A chain that is otherwise fine but fails only here is -0x7A00, not -9984.

No dates: stock arduino-esp32 builds Mbed TLS without MBEDTLS_HAVE_TIME_DATE (2.28.4, 3.6.0), so
an expired or not-yet-valid certificate passes, as on the device. The profile (2.0.x's Mbed TLS
2.28 or 3.x's 3.6) decides the differences. The result is (code, flags): the code
start_ssl_client() would return (0 when accepted) and the MBEDTLS_X509_BADCERT_* flags
(ota_rig/virtual/mbedtls_errors.py); ota_rig/virtual/tls.py turns a refusal into the alert and
the error the device's client raises.

Facts: shared/reference/esp32-ota-device.md section 9.
"""

from __future__ import annotations

import socket

from ota_rig.device.profiles import Profile
from ota_rig.virtual.mbedtls_errors import (
    BADCERT,
    ERR_BAD_HS_CERTIFICATE,
    ERR_CERT_VERIFY_FAILED,
    ERR_X509_FATAL_ERROR,
)
from ota_rig.virtual.x509 import (
    OID_CN,
    SAN_DNS,
    SAN_IP,
    SAN_URI,
    Ava,
    Certificate,
    signature_ok,
)

__all__ = [
    "KU_DIGITAL_SIGNATURE",
    "KU_KEY_AGREEMENT",
    "KU_KEY_CERT_SIGN",
    "KU_KEY_ENCIPHERMENT",
    "MAX_INTERMEDIATE_CA",
    "check_server_certificate",
    "verify_certificate",
]

MAX_INTERMEDIATE_CA = 8  # MBEDTLS_X509_MAX_INTERMEDIATE_CA
_OID_SERVER_AUTH = "1.3.6.1.5.5.7.3.1"
_OID_ANY_EKU = "2.5.29.37.0"
# keyUsage bits as mbedtls stores them (first BIT STRING byte lowest).
KU_DIGITAL_SIGNATURE, KU_KEY_ENCIPHERMENT, KU_KEY_AGREEMENT, KU_KEY_CERT_SIGN = 0x80, 0x20, 0x08, 0x04
_KU_MAY = 0x01 | 0x8000  # encipherOnly, decipherOnly


def _memcasecmp(a: bytes, b: bytes) -> bool:
    """x509_memcasecmp() == 0 (same length assumed by the caller)."""
    for x, y in zip(a, b, strict=True):
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
    return (
        a[0] in utf8_or_printable and b[0] in utf8_or_printable and len(a[1]) == len(b[1]) and _memcasecmp(a[1], b[1])
    )


def _name_eq(a: list[Ava], b: list[Ava]) -> bool:
    """x509_name_cmp() == 0."""
    return len(a) == len(b) and all(
        x[0] == y[0] and _string_eq((x[1], x[2]), (y[1], y[2])) and x[3] == y[3] for x, y in zip(a, b, strict=True)
    )


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
        return any(oid == OID_CN and _check_cn(value, h) for oid, _t, value, _m in cert.subject_name)
    if any(tag == SAN_DNS and _check_cn(value, h) for tag, value in cert.san):
        return True
    if not profile.ip_san_matches:  # Mbed TLS < 3.5: dNSName only
        return False
    ip = _ip_bytes(host)
    if ip is not None and any(tag == SAN_IP and value == ip for tag, value in cert.san):
        return True
    return any(tag == SAN_URI and value == h for tag, value in cert.san)


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
    """x509_crt_check_signature() == 0: the signature over the raw TBS, by `cryptography`."""
    return signature_ok(child, parent)


def _is_parent(child: Certificate, parent: Certificate, top: bool) -> bool:
    """x509_crt_check_parent() == 0."""
    if not _name_eq(child.issuer_name, parent.subject_name):
        return False
    if top and parent.version < 3:
        return True
    return parent.ca and _ku_ok(parent, KU_KEY_CERT_SIGN)


def _find_parent(
    child: Certificate, candidates: list[Certificate], top: bool, path_cnt: int, self_cnt: int
) -> tuple[Certificate | None, bool]:
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


def verify_certificate(
    chain: list[Certificate], trusted: list[Certificate], host: str, profile: Profile
) -> tuple[int, int]:
    """Mbed TLS's x509_crt_verify_restartable() for a device of `profile`, dates ignored.

    chain: the server's certificates, leaf first. Returns (result, flags): result 0, -9984
    (MBEDTLS_ERR_X509_CERT_VERIFY_FAILED) or -0x3000 (fatal: chain too long, flags all set).
    """
    if not chain:
        return ERR_CERT_VERIFY_FAILED, (
            BADCERT["CN_MISMATCH"] | BADCERT["NOT_TRUSTED"] | BADCERT["BAD_MD"] | BADCERT["BAD_PK"] | BADCERT["BAD_KEY"]
        )
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
        if length == 1 and _name_eq(child.issuer_name, child.subject_name) and any(t.der == child.der for t in trusted):
            break  # a locally trusted end-entity certificate
        index = next(i for i, c in enumerate(chain) if c is child)
        parent, good = _find_parent(child, trusted, True, length - 1, self_cnt)
        parent_trusted = parent is not None
        if parent is None:
            parent, good = _find_parent(child, chain[index + 1 :], False, length - 1, self_cnt)
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


def check_server_certificate(
    chain: list[Certificate], trusted: list[Certificate], host: str, profile: Profile, suite: str | None
) -> tuple[int, int]:
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
