"""ota_rig.virtual.tls on the wire, as a server's socket received it: the device's ClientHello byte
for byte, and the one alert a refusing device sends, in a record of the negotiated version with
nothing between the ClientHello and it.

The server is Python `ssl` (OpenSSL) driven through memory BIOs, so the test keeps every byte
the client sent as it arrived on the socket, and OpenSSL still says what it made of them.
"""

from __future__ import annotations

import json
import socket
import ssl
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ota_rig.device import profiles
from ota_rig.virtual.clienthello import HELLOS
from ota_rig.virtual.tls import RigLimitation, TlsError, connect, load_ca_bundle
from tests.unit.test_tls import OneConnection, _tmp_pem, crafted_leaf, pem, serve_args

V2 = profiles.get("arduino-esp32-2.0")
V3 = profiles.get("arduino-esp32-3")
REFERENCE = Path(__file__).resolve().parents[1] / "recorded" / "clienthello"
CAPTURES = {"arduino-esp32-2.0": "arduino-esp32-2.0.json", "arduino-esp32-3": "arduino-esp32-3.3.json"}
RANDOM = slice(11, 43)  # record header 5, handshake header 4, client_version 2, then the random
# The legacy-TLS servers here are the point of the tests that make them.
pytestmark = pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")


class TapServer(OneConnection):
    """One-connection TLS server that keeps the raw bytes the client sent."""

    def __init__(self, chain: tuple[bytes, bytes], *, oldest: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2,
                 newest: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3, ciphers: str = "DEFAULT:@SECLEVEL=0") -> None:
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.minimum_version, self.ctx.maximum_version = oldest, newest
        self.ctx.set_ciphers(ciphers)
        self.ctx.load_cert_chain(_tmp_pem(chain[0]), _tmp_pem(chain[1]))
        super().__init__()
        self.raw = b""
        self.error: ssl.SSLError | None = None
        self.version: str | None = None
        self.cipher: str | None = None
        self._thread.start()

    def serve(self, conn: socket.socket) -> None:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = self.ctx.wrap_bio(incoming, outgoing, server_side=True)
        while True:
            try:
                tls.do_handshake()
                self.version, self.cipher = tls.version(), tls.cipher()[0]
                conn.sendall(outgoing.read())
                return
            except ssl.SSLWantReadError:
                conn.sendall(outgoing.read())
            except ssl.SSLError as exc:
                self.error = exc
                conn.sendall(outgoing.read())
                self._drain(conn)
                return
            data = self._recv(conn)
            if not data:
                return
            incoming.write(data)

    def _recv(self, conn: socket.socket) -> bytes:
        try:
            data = conn.recv(65536)
        except OSError:
            return b""
        self.raw += data
        return data

    def _drain(self, conn: socket.socket) -> None:
        """Whatever else the client sends after the server gave up (it should send nothing)."""
        conn.settimeout(0.3)
        while self._recv(conn):
            pass

    def records(self) -> list[tuple[int, bytes, bytes]]:
        """(content type, version, body) of each record the client sent."""
        out, i = [], 0
        while i + 5 <= len(self.raw):
            size = int.from_bytes(self.raw[i + 3:i + 5], "big")
            out.append((self.raw[i], self.raw[i + 1:i + 3], self.raw[i + 5:i + 5 + size]))
            i += 5 + size
        return out


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def attempt(server: TapServer, host: str, bundle: str, profile: profiles.Profile, **kwargs) -> TlsError | None:
    try:
        connect(host, server.port, bundle, profile, timeout=3, **kwargs).close()
    except TlsError as err:
        server.done()
        return err
    server.done()
    return None


# --- the ClientHello ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(HELLOS))
def test_the_constants_are_the_reference_captures(name):
    path = REFERENCE / CAPTURES[name]
    assert HELLOS[name].raw == bytes.fromhex(json.loads(path.read_text())["raw"])


