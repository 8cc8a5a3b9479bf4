"""The engine under the twin's TLS client: tlslite-ng with pyca `cryptography` for the ciphers.

The only module of the rig that imports tlslite. ota_rig/virtual/tls.py says what the device does
(its ClientHello, its certificate decision, its error codes); this module makes the wire do it:

* the ClientHello goes out exactly as given (handshake message and record version), and
  tlslite takes it as the hello it sent;
* each handshake message from the server is seen raw before tlslite acts on it: the
  ServerHello (a suite, or later a group, the device offers but tlslite cannot run is an
  `EngineLimit`, raised before anything is sent), and the Certificate, which `on_certificate`
  judges; an alert it returns goes out at once, as the only record after the ClientHello, in a
  record of the negotiated version;
* an alert tlslite itself would send for bytes that are no TLS record is not sent (Mbed TLS
  drops the connection with MBEDTLS_ERR_SSL_INVALID_RECORD and no alert), and a peer's
  close_notify is not answered (Mbed TLS does not answer one either);
* AES-GCM, AES-CCM and AES-CBC run on `cryptography` (tlslite's own are pure Python) through a
  record layer whose cipher settings map to them, and so do the ECDHE exchange (X25519 and the
  NIST, secp256k1 and Brainpool curves) and the ECDSA check of the ServerKeyExchange.

It overrides private methods of tlslite-ng (`_clientSendClientHello`, `_getNextRecord`,
`_sendError`, `_sendMsg`, `RecordLayer._getCipherSettings`; it reads `_readBuffer` and its
socket wrapper's `_read_buffer`) and replaces two names in its modules
(`keyexchange.ECDHKeyExchange`, `x509._create_public_ecdsa_key`): pyproject pins the exact version,
and `ENGINE_VERSION` checks it at import.
"""

from __future__ import annotations

import select
import socket
import warnings
from collections.abc import Callable
from dataclasses import dataclass

# tlslite-ng ships no type information (no py.typed, no stubs): pyproject's mypy settings let
# its imports be untyped, and everything taken from it is Any to the type checker. This module is
# the only importer of tlslite, so the gap stays here.
with warnings.catch_warnings():  # tlslite's asyncore integration, on Pythons that still have it
    warnings.simplefilter("ignore", DeprecationWarning)
    import tlslite
import tlslite.x509
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, x25519
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from tlslite import HandshakeSettings, TLSConnection, keyexchange
from tlslite.constants import AlertDescription, AlertLevel, CipherSuite, ContentType, GroupName, HandshakeType
from tlslite.errors import TLSAbruptCloseError, TLSIllegalParameterException, TLSLocalAlert, TLSRemoteAlert
from tlslite.handshakesettings import ALL_CURVE_NAMES
from tlslite.messages import ClientHello, Message
from tlslite.recordlayer import RecordLayer
from tlslite.utils import cipherfactory
from tlslite.utils.codec import Parser
from tlslite.utils.python_ecdsakey import Python_ECDSAKey

from ota_rig.virtual.mbedtls_tables import SUITE_NAMES

ENGINE_VERSION = "0.8.2"
if tlslite.__version__ != ENGINE_VERSION:  # the overrides below follow this release's internals
    raise ImportError(f"rig needs tlslite-ng {ENGINE_VERSION}, found {tlslite.__version__}")

__all__ = ["ENGINE_GROUPS", "Client", "EngineFailure", "EngineLimit", "ServerHello"]

# Named groups tlslite can run an ECDHE exchange on (and accept a certificate key on).
ENGINE_GROUPS: dict[int, str] = {getattr(GroupName, n): n for n in ALL_CURVE_NAMES
                                 if not n.endswith(("tls13", "mlkem768", "mlkem1024"))}


class EngineLimit(Exception):
    """The server chose something the device offers and tlslite cannot run: a rig limitation,
    never a verdict on the device. The connection is closed without a byte more."""


class EngineFailure(Exception):
    """The handshake or a read failed. kind: "eof" (TCP closed without an alert),
    "invalid_record" (bytes that are not TLS; nothing sent back), "local_alert" (this client
    sent `alert`), "remote_alert" (the server sent `alert`)."""

    def __init__(self, kind: str, alert: int | None = None, detail: str = "") -> None:
        super().__init__(f"{kind}: {alert if alert is not None else ''} {detail}".strip())
        self.kind, self.alert, self.detail = kind, alert, detail


