"""The twin's TLS client: arduino-esp32's ssl_client.cpp on Mbed TLS, as the device does it.

What the device does is decided here; the wire is made by the engine underneath
(ota_rig/virtual/tls_engine.py: tlslite-ng with `cryptography`, the only module that knows it):

* the ClientHello is the profile's captured one (ota_rig/virtual/clienthello.py), byte for byte
  but for the random (its first 4 bytes the device clock's Unix time) and the SNI;
* when the server's Certificate message arrives, the chain is verified here with the
  device's rules: the signature over the raw TBS (`cryptography`), issuer/subject matching,
  CA bit, key usage, path length, the X.509 profile, and the host name with the profile's
  rules - a port of mbedtls x509_crt_verify_chain()/x509_crt_verify_name() without time
  checks (stock arduino-esp32 builds without MBEDTLS_HAVE_TIME_DATE; 2.28.4, 3.6.0);
* on a failure the client sends the single fatal alert Mbed TLS would (ssl_tls.c's order) as
  the only record after its ClientHello, in a record of the negotiated version, closes the
  socket and raises TlsError(-9984, ...), as start_ssl_client() returns it;
* Mbed TLS's error codes and texts (ota_rig/virtual/mbedtls_tables.py) for every failure;
* a server choice the device offers but the engine cannot run (a Camellia or static-ECDH suite,
  a curve such as secp224k1) raises RigLimitation: the twin cannot say what the device would
  do, and says so instead of inventing a verdict.

Facts: shared/reference/esp32-ota-device.md sections 8 and 9.
"""

from __future__ import annotations

import errno as errnos
import ipaddress
import logging
import os
import socket
import time

from ota_rig.virtual import tls_engine
from ota_rig.virtual.clienthello import HELLOS
from ota_rig.virtual.mbedtls_tables import SUITE_NAMES, strerror
from ota_rig.device.profiles import Profile
from ota_rig.virtual.x509 import (
    OID_CN,
    SAN_DNS,
    SAN_IP,
    SAN_URI,
    Ava,
    Certificate,
    X509Error,
    certificate_list,
    parse_bundle,
    signature_ok,
)

log = logging.getLogger(__name__)

__all__ = [
    "ALERTS",
    "BADCERT",
    "Certificate",
    "RigLimitation",
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
ERR_X509_UNKNOWN_VERSION = -0x2580
ERR_INVALID_RECORD = -0x7200
ERR_FATAL_ALERT_MESSAGE = -0x7780
ERR_BAD_PROTOCOL_VERSION = -0x6E80  # 2.28: MBEDTLS_ERR_SSL_BAD_HS_PROTOCOL_VERSION, same value
ERR_BAD_HS_SERVER_HELLO = -0x7980
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

_OID_SERVER_AUTH = "1.3.6.1.5.5.7.3.1"
_OID_ANY_EKU = "2.5.29.37.0"
# keyUsage bits as mbedtls stores them (first BIT STRING byte lowest).
KU_DIGITAL_SIGNATURE, KU_KEY_ENCIPHERMENT, KU_KEY_AGREEMENT, KU_KEY_CERT_SIGN = 0x80, 0x20, 0x08, 0x04
_KU_MAY = 0x01 | 0x8000  # encipherOnly, decipherOnly


def mbedtls_strerror(code: int) -> str:
    """mbedtls_strerror() of a negative Mbed TLS code (ota_rig/virtual/mbedtls_tables.py)."""
    return strerror(code)


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
    def coded(cls, code: int, stage: str, **kwargs: object) -> TlsError:
        """The error Mbed TLS reports as `code`, with its text."""
        return cls(code, mbedtls_strerror(code), stage=stage, **kwargs)

    @classmethod
    def from_os(cls, exc: OSError, stage: str) -> TlsError:
        num = exc.errno if exc.errno is not None else (
            errnos.ETIMEDOUT if isinstance(exc, TimeoutError) else errnos.EIO)
        device = errnos.ECONNRESET if num == errnos.ECONNREFUSED else num  # lwIP: RST -> ERR_RST
        return cls(-1, os.strerror(num), stage=stage, errno=num, device_errno=device)


class TlsTimeout(TlsError):
    """No data within the time given: recv() (stage "io", code -0x6800), the handshake (code
    -1, as ssl_client's handshake_timeout) or the TCP connect (code -1, errno ETIMEDOUT)."""



class RigLimitation(Exception):
    """The server chose something the device offers and the twin's TLS engine cannot run: the
    twin cannot tell what the device would do. Not a device verdict: the twin reports it as a
    rig limitation (secure_client.py) instead of any line the device would print."""


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


def _name_eq(a: list[Ava], b: list[Ava]) -> bool:
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


def load_ca_bundle(pem: str | bytes) -> list[Certificate]:
    """mbedtls_x509_crt_parse(ca, pem, strlen(pem) + 1) as ssl_client.cpp calls it (x509.py).

    Raises TlsError (stage "setup") with the code start_ssl_client() returns when nothing parses;
    blocks that fail while others parse are skipped, as Mbed TLS does.
    """
    try:
        return parse_bundle(pem)
    except X509Error as err:
        raise TlsError.coded(err.code, "setup") from None


# --- the connection -----------------------------------------------------------------------------

# The protocol versions each profile accepts: 2.0.14's sdkconfig keeps TLS 1.0 and 1.1 and
# ssl_client.cpp sets no minimum; Mbed TLS 3.x has no TLS below 1.2. TLS 1.2 at most on both.
_VERSIONS = {"TLSv1": (3, 1), "TLSv1_1": (3, 2), "TLSv1_2": (3, 3)}
_VERSION_NAMES = {(3, 1): "TLSv1", (3, 2): "TLSv1.1", (3, 3): "TLSv1.2"}


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
            address: str | None = None, unix_time: float | None = None) -> TlsSession:
    """start_ssl_client() with setCACert(ca_bundle): TCP, then TLS with the profile's hello and
    checks. `ca_bundle` None is setInsecure(): MBEDTLS_SSL_VERIFY_NONE, no chain, name or date
    check.

    host is the URL host (TLS name and SNI); address is the IP dialled (default: host if it is an
    IP literal, else 127.0.0.1, as the twin resolves every name); unix_time the device clock's
    time(NULL) for the hello's gmt_unix_time (default: the host's). Raises TlsError, or
    RigLimitation when the server chose what the engine cannot run.
    """
    dial = address or (host if _is_ip(host) else "127.0.0.1")
    # start_ssl_client() connects TCP first and parses the CA bundle after: setCACert("") is a
    # real, empty bundle (not NULL), which Mbed TLS refuses with -0x2180 once the socket is up;
    # the server sees a connection closed without a byte (ssl_client.cpp, 2.x and 3.x).
    sock = _tcp_connect(dial, port, timeout)
    try:
        trusted = None if ca_bundle is None else load_ca_bundle(ca_bundle)
    except TlsError:
        sock.close()
        raise
    session = TlsSession(sock, host, profile, trusted, time.time() if unix_time is None else unix_time)
    session._handshake(timeout)
    return session


