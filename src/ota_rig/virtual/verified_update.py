"""The reference sketch's verified update (OTA_SIGNING_KEY set): verifiedUpdate() in
ota_rig/sketches/ota_https/ota_https.ino, step for step.

The sketch downloads the update itself, because HTTPUpdate's Update.end() makes the new slot
the boot partition before update() returns. It asks exactly as HTTPUpdate does (HttpUpdate.get:
same connection reuse, headers, timeouts and answer parsing), reports the answers HTTPUpdate
knows with HTTPUpdate's codes, and for a 200 reads a signed release (ota_rig/device/signing.py): first the
256-byte manifest, whose statement (version, image size, image SHA-256) must be signed with the
built-in key, name the image the server sends and a version no older than the running one; only
then Update.begin(), the image streamed in 1024-byte chunks through Update.write() and SHA-256,
and Update.end() (ESP-IDF's image check, then otadata) once the hash is the signed one. A
refusal before Update.begin() writes nothing; one after it calls Update.abort(), which leaves
otadata alone.

The running version is the sketch's own OTA_FIRMWARE_VERSION (SketchConfig.version), never the
app descriptor's, which a real build fills with the lib-builder's version.

Modelled: every line the sketch prints on this path, the order of its checks, how far the
download gets before a refusal (the server's record shows it), Update's buffering and abort,
and the signature check as mbedtls_pk_parse_public_key() and mbedtls_pk_verify() make it: ECDSA
P-256 over the statement's SHA-256, the signature's DER of the exact length signatureLength()
found, by `cryptography` (tests/unit/test_sketch_manifest.py runs the sketch's own C++ against
Debian's Mbed TLS on the same manifests). Not modelled: TLS errors
in mid-body (a broken body is a stream that brings nothing) and flash failures.
"""

from __future__ import annotations

import hashlib
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ota_rig.device.signing import (
    IMAGE_SHA256_AT,
    IMAGE_SIZE_AT,
    MANIFEST_MAGIC,
    MANIFEST_SIZE,
    STATEMENT_SIZE,
    VERSION_AT,
    VERSION_SIZE,
)
from ota_rig.device.sketch_config import SketchConfig
from ota_rig.virtual.arduino import Core
from ota_rig.virtual.httpupdate import (
    BAD_HEADER,
    FORBIDDEN,
    HTTPCLIENT_ERRORS,
    NO_SIZE,
    NOT_FOUND,
    TOO_LESS_SPACE,
    UPDATE_ERRORS,
    WRONG_CODE,
    HttpUpdate,
)
from ota_rig.virtual.secure_client import SecureClient
from ota_rig.virtual.updater import (
    ERROR_STREAM,
    ERROR_TEXT,
    STREAM_EMPTY_PAUSE,
    STREAM_EMPTY_READS,
    Updater,
    next_update_partition,
)

IMAGE_CHUNK_SIZE = 1024
APP_IMAGE_MAGIC = 0xE9


def report_failure(core: Core, client: SecureClient, code: int, text: str) -> None:
    """The sketch's reportFailure(): the result line, then the TLS client's Mbed TLS error if it
    kept one (the app's httpUpdate path prints failures with it too)."""
    core.report("update_failed", code=code, text=text)
    if client.last_error < 0:
        core.report("tls_error", code=client.last_error, text=client.last_error_text)


def compare_versions(a: str, b: str) -> int:
    """compareVersions(): dotted parts compared as numbers, a missing part counting 0; < 0 when
    `a` is older than `b`, 0 when equal, > 0 when newer."""
    parts_a, parts_b = _version_parts(a), _version_parts(b)
    width = max(len(parts_a), len(parts_b))
    parts_a += [0] * (width - len(parts_a))
    parts_b += [0] * (width - len(parts_b))
    return (parts_a > parts_b) - (parts_a < parts_b)


def _version_parts(text: str) -> list[int]:
    """versionPart() over the whole text: each part's leading digits as an unsigned long
    (32 bits on the ESP32); anything else in a part counts for nothing."""
    parts = []
    for part in text.split("."):
        value = 0
        for char in part:
            if not "0" <= char <= "9":
                break
            value = (value * 10 + ord(char) - ord("0")) & 0xFFFFFFFF
        parts.append(value)
    return parts


def signature_length(area: bytes) -> int:
    """signatureLength(): the DER signature's length if the manifest's signature `area` opens
    with a SEQUENCE that mbedtls_asn1_get_tag() accepts (short or 1-4 byte long length form,
    inside the area) and holds only zeros after it; 0 (unsigned) otherwise."""
    if area[0] != 0x30:  # MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE
        return 0
    if area[1] < 0x80:
        header, content = 2, area[1]
    else:
        count = area[1] & 0x7F
        if not 1 <= count <= 4:
            return 0
        header, content = 2 + count, int.from_bytes(area[2 : 2 + count], "big")
    length = header + content
    if length > len(area) or any(area[length:]):
        return 0
    return length