@dataclass(frozen=True)
class ServerHello:
    version: tuple[int, int]
    suite: int


# --- ciphers on `cryptography` ------------------------------------------------------------------


class _Aead:
    """tlslite's AEAD interface (seal/open) over cryptography's AES-GCM or AES-CCM."""

    isBlockCipher, isAEAD, nonceLength = False, True, 12
    implementation = "cryptography"

    def __init__(self, key: bytearray, name: str, aead: AESGCM | AESCCM, tag: int) -> None:
        self.key, self.name, self._aead, self.tagLength = key, name, aead, tag

    def seal(self, nonce: bytearray, plaintext: bytearray, data: bytearray) -> bytearray:
        return bytearray(self._aead.encrypt(bytes(nonce), bytes(plaintext), bytes(data)))

    def open(self, nonce: bytearray, ciphertext: bytearray, data: bytearray) -> bytearray | None:
        try:
            return bytearray(self._aead.decrypt(bytes(nonce), bytes(ciphertext), bytes(data)))
        except InvalidTag:
            return None


class _Cbc:
    """tlslite's block-cipher interface (CBC, chained across calls) over cryptography's AES."""

    isBlockCipher, isAEAD, block_size = True, False, 16
    implementation = "cryptography"

    def __init__(self, key: bytearray, iv: bytearray) -> None:
        self.name = f"aes{len(key) * 8}"
        self._cipher = Cipher(algorithms.AES(bytes(key)), modes.CBC(bytes(iv)))
        self._encryptor: CipherContext | None = None  # made at first use, then kept (CBC chains)
        self._decryptor: CipherContext | None = None

    def encrypt(self, plaintext: bytearray) -> bytearray:
        if self._encryptor is None:
            self._encryptor = self._cipher.encryptor()
        return bytearray(self._encryptor.update(bytes(plaintext)))

    def decrypt(self, ciphertext: bytearray) -> bytearray:
        if self._decryptor is None:
            self._decryptor = self._cipher.decryptor()
        return bytearray(self._decryptor.update(bytes(ciphertext)))


def _gcm(key, _impl=None):
    return _Aead(key, f"aes{len(key) * 8}gcm", AESGCM(bytes(key)), 16)


def _ccm(key, _impl=None):
    return _Aead(key, f"aes{len(key) * 8}ccm", AESCCM(bytes(key), 16), 16)


def _ccm8(key, _impl=None):
    return _Aead(key, f"aes{len(key) * 8}ccm_8", AESCCM(bytes(key), 8), 8)


def _cbc(key, iv, _impl=None):
    return _Cbc(key, iv)


_CIPHERS = {cipherfactory.createAESGCM: _gcm, cipherfactory.createAESCCM: _ccm,
            cipherfactory.createAESCCM_8: _ccm8, cipherfactory.createAES: _cbc}


# --- elliptic curves on `cryptography` ----------------------------------------------------------
# tlslite's ECDHE and its ECDSA check of the ServerKeyExchange are pure Python (its own X25519,
# python-ecdsa for the NIST curves): about a third of the twin's CPU time in a scenario. The same
# values from cryptography (OpenSSL): the same shared secret, the same public value bytes, the
# same verdict on a signature, and tlslite's own exceptions for a bad key share or point.

_EC_CURVES: dict[int, ec.EllipticCurve] = {
    GroupName.secp256r1: ec.SECP256R1(), GroupName.secp384r1: ec.SECP384R1(),
    GroupName.secp521r1: ec.SECP521R1(), GroupName.secp256k1: ec.SECP256K1(),
    GroupName.brainpoolP256r1: ec.BrainpoolP256R1(), GroupName.brainpoolP384r1: ec.BrainpoolP384R1(),
    GroupName.brainpoolP512r1: ec.BrainpoolP512R1(),
}
# python-ecdsa's curve names, as tlslite's certificate parsing gives them
_ECDSA_CURVES: dict[str, ec.EllipticCurve] = {
    "NIST256p": ec.SECP256R1(), "NIST384p": ec.SECP384R1(), "NIST521p": ec.SECP521R1(),
    "SECP256k1": ec.SECP256K1(), "BRAINPOOLP256r1": ec.BrainpoolP256R1(),
    "BRAINPOOLP384r1": ec.BrainpoolP384R1(), "BRAINPOOLP512r1": ec.BrainpoolP512R1(),
}
_DIGESTS_BY_SIZE = {20: hashes.SHA1(), 28: hashes.SHA224(), 32: hashes.SHA256(), 48: hashes.SHA384(),
                    64: hashes.SHA512()}