class TlsSession:
    """An established TLS connection (see connect())."""

    def __init__(self, sock: socket.socket, host: str, profile: Profile, trusted: list[Certificate] | None,
                 unix_time: float) -> None:
        self._sock = sock
        self.host = host
        self.profile = profile
        self._trusted = trusted
        self._closed = False
        self.peer_certificate: Certificate | None = None
        self.peer_chain: list[Certificate] = []
        self.verify_flags = 0
        self._refusal: TlsError | None = None
        self._verified = False  # the device's checks ran on the server's Certificate
        hello = HELLOS[profile.name]
        self._client = tls_engine.Client(
            sock, hello=hello.handshake_message(host, int(unix_time)), record_version=hello.record_version,
            versions=(_VERSIONS[profile.oldest_tls], (3, 3)), groups=hello.groups,
            on_certificate=self._on_certificate)

    # -- properties --
    @property
    def version(self) -> str:
        """"TLSv1.2" (or "TLSv1.1", "TLSv1"), as mbedtls_ssl_get_version() says it."""
        return _VERSION_NAMES.get(self._client.version, str(self._client.version))

    @property
    def cipher(self) -> str | None:
        """mbedtls_ssl_get_ciphersuite(), e.g. "TLS-ECDHE-ECDSA-WITH-AES-256-GCM-SHA384"."""
        return SUITE_NAMES.get(self._client.suite)

    # -- handshake --
    def _handshake(self, timeout: float) -> None:
        try:
            self._client.handshake(timeout)
            if not self._verified:  # fail closed: never accept a certificate not checked here
                raise TlsError(ERR_CERT_VERIFY_FAILED, mbedtls_strerror(ERR_CERT_VERIFY_FAILED),
                               stage="verify", flags=BADCERT["OTHER"])
        except tls_engine.EngineLimit as limit:
            self._abort()
            raise RigLimitation(f"{limit} (server {self.host}, profile {self.profile.name})") from None
        except tls_engine.EngineFailure as failure:
            self._abort()
            raise self._refusal or _failure_error(failure, "handshake") from None
        except TimeoutError:
            self._abort()
            raise TlsTimeout(-1, "TLS handshake timed out", stage="handshake") from None
        except OSError as exc:
            self._abort()
            raise _net_error(exc, send=False) from None
        except BaseException:
            self._abort()
            raise
        log.debug("TLS to %s: %s %s", self.host, self.version, self.cipher)

    def _on_certificate(self, msg: bytes, hello: tls_engine.ServerHello) -> int | None:
        """ssl_parse_certificate() on the device: the alert to send, or None to go on."""
        ders = certificate_list(msg)
        if not ders:  # malformed or empty: decode_error
            self._refusal = TlsError.coded(ERR_BAD_HS_CERTIFICATE, "handshake", alert=ALERTS[50])
            return 50
        chain = []
        for der in ders:
            try:
                chain.append(Certificate.from_der(der))
            except X509Error as err:
                if err.code == ERR_UNKNOWN_SIG_ALG:
                    continue  # Mbed TLS skips these
                alert = 43 if err.code == ERR_X509_UNKNOWN_VERSION else 42
                self._refusal = TlsError.coded(err.code, "handshake", alert=ALERTS[alert])
                return alert
        self.peer_chain = chain
        self.peer_certificate = chain[0] if chain else None
        if self._trusted is None:  # setInsecure(): whatever the server sent is accepted
            self._verified = True
            return None
        code, flags = check_server_certificate(chain, self._trusted, self.host, self.profile,
                                               SUITE_NAMES.get(hello.suite))
        self.verify_flags = flags
        if code == 0:
            self._verified = True
            if chain[0].curve is not None and chain[0].curve not in _ENGINE_CURVES:
                raise tls_engine.EngineLimit(f"the server's key is on {chain[0].curve}, which the device "
                                             "accepts and the twin's TLS engine cannot use")
            return None
        alert = alert_for_flags(flags)
        log.debug("certificate of %s refused, flags %#x, alert %s", self.host, flags, ALERTS[alert])
        self._refusal = TlsError(code, mbedtls_strerror(code), stage="verify", flags=flags, alert=ALERTS[alert])
        return alert

    def _abort(self) -> None:
        self._closed = True
        self._sock.close()

    # -- application data --
    def send(self, data: bytes) -> None:
        """mbedtls_ssl_write() all of data. Raises TlsError (stage "io")."""
        if self._closed:
            raise TlsError(-1, "connection closed", stage="io")
        try:
            self._client.send(data)
        except OSError as exc:
            raise _net_error(exc, send=True) from None

    def recv(self, max_bytes: int, timeout: float) -> bytes:
        """Up to max_bytes of application data.

        b"" when the server closed with close_notify (ssl_client ignores -0x7880). Raises
        TlsTimeout (code -0x6800, stage "io") if nothing arrives within timeout (the
        session stays usable), and TlsError (code -0x7280, "SSL - The connection indicated an
        EOF") when TCP closes without close_notify, as mbedtls_ssl_read() reports it.
        """
        if self._closed:
            raise TlsError(-1, "connection closed", stage="io")
        try:
            return self._client.recv(max_bytes, timeout)
        except TimeoutError:
            raise TlsTimeout.coded(ERR_SSL_TIMEOUT, "io") from None
        except tls_engine.EngineFailure as failure:
            raise _failure_error(failure, "io") from None
        except OSError as exc:
            raise _net_error(exc, send=False) from None

    def close(self, notify: bool = False) -> None:
        """Close the connection as WiFiClientSecure::stop() does: stop_ssl_socket() closes the
        socket and frees the context without a close_notify. notify=True sends one first."""
        if self._closed:
            return
        self._closed = True
        self._client.close(notify)

    def __enter__(self) -> TlsSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