def signature_valid(public_pem: str, statement: bytes, signature: bytes) -> bool:
    """mbedtls_pk_verify(key, MBEDTLS_MD_SHA256, SHA-256(statement), signature) == 0 with the
    built-in P-256 key: ECDSA over the statement's SHA-256, the signature's DER exactly."""
    key = serialization.load_pem_public_key(public_pem.encode())
    if not isinstance(key, ec.EllipticCurvePublicKey):  # SketchConfig admits only P-256 keys
        return False
    try:
        key.verify(signature, statement, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def manifest_version(manifest: bytes) -> str:
    """The manifest's version field as the sketch reads it: a C string of at most 32 bytes."""
    field = manifest[VERSION_AT : VERSION_AT + VERSION_SIZE]
    return field.split(b"\0", 1)[0].decode("utf-8", "replace")


class VerifiedUpdate:
    """verifiedUpdate() for one boot of the app; `update(client)` is True once the new image is
    verified and activated (the app then prints update_ok and restarts)."""

    def __init__(self, core: Core, http_update: HttpUpdate, config: SketchConfig) -> None:
        self.core = core
        self.http = http_update
        self.config = config
        self.running = http_update.running

    def update(self, client: SecureClient) -> bool:
        parts = urlsplit(self.config.update_url)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        response = self.http.get(client, parts.hostname or "", parts.port or 443, path, self.config.version)
        code, installed = response.code, False
        if code <= 0:
            self._fail(client, code, f"HTTP error: {HTTPCLIENT_ERRORS.get(code, '')}")
        elif code == 304:
            self.core.report("no_updates")
        elif code in (404, 403):
            self._fail(client, NOT_FOUND if code == 404 else FORBIDDEN)
        elif code != 200:
            self._fail(client, WRONG_CODE)
        else:
            installed = self._install(client, response.length)
        client.stop()  # http.end()
        return installed

    def _fail(self, client: SecureClient, code: int, text: str | None = None) -> None:
        report_failure(self.core, client, code, UPDATE_ERRORS[code] if text is None else text)

    def _stream_error(self, client: SecureClient) -> None:
        self._fail(client, ERROR_STREAM, f"Update error: {ERROR_TEXT[ERROR_STREAM]}")

    def _update_error(self, client: SecureClient, updater: Updater) -> None:
        self._fail(client, updater.error, f"Update error: {updater.error_text}")

    def _install(self, client: SecureClient, size: int) -> bool:
        """installSigned(): the 200 answer's body, manifest then image."""
        if size <= 0:
            self._fail(client, NO_SIZE)
            return False
        if size <= MANIFEST_SIZE:
            self.core.report("signature_missing")
            return False
        manifest = self._read_fully(client, MANIFEST_SIZE)
        if manifest is None:
            self._stream_error(client)
            return False
        length = size - MANIFEST_SIZE
        if not self._manifest_acceptable(manifest, length):
            return False
        target = next_update_partition(self.running.table, self.running.partition)
        if length > (target.size if target else 0):  # ESP.getFreeSketchSpace()
            self._fail(client, TOO_LESS_SPACE)
            return False
        updater = Updater(self.core.chip, self.running.table, self.running.partition)
        if not updater.begin(length):
            self._update_error(client, updater)
            return False
        digest = self._stream_image(client, length, updater)
        if digest is None:
            updater.abort()
            return False
        if digest != manifest[IMAGE_SHA256_AT : IMAGE_SHA256_AT + 32]:
            self.core.report("image_mismatch")
            updater.abort()
            return False
        self.core.report("signature_valid")
        if not updater.end():
            for tag, message in updater.idf_errors:
                self.core.idf_error(tag, message)
            self._update_error(client, updater)
            return False
        return True

    def _manifest_acceptable(self, manifest: bytes, image_size: int) -> bool:
        """manifestAcceptable(): a manifest, signed with the built-in key, for an image of the
        size the server sends, and of a version no older than the running one (an equal one
        passes: re-installing is no downgrade)."""
        if manifest[: len(MANIFEST_MAGIC)] != MANIFEST_MAGIC:
            self.core.report("signature_missing")
            return False
        if not self._statement_verifies(manifest):
            return False
        if int.from_bytes(manifest[IMAGE_SIZE_AT : IMAGE_SIZE_AT + 4], "little") != image_size:
            self.core.report("image_mismatch")
            return False
        version = manifest_version(manifest)
        if compare_versions(version, self.config.version) < 0:
            self.core.report("downgrade_refused", version=version, current=self.config.version)
            return False
        return True

    def _statement_verifies(self, manifest: bytes) -> bool:
        """statementVerifies(). The key always parses: SketchConfig accepts only a P-256 public
        key."""
        area = manifest[STATEMENT_SIZE:MANIFEST_SIZE]
        length = signature_length(area)
        if not length:
            self.core.report("signature_missing")
            return False
        if not signature_valid(self.config.signing_key, manifest[:STATEMENT_SIZE], area[:length]):
            self.core.report("signature_invalid")
            return False
        return True

    def _stream_image(self, client: SecureClient, length: int, updater: Updater) -> bytes | None:
        """streamImage(): the image, chunk by chunk, into Update.write() and SHA-256; its digest,
        or None (after its line) when the first byte is not 0xE9, the body stops or Update
        fails."""
        sha, done = hashlib.sha256(), 0
        while done < length:
            chunk = self._read_fully(client, min(IMAGE_CHUNK_SIZE, length - done))
            if chunk is None:
                self._stream_error(client)
                return None
            if done == 0 and chunk[0] != APP_IMAGE_MAGIC:
                self._fail(client, BAD_HEADER)
                return None
            if updater.write(chunk) != len(chunk):
                self._update_error(client, updater)
                return None
            sha.update(chunk)
            done += len(chunk)
        return sha.digest()

    def _read_fully(self, client: SecureClient, count: int) -> bytes | None:
        """readFully(): readBytes() until `count` bytes are in, as Update.writeStream() reads: a
        read that brings nothing is retried after 100 ms, and 300 such reads in a row end it."""
        data, empty = b"", 0
        while len(data) < count:
            self.core.chip.check_reset()
            got = client.read_bytes(count - len(data))
            if got:
                data, empty = data + got, 0
                continue
            empty += 1
            if empty >= STREAM_EMPTY_READS:
                return None
            self.core.delay(STREAM_EMPTY_PAUSE)
        return data