class _Ecdh(keyexchange.ECDHKeyExchange):
    """tlslite's ECDHE (a client's side) with X25519 and the curves of _EC_CURVES on cryptography;
    any other group stays tlslite's."""

    def __init__(self, group, version):
        # tlslite's __init__ calls super(ECDHKeyExchange, self), and that module name is this
        # class once replaced (below): its parent's __init__ directly instead.
        keyexchange.RawDHKeyExchange.__init__(self, group, version)

    def get_random_private_key(self):
        if self.group == GroupName.x25519:
            return x25519.X25519PrivateKey.generate()
        if self.group in _EC_CURVES:
            return ec.generate_private_key(_EC_CURVES[self.group])
        return super().get_random_private_key()

    def calc_public_value(self, private, point_format="uncompressed"):
        if isinstance(private, x25519.X25519PrivateKey):
            return bytearray(private.public_key().public_bytes_raw())
        if isinstance(private, ec.EllipticCurvePrivateKey):
            form = PublicFormat.CompressedPoint if point_format == "compressed" else PublicFormat.UncompressedPoint
            return bytearray(private.public_key().public_bytes(Encoding.X962, form))
        return super().calc_public_value(private, point_format)

    def calc_shared_key(self, private, peer_share, valid_point_formats=("uncompressed",)):
        if isinstance(private, x25519.X25519PrivateKey):
            try:  # OpenSSL refuses a share whose result is all zeros, as tlslite does
                return bytearray(private.exchange(x25519.X25519PublicKey.from_public_bytes(bytes(peer_share))))
            except ValueError:
                raise TLSIllegalParameterException("Invalid key share") from None
        if isinstance(private, ec.EllipticCurvePrivateKey):
            share = bytes(peer_share)
            encoding = {4: "uncompressed", 2: "compressed", 3: "compressed"}.get(share[0] if share else -1)
            if encoding not in set(valid_point_formats):
                raise TLSIllegalParameterException("Invalid ECC point")
            try:
                peer = ec.EllipticCurvePublicKey.from_encoded_point(private.curve, share)
                return bytearray(private.exchange(ec.ECDH(), peer))
            except ValueError:
                raise TLSIllegalParameterException("Invalid ECC point") from None
        return super().calc_shared_key(private, peer_share, valid_point_formats)


class _EcdsaKey(Python_ECDSAKey):
    """tlslite's ECDSA public key of a certificate, checking signatures with cryptography. The
    digest tlslite passes (already cut to the curve's size) is checked as it is: ECDSA uses only
    the digest's bytes, so any hash of that length gives the same verdict."""

    def __init__(self, x, y, curve_name, secret_multiplier=None):
        super().__init__(x, y, curve_name, secret_multiplier)
        curve = _ECDSA_CURVES.get(curve_name)
        self._rig_key = None if curve is None else ec.EllipticCurvePublicNumbers(x, y, curve).public_key()

    def _verify(self, signature, hash_bytes):
        digest = _DIGESTS_BY_SIZE.get(len(hash_bytes))
        if self._rig_key is None or digest is None:
            return super()._verify(signature, hash_bytes)
        try:
            self._rig_key.verify(bytes(signature), bytes(hash_bytes), ec.ECDSA(Prehashed(digest)))
        except (InvalidSignature, ValueError):
            return False
        return True


def _ecdsa_key(point_x, point_y, curve_name, implementations=("python",)):
    return _EcdsaKey(point_x, point_y, curve_name)


# tlslite looks both names up in its modules when it needs them (keyexchange.py: the key
# exchanges make an ECDHKeyExchange; x509.py: a certificate's ECDSA key).
keyexchange.ECDHKeyExchange = _Ecdh
tlslite.x509._create_public_ecdsa_key = _ecdsa_key