@pytest.mark.parametrize("device", [V2, V3], ids=["2.0", "3"])
def test_the_server_receives_the_captured_client_hello_byte_for_byte(ca, device):
    """The first record on the server's socket is the capture, but for the random, whose first 4
    bytes are the device clock's time (gmt_unix_time), and the SNI (here the capture's own)."""
    server = TapServer(serve_args(ca.issue_cert("localhost")))
    clock = 1_796_290_751
    assert attempt(server, "localhost", pem(ca), device, unix_time=clock) is None
    assert server.error is None and server.version == "TLSv1.2"
    first = server.raw[:5 + int.from_bytes(server.raw[3:5], "big")]
    captured = HELLOS[device.name].raw
    assert first[:RANDOM.start] + first[RANDOM.stop:] == captured[:RANDOM.start] + captured[RANDOM.stop:]
    assert int.from_bytes(first[RANDOM][:4], "big") == clock
    assert first[RANDOM][4:] != captured[RANDOM][4:]  # fresh per connection


def test_the_sni_is_the_url_host_and_only_it_changes(ca):
    server = TapServer(serve_args(ca.issue_cert("ota.example.test")))
    assert attempt(server, "ota.example.test", pem(ca), V2, unix_time=7) is None
    first = server.raw[:5 + int.from_bytes(server.raw[3:5], "big")]
    assert first == HELLOS[V2.name].record("ota.example.test", 7, first[RANDOM][4:])
    assert b"\x00\x00\x10ota.example.test" in first


# --- the alert a refusing device sends ----------------------------------------------------------


def assert_hello_then_alert(server: TapServer, version: bytes, alert: int) -> None:
    """Exactly two records from the client: its ClientHello, then one fatal alert."""
    records = server.records()
    assert [(kind, ver) for kind, ver, _ in records][1:] == [(21, version)], records
    assert records[0][0] == 22 and records[0][2][0] == 1
    assert records[1][2] == bytes([2, alert])


@pytest.mark.parametrize("device", [V2, V3], ids=["2.0", "3"])
def test_unknown_ca_alert_on_the_wire(ca, device):
    server = TapServer(serve_args(trustme.CA().issue_cert("localhost")))
    err = attempt(server, "localhost", pem(ca), device)
    assert (err.code, err.alert) == (-9984, "unknown_ca")
    assert server.error.reason == "TLSV1_ALERT_UNKNOWN_CA"
    assert_hello_then_alert(server, b"\x03\x03", 48)


@pytest.mark.parametrize("device", [V2, V3], ids=["2.0", "3"])
def test_bad_certificate_alert_on_the_wire(ca, device):
    server = TapServer(serve_args(ca.issue_cert("update.example.org")))
    err = attempt(server, "localhost", pem(ca), device)
    assert (err.code, err.alert) == (-9984, "bad_certificate")
    assert server.error.reason == "SSLV3_ALERT_BAD_CERTIFICATE"
    assert_hello_then_alert(server, b"\x03\x03", 42)


def test_a_refusal_on_tls_1_1_goes_in_a_tls_1_1_record(ca):
    """2.0 accepts a TLS 1.1 server; its alert then travels in a 3,2 record (Mbed TLS writes the
    negotiated version), which OpenSSL reports as the alert, not as a wrong version number."""
    server = TapServer(serve_args(ca.issue_cert("update.example.org")), oldest=ssl.TLSVersion.TLSv1,
                       newest=ssl.TLSVersion.TLSv1_1)
    err = attempt(server, "localhost", pem(ca), V2)
    assert err.alert == "bad_certificate"
    assert server.error.reason == "SSLV3_ALERT_BAD_CERTIFICATE"
    assert_hello_then_alert(server, b"\x03\x02", 42)


def test_protocol_version_alert_on_the_wire(ca):
    """3.x has no TLS below 1.2: `15 03 02 00 02 02 46` and -0x6E80 (clienthello/README.md)."""
    server = TapServer(serve_args(ca.issue_cert("localhost")), oldest=ssl.TLSVersion.TLSv1,
                       newest=ssl.TLSVersion.TLSv1_1)
    err = attempt(server, "localhost", pem(ca), V3)
    assert (err.code, err.alert) == (-0x6E80, "protocol_version")
    assert err.text == "SSL - Handshake protocol not within min/max boundaries"
    assert server.error.reason == "TLSV1_ALERT_PROTOCOL_VERSION"
    assert_hello_then_alert(server, b"\x03\x02", 70)
    assert server.raw.endswith(bytes.fromhex("15030200020246"))


