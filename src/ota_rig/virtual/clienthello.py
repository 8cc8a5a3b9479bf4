"""The ClientHello each device profile sends: real Mbed TLS builds configured like the cores, per connection.

The bytes are tests/recorded/clienthello/*.json's `raw` (tests/unit/test_tls_wire.py holds these
constants to those files): ClientHellos that real Mbed TLS builds, configured as each core's
precompiled libraries are, sent to a server. A connection sends them byte for byte except two
fields: the 32-byte random, whose first 4 bytes are the device clock's Unix time (Mbed TLS's
gmt_unix_time: MBEDTLS_HAVE_TIME is set in both cores' sdkconfig) and the other 28 random, and
the server_name extension, which carries the URL host (an IP literal too: Mbed TLS has no IP
exclusion, reference section 8.2).

arduino-esp32-2.0: Mbed TLS 2.28.4 with 2.0.14's sdkconfig and ESP-IDF 4.4's esp_config.h (TLS
1.0-1.2, record version 0x0301, 48 suites and the renegotiation SCSV).

arduino-esp32-3: Mbed TLS 3.6.4 (3.6.3, 3.6.5 and 3.6.6 send the same bytes: ESP-IDF v5.5 to
v5.5.5 pin these) with ESP-IDF v5.5.1's esp_config.h, which starts from Mbed TLS's default
mbedtls_config.h and overrides it from Kconfig, evaluated with ESP-IDF's Kconfig defaults and the
MBEDTLS lines of esp32-arduino-lib-builder's configs/defconfig.common at ee57070 (its master
branch builds the 3.3.x libraries from ESP-IDF release/v5.5). TLS 1.2 only (record version
0x0303), 80 suites and the SCSV: no DHE-RSA (CONFIG_MBEDTLS_DHM_C defaults to n and the
lib-builder does not set it; the 3.0.x libs' sdkconfig.h has no DHM either), and 20 ARIA suites
(MBEDTLS_ARIA_C is on in Mbed TLS's default config and esp_config.h never turns it off; the 3.0.x
libs' libmbedtls_2.a holds ARIA suite names too). How it was made, and how to make it again:
tests/recorded/clienthello/mbedtls-3.6/REPORT.md. UNVERIFIED: Espressif's Mbed TLS fork at
those ESP-IDF commits was not built (upstream tags were), so a fork change to the suite list
would not show here; no real 3.3.x device was captured.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["HELLOS", "ClientHelloTemplate"]

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
    # tests/recorded/clienthello/arduino-esp32-2.0.json
    "arduino-esp32-2.0": ClientHelloTemplate(bytes.fromhex(
        "16030100e7010000e303036b1138bfe8c416db7e5a148406feb7909e92585b2cab3ba83114fac127c676fb000062c02c"
        "c030009fc0adc09fc024c028006bc00ac0140039c0afc0a3c02bc02f009ec0acc09ec023c0270067c009c0130033c0ae"
        "c0a2009dc09d003d0035c032c02ac00fc02ec026c005c0a1009cc09c003c002fc031c029c00ec02dc025c004c0a000ff"
        "010000580000000e000c0000096c6f63616c686f7374000d0012001006030601050305010403040103030301000a001a"
        "00180019001c0018001b00170016001a0015001400130012001d000b00020100001600000017000000230000")),
    # tests/recorded/clienthello/arduino-esp32-3.3.json
    "arduino-esp32-3": ClientHelloTemplate(bytes.fromhex(
        "16030301190100011503036b11685dc5fe2840633cd3d659cf246315ac8fb1517861e8c92395c405be81e10000a2c02c"
        "c030c0adc024c028c00ac014c0afc087c08bc073c077c05dc061c049c04dc02bc02fc0acc023c027c009c013c0aec086"
        "c08ac072c076c05cc060c048c04c009dc09d003d0035c032c02ac00fc02ec026c005c0a1c07b00c00084c08dc079c089"
        "c075c05fc063c051c04bc04fc03d009cc09c003c002fc031c029c00ec02dc025c004c0a0c07a00ba0041c08cc078c088"
        "c074c05ec062c050c04ac04ec03c00ff0100004a0000000e000c0000096c6f63616c686f7374000a0010000e001d0017"
        "00180019001a001b001c000d000e000c060306010503050104030401000b00020100001600000017000000230000")),
}