class _RecordLayer(RecordLayer):
    @staticmethod
    def _getCipherSettings(cipherSuite):
        key_length, iv_length, create = RecordLayer._getCipherSettings(cipherSuite)
        return key_length, iv_length, _CIPHERS.get(create, create)


# --- the connection -----------------------------------------------------------------------------

# Suites tlslite runs with the server's certificate (RSA, DHE-RSA, ECDHE-RSA, ECDHE-ECDSA).
_AUTHENTICATED = set(CipherSuite.certAllSuites) | set(CipherSuite.ecdheEcdsaSuites)
_SKE_NAMED_CURVE = 3


def runnable_suites(offered: list[int], version: tuple[int, int]) -> set[int]:
    """The offered suites tlslite can run at `version`."""
    return set(CipherSuite.filterForVersion(offered, minVersion=version, maxVersion=version)) & _AUTHENTICATED


class _Connection(TLSConnection):
    """tlslite's TLSConnection with the device's hello and the rig's hooks (see the module)."""

    def __init__(self, sock: socket.socket, client: Client) -> None:
        super().__init__(sock)
        self._recordLayer.__class__ = _RecordLayer
        self.closeSocket = False
        self._rig = client
        self._rig_hello: ClientHello | None = None
        self._rig_refusal: int | None = None
        self._rig_notify = False
        self._rig_records = False  # a well-formed record came from the server

    def _clientSendClientHello(self, settings, session, srpUsername, srpParams, certParams, anonParams,
                               serverName, nextProtos, reqTack, alpn):
        message = bytearray(self._rig.hello)
        parser = Parser(message)
        parser.get(1)
        self._rig_hello = ClientHello().parse(parser)
        self.version = self._rig.record_version
        self._handshake_hash.update(message)
        for result in self._sendMsgThroughSocket(Message(ContentType.handshake, message)):
            yield result
        yield self._rig_hello

    def _getNextRecord(self):
        for result in super()._getNextRecord():
            if result in (0, 1):
                yield result
                continue
            header, parser = result
            self._rig_records = True
            if header.type == ContentType.handshake and not self.session:
                for step in self._inspect(bytes(parser.bytes)):
                    yield step
            yield result
            return

    def _inspect(self, message: bytes):
        kind = message[0]
        if kind == HandshakeType.server_hello and len(message) >= 40:
            at = 4 + 2 + 32
            at += 1 + message[at]
            hello = ServerHello((message[4], message[5]), int.from_bytes(message[at:at + 2], "big"))
            self._rig.server_hello = hello
            if self._rig_hello is None:  # _clientSendClientHello() sets it before any record comes
                raise RuntimeError("a ServerHello before the device's ClientHello was sent")
            offered = self._rig_hello.cipher_suites
            if (self._rig.versions[0] <= hello.version <= self._rig.versions[1] and hello.suite in offered
                    and hello.suite not in runnable_suites(offered, hello.version)):
                raise EngineLimit(
                    f"the server chose suite 0x{hello.suite:04X} "
                    f"({SUITE_NAMES.get(hello.suite, 'no Mbed TLS name known')}), which the device offers "
                    "and the twin's TLS engine (tlslite-ng) cannot run"
                )
        elif kind == HandshakeType.certificate and self._rig.server_hello is not None:
            alert = self._rig.on_certificate(message, self._rig.server_hello)
            if alert is not None:
                self._rig_refusal = alert
                for step in self._sendError(alert, "the device refused the certificate"):
                    yield step
        elif kind == HandshakeType.server_key_exchange and self._rig.server_hello is not None:
            suite = self._rig.server_hello.suite
            if suite in CipherSuite.ecdhAllSuites and len(message) >= 7 and message[4] == _SKE_NAMED_CURVE:
                group = int.from_bytes(message[5:7], "big")
                if group in self._rig.groups and group not in ENGINE_GROUPS:
                    raise EngineLimit(
                        f"the server chose group {group}, which the device offers and the "
                        "twin's TLS engine (tlslite-ng) cannot run"
                    )

    def _sendError(self, alertDescription, errorStr=None):
        if not self._rig_records:  # Mbed TLS: MBEDTLS_ERR_SSL_INVALID_RECORD, no alert
            self._shutdown(False)
            raise EngineFailure("invalid_record", detail=errorStr)
        for result in super()._sendError(alertDescription, errorStr):
            yield result

    def _sendMsg(self, msg, randomizeFirstBlock=True, update_hashes=True):
        if (
            msg.contentType == ContentType.alert
            and not self._rig_notify
            and msg.write() == bytearray([AlertLevel.warning, AlertDescription.close_notify])
        ):
            return  # tlslite answers a peer's close_notify; Mbed TLS does not
        for result in super()._sendMsg(msg, randomizeFirstBlock, update_hashes):
            yield result