_ENGINE_CURVES = {"secp256r1", "secp384r1", "secp521r1", "secp256k1", "secp224r1", "secp192r1",
                  "bp256r1", "bp384r1", "bp512r1"} & {
    n.replace("brainpoolP", "bp") for n in tls_engine.ENGINE_GROUPS.values()}


def _failure_error(failure: tls_engine.EngineFailure, stage: str) -> TlsError:
    """What Mbed TLS returns where the engine failed (ssl_tls.c, ssl_cli.c / ssl_tls12_client.c)."""
    if failure.kind == "eof":
        return TlsError.coded(ERR_CONN_EOF, stage)
    if failure.kind == "invalid_record":
        return TlsError.coded(ERR_INVALID_RECORD, stage)
    if failure.kind == "remote_alert":
        if failure.alert == 0:  # close_notify
            return TlsError.coded(ERR_PEER_CLOSE_NOTIFY, stage)
        return TlsError.coded(ERR_FATAL_ALERT_MESSAGE, stage)
    name = ALERTS.get(failure.alert, str(failure.alert))
    # A ServerHello below the profile's minimum: protocol_version and -0x6E80 (reference
    # clienthello/README.md); other refusals of the server's messages: as Mbed TLS 2.28 names a
    # bad ServerHello (an approximation: Mbed TLS's code depends on the message and release).
    code = ERR_BAD_PROTOCOL_VERSION if failure.alert == 70 else ERR_BAD_HS_SERVER_HELLO
    return TlsError.coded(code, stage, alert=name)


def _net_error(exc: OSError, *, send: bool) -> TlsError:
    if isinstance(exc, (ConnectionResetError, BrokenPipeError)):
        code = ERR_NET_CONN_RESET
    else:
        code = ERR_NET_SEND_FAILED if send else ERR_NET_RECV_FAILED
    return TlsError(code, mbedtls_strerror(code), stage="io", errno=exc.errno)
