"""The ClientHello each device profile sends: the reference captures, per connection.

The bytes are shared/reference/clienthello/*.json's `raw`, ClientHellos that real Mbed TLS builds
configured like the cores sent to a server (tests/unit/test_tls.py holds these constants to
those files). A connection sends them byte for byte except two fields: the 32-byte random, whose
first 4 bytes are the device clock's Unix time (Mbed TLS's gmt_unix_time: MBEDTLS_HAVE_TIME is
set in both cores' sdkconfig) and the other 28 random, and the server_name extension, which
carries the URL host (an IP literal too: Mbed TLS has no IP exclusion, reference section 8.2).

arduino-esp32-2.0: Mbed TLS 2.28.4 with 2.0.14's sdkconfig (TLS 1.0-1.2, record version 0x0301,
48 suites and the renegotiation SCSV).

arduino-esp32-3: APPROXIMATE. Mbed TLS 3.6.4 with an ESP-IDF 5.x-like configuration (TLS 1.2
only, record version 0x0303); no file of a 3.3.x release (ESP-IDF 5.5) was readable. Checked
against the nearest readable 3.x libraries, esp32-arduino-libs idf-release/v5.1 (the 3.0.x
libs, `esp32/sdkconfig`): TLS 1.3 off, Camellia on, ChaCha20 and ARIA off, GCM and CCM on,
static ECDH key exchanges on, the same curves (x25519, the NIST and brainpool ones; the others
are not in Mbed TLS 3.x's default group list) agree with this hello; but those libs build
without CONFIG_MBEDTLS_DHM_C, so they offer none of the 16 DHE-RSA suites this capture has
(`DHE_SUITES`). Whether 3.3.10's libs enable DHM is UNVERIFIED, so the capture is sent as it
is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["HELLOS", "ClientHelloTemplate", "DHE_SUITES"]

_SNI = 0
_GROUPS = 10


@dataclass(frozen=True)
class ClientHelloTemplate:
    """One captured ClientHello record, split into the parts a connection keeps or replaces."""

    raw: bytes

    @property
    def record_version(self) -> tuple[int, int]:
        return self.raw[1], self.raw[2]

    @property
    def client_version(self) -> tuple[int, int]:
        return self.raw[9], self.raw[10]

    def _body(self) -> tuple[bytes, bytes, list[tuple[int, bytes]]]:
        """(version + random, session id .. compression methods, extensions) of the capture."""
        body = self.raw[9:]
        at = 2 + 32
        at += 1 + body[at]
        at += 2 + int.from_bytes(body[at:at + 2], "big")
        at += 1 + body[at]
        extensions, end = [], len(body)
        i = at + 2
        while i < end:
            kind, size = int.from_bytes(body[i:i + 2], "big"), int.from_bytes(body[i + 2:i + 4], "big")
            extensions.append((kind, body[i + 4:i + 4 + size]))
            i += 4 + size
        return body[:34], body[34:at], extensions

    @property
    def suites(self) -> list[int]:
        middle = self._body()[1]
        at = 1 + middle[0]
        count = int.from_bytes(middle[at:at + 2], "big") // 2
        return [int.from_bytes(middle[at + 2 + 2 * i:at + 4 + 2 * i], "big") for i in range(count)]

    @property
    def groups(self) -> list[int]:
        data = dict(self._body()[2])[_GROUPS]
        return [int.from_bytes(data[i:i + 2], "big") for i in range(2, len(data), 2)]

    def handshake_message(self, host: str, unix_time: int, random: bytes | None = None) -> bytes:
        """The ClientHello handshake message (type, length, body) for one connection."""
        head, middle, extensions = self._body()
        random = random if random is not None else os.urandom(28)
        name = host.encode("ascii")
        sni = (len(name) + 3).to_bytes(2, "big") + b"\x00" + len(name).to_bytes(2, "big") + name
        ext = b"".join(kind.to_bytes(2, "big") + len(data).to_bytes(2, "big") + data
                       for kind, data in ((k, sni if k == _SNI else d) for k, d in extensions))
        body = (head[:2] + (unix_time & 0xFFFFFFFF).to_bytes(4, "big") + random + middle
                + len(ext).to_bytes(2, "big") + ext)
        return b"\x01" + len(body).to_bytes(3, "big") + body

    def record(self, host: str, unix_time: int, random: bytes | None = None) -> bytes:
        """The whole record as the server receives it."""
        message = self.handshake_message(host, unix_time, random)
        return bytes([0x16, *self.record_version]) + len(message).to_bytes(2, "big") + message


HELLOS: dict[str, ClientHelloTemplate] = {
    # shared/reference/clienthello/arduino-esp32-2.0.json
    "arduino-esp32-2.0": ClientHelloTemplate(bytes.fromhex(
        "16030100e7010000e303036b1138bfe8c416db7e5a148406feb7909e92585b2cab3ba83114fac127c676fb000062c02c"
        "c030009fc0adc09fc024c028006bc00ac0140039c0afc0a3c02bc02f009ec0acc09ec023c0270067c009c0130033c0ae"
        "c0a2009dc09d003d0035c032c02ac00fc02ec026c005c0a1009cc09c003c002fc031c029c00ec02dc025c004c0a000ff"
        "010000580000000e000c0000096c6f63616c686f7374000d0012001006030601050305010403040103030301000a001a"
        "00180019001c0018001b00170016001a0015001400130012001d000b00020100001600000017000000230000")),
    # shared/reference/clienthello/arduino-esp32-3-approx.json (approximate: see above)
    "arduino-esp32-3": ClientHelloTemplate(bytes.fromhex(
        "16030301110100010d03036b1139470da70947ebe6835c8d1c70427f2a2814a12d84d15f61940d7f03077d00009ac02c"
        "c030009fc0adc09fc024c028006bc00ac0140039c0afc0a3c087c08bc07dc073c07700c40088c02bc02f009ec0acc09e"
        "c023c0270067c009c0130033c0aec0a2c086c08ac07cc072c07600be0045009dc09d003d0035c032c02ac00fc02ec026"
        "c005c0a1c07b00c00084c08dc079c089c075009cc09c003c002fc031c029c00ec02dc025c004c0a0c07a00ba0041c08c"
        "c078c088c07400ff0100004a0000000e000c0000096c6f63616c686f7374000a0010000e001d001700180019001a001b"
        "001c000d000e000c060306010503050104030401000b00020100001600000017000000230000")),
}

# The DHE-RSA suites of the 3.x capture, which the 3.0.x libs (no CONFIG_MBEDTLS_DHM_C) lack.
DHE_SUITES = frozenset({0x009F, 0xC09F, 0x006B, 0x0039, 0xC0A3, 0x00C4, 0x0088, 0xC07D,
                        0x009E, 0xC09E, 0x0067, 0x0033, 0xC0A2, 0xC07C, 0x00BE, 0x0045})