class Client:
    """One client connection over a connected socket.

    hello: the ClientHello handshake message to send (type, length, body); record_version its
    record's version; versions the (lowest, highest) protocol versions the device accepts;
    groups the named groups it offers; on_certificate(message, server_hello) judges the server's
    Certificate message and returns the alert to send, or None to go on.
    """

    def __init__(
        self,
        sock: socket.socket,
        *,
        hello: bytes,
        record_version: tuple[int, int],
        versions: tuple[tuple[int, int], tuple[int, int]],
        groups: list[int],
        on_certificate: Callable[[bytes, ServerHello], int | None],
    ) -> None:
        self.sock, self.hello, self.record_version = sock, hello, record_version
        self.versions, self.groups, self.on_certificate = versions, groups, on_certificate
        self.server_hello: ServerHello | None = None
        self._tls = _Connection(sock, self)

    def handshake(self, timeout: float) -> None:
        """Raises EngineLimit, EngineFailure, TimeoutError or OSError."""
        settings = HandshakeSettings()
        settings.minVersion, settings.maxVersion = self.versions
        settings.eccCurves = [ENGINE_GROUPS[g] for g in self.groups if g in ENGINE_GROUPS]
        settings.minKeySize = 512  # the device's X.509 profile decides (certificate_check.py), not tlslite
        settings.requireExtendedMasterSecret = False
        self.sock.settimeout(timeout)
        try:
            self._tls.handshakeClientCert(settings=settings, reqTack=False)
        except TLSLocalAlert as alert:
            raise EngineFailure("local_alert", alert.description, str(alert)) from None
        except TLSRemoteAlert as alert:
            raise EngineFailure("remote_alert", alert.description, str(alert)) from None
        except TLSAbruptCloseError:
            raise EngineFailure("eof") from None

    @property
    def version(self) -> tuple[int, int]:
        return tuple(self._tls.version)

    @property
    def suite(self) -> int:
        return self._tls.session.cipherSuite

    @property
    def refused_with(self) -> int | None:
        """The alert on_certificate chose, once it was sent."""
        return self._tls._rig_refusal

    def send(self, data: bytes) -> None:
        """All of data as application records. Raises OSError."""
        self._tls.write(data)

    def recv(self, max_bytes: int, timeout: float) -> bytes:
        """Up to max_bytes of application data; b"" after the server's close_notify. Raises
        TimeoutError when nothing came within timeout (the connection stays usable),
        EngineFailure ("eof", "remote_alert", ...) or OSError."""
        # Decrypted data waiting, or bytes tlslite's socket wrapper read ahead (at least 4 KB a
        # recv): only with neither is the kernel socket the place to wait on.
        if not self._tls._readBuffer and not self._tls.sock._read_buffer:
            if self._tls.closed:
                return b""
            if not select.select([self.sock], [], [], max(0.0, timeout))[0]:
                raise TimeoutError
        self.sock.settimeout(max(timeout, 5.0))  # the rest of a record that has begun
        try:
            return self._tls.read(max_bytes, 1)
        except TLSRemoteAlert as alert:
            raise EngineFailure("remote_alert", alert.description, str(alert)) from None
        except TLSAbruptCloseError:
            raise EngineFailure("eof") from None

    def close(self, notify: bool = False) -> None:
        """Close the socket; with notify, send close_notify first (without waiting for one)."""
        if notify and not self._tls.closed:
            self._tls._rig_notify = True
            try:
                alert = tlslite.messages.Alert().create(AlertDescription.close_notify, AlertLevel.warning)
                for _ in self._tls._sendMsg(alert):
                    pass
            except OSError:
                pass
        self.sock.close()