def test_tls_1_1_works_on_2_0(ca):
    server = TapServer(serve_args(ca.issue_cert("localhost")), oldest=ssl.TLSVersion.TLSv1,
                       newest=ssl.TLSVersion.TLSv1_1)
    assert attempt(server, "localhost", pem(ca), V2) is None
    assert server.version == "TLSv1.1" and server.error is None


# --- what the engine cannot run ------------------------------------------------------------------


def test_a_suite_the_engine_cannot_run_is_a_rig_limitation_not_a_verdict():
    """3.x offers Camellia (its libs' sdkconfig: CONFIG_MBEDTLS_CAMELLIA_C=y); tlslite has none.
    The twin says so and sends nothing more: the server sees no alert."""
    rsa_ca = trustme.CA(key_type=trustme.KeyType.RSA)
    server = TapServer(serve_args(rsa_ca.issue_cert("localhost", key_type=trustme.KeyType.RSA)),
                       newest=ssl.TLSVersion.TLSv1_2, ciphers="CAMELLIA:@SECLEVEL=0")
    with pytest.raises(RigLimitation, match="0x0084|0x00C0|0x0041|0x00BA|suite"):
        connect("localhost", server.port, pem(rsa_ca), V3, timeout=3)
    server.done()
    assert [kind for kind, _, _ in server.records()] == [22]  # the ClientHello, nothing after it
    assert server.error is None or "ALERT" not in (server.error.reason or "")


@pytest.mark.parametrize("cipher", ["ECDHE-ARIA256-GCM-SHA384", "ARIA128-GCM-SHA256"])
def test_an_aria_suite_a_server_picks_is_a_rig_limitation_on_3x(cipher):
    """3.x offers 20 ARIA suites (Mbed TLS's default config has ARIA and ESP-IDF 5.5's
    esp_config.h keeps it); tlslite has no ARIA. A server that picks one gets the twin's
    limitation, named with the suite, and no alert."""
    rsa_ca = trustme.CA(key_type=trustme.KeyType.RSA)
    server = TapServer(serve_args(rsa_ca.issue_cert("localhost", key_type=trustme.KeyType.RSA)),
                       newest=ssl.TLSVersion.TLSv1_2, ciphers=f"{cipher}:@SECLEVEL=0")
    with pytest.raises(RigLimitation, match="ARIA"):
        connect("localhost", server.port, pem(rsa_ca), V3, timeout=3)
    server.done()
    assert [kind for kind, _, _ in server.records()] == [22]
    assert server.error is None or "ALERT" not in (server.error.reason or "")


def test_a_p384_leaf_is_accepted(ca):
    chain = crafted_leaf(ca, cn="x", san=[x509.DNSName("localhost")], key=ec.generate_private_key(ec.SECP384R1()))
    server = TapServer(chain)
    assert attempt(server, "localhost", pem(ca), V3) is None
    assert server.cipher.startswith("ECDHE-ECDSA-")


# --- the CA bundle as Mbed TLS parses it ----------------------------------------------------------


def test_a_bundle_whose_only_block_is_bad_base64_fails_with_the_pem_code(ca):
    with pytest.raises(TlsError) as info:
        load_ca_bundle("-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n")
    assert (info.value.code, info.value.stage) == (-0x112C, "setup")
    assert info.value.text == "PEM - PEM string is not as expected : BASE64 - Invalid character in input"


def test_a_bad_block_next_to_a_good_one_is_skipped(ca):
    bad = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    der = x509.load_pem_x509_certificate(ca.cert_pem.bytes()).public_bytes(serialization.Encoding.DER)
    assert [c.der for c in load_ca_bundle(bad + pem(ca))] == [der]


def test_rig_limitations_come_from_the_twins_log(tmp_path):
    from ota_rig.scenario.record import rig_limitations

    log = tmp_path / "twin.log"
    log.write_text("twin ota_rig.virtual.boot: bootloader: starting app0\n"
                   "twin ota_rig.virtual.secure_client: rig limitation: the server chose suite 0x0084; "
                   "the app stops here\n")
    assert rig_limitations(log) == ["the server chose suite 0x0084; the app stops here"]
    assert rig_limitations(tmp_path / "none.log") == []
