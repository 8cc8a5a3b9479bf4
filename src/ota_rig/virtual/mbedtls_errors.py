"""The Mbed TLS error codes and texts the twin's TLS client raises, as the device reports them.

Mbed TLS reports a failure as one negative int. Its magnitude has two parts: a high-level
(module) code in bits 7-15 (SSL -0x6800..-0x7F80, X509 -0x2080..-0x3000, PK, PEM, ...) and a
low-level code in bits 0-6 (NET, OID, ASN1, ...), added together when a module passes up what
a lower layer said: ERR_UNKNOWN_SIG_ALG below is X509_UNKNOWN_SIG_ALG (-0x2600) plus
OID_NOT_FOUND (-0x002E). mbedtls_strerror() prints the two texts joined by " : "
(ota_rig/virtual/mbedtls_tables.py holds the texts). The sketch sees the number through
WiFiClientSecure::lastError() and the core's `_handle_error()` log line prints it with its text:
a refused certificate is always -9984 (-0x2700, "X509 - Certificate verification failed, e.g.
CRL, CA or signature check failed"), whatever the reason.

The reason is a second number: the verification flags (MBEDTLS_X509_BADCERT_*, one bit each,
`BADCERT`), which mbedtls_x509_crt_verify_info() turns into one line per bit in a fixed order
(`verify_info`). The flags also pick the alert the client sends (ota_rig/virtual/tls.py) and
are what the certificate decision returns (ota_rig/virtual/certificate_check.py).

Only the codes the twin raises by name are here; any other code still gets its text from
mbedtls_strerror().
"""

from __future__ import annotations

from ota_rig.virtual.mbedtls_tables import strerror

__all__ = [
    "BADCERT",
    "ERR_BAD_HS_CERTIFICATE",
    "ERR_BAD_HS_SERVER_HELLO",
    "ERR_BAD_PROTOCOL_VERSION",
    "ERR_CERT_VERIFY_FAILED",
    "ERR_CONN_EOF",
    "ERR_FATAL_ALERT_MESSAGE",
    "ERR_INVALID_RECORD",
    "ERR_NET_CONN_RESET",
    "ERR_NET_RECV_FAILED",
    "ERR_NET_SEND_FAILED",
    "ERR_PEER_CLOSE_NOTIFY",
    "ERR_SSL_TIMEOUT",
    "ERR_UNKNOWN_SIG_ALG",
    "ERR_X509_FATAL_ERROR",
    "ERR_X509_UNKNOWN_VERSION",
    "mbedtls_strerror",
    "verify_info",
]

# --- error codes ------------------------------------------------------------------------------

# X.509: the certificate decision's results, and what parsing the server's certificates says.
ERR_CERT_VERIFY_FAILED = -0x2700  # MBEDTLS_ERR_X509_CERT_VERIFY_FAILED, -9984
ERR_X509_FATAL_ERROR = -0x3000  # chain longer than MBEDTLS_X509_MAX_INTERMEDIATE_CA
ERR_UNKNOWN_SIG_ALG = -0x262E  # MBEDTLS_ERR_X509_UNKNOWN_SIG_ALG + MBEDTLS_ERR_OID_NOT_FOUND
ERR_X509_UNKNOWN_VERSION = -0x2580
# SSL: the handshake and the records.
ERR_BAD_HS_CERTIFICATE = -0x7A00  # MBEDTLS_ERR_SSL_BAD_HS_CERTIFICATE (3.x: _BAD_CERTIFICATE)
ERR_BAD_HS_SERVER_HELLO = -0x7980
ERR_BAD_PROTOCOL_VERSION = -0x6E80  # 2.28: MBEDTLS_ERR_SSL_BAD_HS_PROTOCOL_VERSION, same value
ERR_FATAL_ALERT_MESSAGE = -0x7780
ERR_PEER_CLOSE_NOTIFY = -0x7880
ERR_CONN_EOF = -0x7280
ERR_INVALID_RECORD = -0x7200
ERR_SSL_TIMEOUT = -0x6800
# NET (low level): the socket under the records.
ERR_NET_RECV_FAILED = -0x004C
ERR_NET_SEND_FAILED = -0x004E
ERR_NET_CONN_RESET = -0x0050


def mbedtls_strerror(code: int) -> str:
    """mbedtls_strerror() of a negative Mbed TLS code (ota_rig/virtual/mbedtls_tables.py)."""
    return strerror(code)


# --- verification flags -----------------------------------------------------------------------

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
