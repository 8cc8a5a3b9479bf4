"""The twin's TLS client: arduino-esp32's ssl_client.cpp on Mbed TLS, as the device connects.

start_ssl_client() does, in this order, and so does connect():

* TCP to the server (lwIP: a refused port is ECONNRESET on the device), then the CA bundle is
  parsed with mbedtls_x509_crt_parse(): a bundle that does not parse (even an empty one) fails
  here, after the TCP connection was made and before any TLS byte (TlsError stage "setup");
  setInsecure() (`ca_bundle` None) is MBEDTLS_SSL_VERIFY_NONE: no parse, no check at all;
* the handshake, whose wire the engine makes (ota_rig/virtual/tls_engine.py: tlslite-ng with
  `cryptography`, the only module that knows it). The ClientHello is the profile's captured one
  (ota_rig/virtual/clienthello.py), byte for byte but for the random (its first 4 bytes the
  device clock's Unix time) and the SNI; the versions accepted are the profile's (TLS 1.0 to 1.2
  on 2.0.x, 1.2 only on 3.x);
* when the server's Certificate message arrives, ssl_parse_certificate(): certificates Mbed TLS
  cannot parse refuse the handshake (decode_error, bad_certificate or unsupported_certificate),
  those with an unknown signature algorithm are skipped, and the chain goes to the device's
  certificate decision (ota_rig/virtual/certificate_check.py);
* on a refusal the client sends the single fatal alert ssl_parse_certificate_verify() picks
  from the verification flags (the first in its order: access_denied, bad_certificate,
  unsupported_certificate, certificate_expired, certificate_revoked, unknown_ca, else
  certificate_unknown) as the only record after its ClientHello, in a record of the negotiated
  version, closes the socket and raises TlsError(-9984, ...), as start_ssl_client() returns it;
* any other failure, of the handshake or of the records after it, raises the Mbed TLS code the
  device gets there (ota_rig/virtual/mbedtls_errors.py), with mbedtls_strerror()'s text;
* a server choice the device offers but the engine cannot run (a Camellia or static-ECDH suite,
  a curve such as secp224k1) raises RigLimitation: the twin cannot say what the device would
  do, and says so instead of inventing a verdict. The handshake fails closed: a session whose
  certificate the device's checks did not see is refused.

Facts: shared/reference/esp32-ota-device.md sections 8 and 9.
"""

from __future__ import annotations

import errno as errnos
import ipaddress
import logging
import os
import socket
import time

from ota_rig.device.profiles import Profile
from ota_rig.virtual import tls_engine
from ota_rig.virtual.certificate_check import check_server_certificate
from ota_rig.virtual.clienthello import HELLOS
from ota_rig.virtual.mbedtls_errors import (
    BADCERT,
    ERR_BAD_HS_CERTIFICATE,
    ERR_BAD_HS_SERVER_HELLO,
    ERR_BAD_PROTOCOL_VERSION,
    ERR_CERT_VERIFY_FAILED,
    ERR_CONN_EOF,
    ERR_FATAL_ALERT_MESSAGE,
    ERR_INVALID_RECORD,
    ERR_NET_CONN_RESET,
    ERR_NET_RECV_FAILED,
    ERR_NET_SEND_FAILED,
    ERR_PEER_CLOSE_NOTIFY,
    ERR_SSL_TIMEOUT,
    ERR_UNKNOWN_SIG_ALG,
    ERR_X509_UNKNOWN_VERSION,
    mbedtls_strerror,
)
from ota_rig.virtual.mbedtls_tables import SUITE_NAMES
from ota_rig.virtual.x509 import Certificate, X509Error, certificate_list, parse_bundle

log = logging.getLogger(__name__)

__all__ = [
    "ALERTS",
    "RigLimitation",
    "TlsError",
    "TlsSession",
    "TlsTimeout",
    "alert_for_flags",
    "connect",
    "load_ca_bundle",
]

# --- alerts -----------------------------------------------------------------------------------

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
    def coded(cls, code: int, stage: str, *, flags: int = 0, alert: str | None = None) -> TlsError:
        """The error Mbed TLS reports as `code`, with its text."""
        return cls(code, mbedtls_strerror(code), stage=stage, flags=flags, alert=alert)

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
    # "local_alert": this client refused a server message with the alert the engine names.
    name = None if failure.alert is None else ALERTS.get(failure.alert, str(failure.alert))
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
