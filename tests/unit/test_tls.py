"""ota_rig.virtual.tls: the twin's TLS client, judged from the other end of the wire.

Every verdict comes from a real Python `ssl` server (OpenSSL, TLS 1.2 and 1.3 allowed) in a
thread: the alert it reports in its handshake exception, the SNI its sni_callback saw, the
version it negotiated, the bytes it received, and whether it accepted a connection at all.
Certificates come from trustme (and `cryptography` where trustme cannot make them: a CN-only
certificate, a dNSName that is an IP string, a self-signed leaf).

Expected outcomes are the device facts of shared/reference/esp32-ota-device.md 8 and 9:
arduino-esp32 2.0.x (Mbed TLS 2.28) never matches IP SANs, 3.x (Mbed TLS 3.6) does; both
ignore certificate dates; a wrong name wins over a wrong CA in the alert; code -9984.

Where dates are valid, the 2.0 profile must also agree with a second, independent judge: Mbed
TLS 2.28 verifying by itself (MBEDTLS_SSL_VERIFY_REQUIRED), whose verdicts per case were recorded
when the twin still ran on python-mbedtls (tests/recorded/mbedtls_verdicts.json) - same
acceptance, same alert at the server, same error code and text.
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import socket
import ssl
import tempfile
import threading
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from ota_rig.device import profiles
from ota_rig.virtual.mbedtls_errors import BADCERT, verify_info
from ota_rig.virtual.tls import TlsError, TlsTimeout, alert_for_flags, connect

V2 = profiles.get("arduino-esp32-2.0")
V3 = profiles.get("arduino-esp32-3")
BOTH = pytest.mark.parametrize("device", [V2, V3], ids=["2.0", "3"])  # not the plugin's `profile`
UTC = dt.timezone.utc


class OneConnection:
    """A listener on 127.0.0.1 whose first connection `serve()` handles in a thread."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(3)
        self.port = self.listener.getsockname()[1]
        self.accepted = False
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        self.accepted = True
        conn.settimeout(3)
        with conn:
            self.serve(conn)

    def serve(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def done(self):
        self._thread.join(3)
        self.listener.close()
        return self


class Server(OneConnection):
    """One-connection TLS server in a thread; records what it saw."""

    def __init__(self, cert_chain: tuple[bytes, bytes] | None = None, *, garbage: bytes | None = None,
                 hang_up: bool = False, close_notify: bool = True) -> None:
        super().__init__()
        self.sni: list[str | None] = []
        self.error: ssl.SSLError | OSError | None = None
        self.version: str | None = None
        self.received = b""
        self.raw_received = b""
        self.close_error: ssl.SSLError | OSError | None = None
        self._garbage, self._hang_up, self._close_notify = garbage, hang_up, close_notify
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        self.ctx.maximum_version = ssl.TLSVersion.TLSv1_3
        self.ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let it serve weak test certificates
        self.ctx.sni_callback = lambda _sock, name, _ctx: self.sni.append(name)
        if cert_chain:
            chain_pem, key_pem = cert_chain
            cert_file = _tmp_pem(chain_pem)
            key_file = _tmp_pem(key_pem)
            self.ctx.load_cert_chain(cert_file, key_file)
        self._thread.start()

    def serve(self, conn: socket.socket) -> None:
        if self._garbage is not None or self._hang_up:
            self._raw(conn)
            return
        try:
            tls = self.ctx.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            self.error = exc
            return
        self.version = tls.version()
        try:
            self.received = tls.recv(1024)
            tls.sendall(b"echo:" + self.received)
        except (ssl.SSLError, OSError) as exc:
            self.error = exc
            return
        if not self._close_notify:
            return  # TCP FIN without a close_notify
        try:
            tls.unwrap()  # sends close_notify; the device closes TCP without answering one
        except (ssl.SSLError, OSError) as exc:
            self.close_error = exc

    def _raw(self, conn: socket.socket) -> None:
        try:
            self.raw_received = conn.recv(4096)
            if self._garbage:
                conn.sendall(self._garbage)
                while chunk := conn.recv(4096):  # until the client gives up
                    self.raw_received += chunk
        except OSError as exc:
            self.error = exc

    @property
    def alert_seen(self) -> str | None:
        return getattr(self.error, "reason", None)


_TMP: list[object] = []


def _tmp_pem(data: bytes) -> str:
    f = tempfile.NamedTemporaryFile(suffix=".pem")  # noqa: SIM115 - open (alive) for the run
    f.write(data)
    f.flush()
    _TMP.append(f)
    return f.name


def serve_args(leaf: trustme.LeafCert, *, leaf_only: bool = False) -> tuple[bytes, bytes]:
    blobs = leaf.cert_chain_pems[:1] if leaf_only else leaf.cert_chain_pems
    return b"".join(blob.bytes() for blob in blobs), leaf.private_key_pem.bytes()


def serve(leaf: trustme.LeafCert, *, leaf_only: bool = False) -> Server:
    return Server(serve_args(leaf, leaf_only=leaf_only))


def handshake_fails(server: Server, host: str, bundle: str, profile: profiles.Profile) -> TlsError:
    with pytest.raises(TlsError) as info:
        connect(host, server.port, bundle, profile, timeout=2)
    server.done()
    return info.value


def round_trip(server: Server, host: str, bundle: str, profile: profiles.Profile) -> bytes:
    with connect(host, server.port, bundle, profile, timeout=2) as session:
        assert session.version == "TLSv1.2"
        session.send(b"GET /firmware.bin")
        reply = b""
        while chunk := session.recv(1024, timeout=2):
            reply += chunk
    server.done()
    assert server.error is None
    assert server.version == "TLSv1.2"  # the server allowed 1.3; the device client ends at 1.2
    assert server.received == b"GET /firmware.bin"
    return reply


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def other_ca() -> trustme.CA:
    return trustme.CA()


def pem(ca: trustme.CA) -> str:
    return ca.cert_pem.bytes().decode()


def crafted_leaf(ca: trustme.CA | tuple[bytes, bytes] | None, *, cn: str,
                 san: list[x509.GeneralName] | None, extensions: tuple[x509.ExtensionType, ...] = (),
                 key=None, is_ca: bool = False) -> tuple[bytes, bytes]:
    """A certificate made with `cryptography`: signed by a trustme CA, by a (cert PEM, key PEM)
    pair, or self-signed when ca is None. Returns (cert PEM, key PEM)."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    if ca is None:
        issuer_name, issuer_key = subject, key
    else:
        cert_pem, key_pem = (ca.cert_pem.bytes(), ca.private_key_pem.bytes()) if isinstance(
            ca, trustme.CA) else ca
        issuer_name = x509.load_pem_x509_certificate(cert_pem).subject
        issuer_key = serialization.load_pem_private_key(key_pem, None)
    now = dt.datetime.now(UTC)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
               .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True))
    if san is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    for extension in extensions:
        builder = builder.add_extension(extension, critical=False)
    cert = builder.sign(issuer_key, hashes.SHA256())
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


# --- accepted ----------------------------------------------------------------------------------


@BOTH
def test_good_dns_certificate_round_trip(ca, device):
    server = serve(ca.issue_cert("localhost"))
    assert round_trip(server, "localhost", pem(ca), device) == b"echo:GET /firmware.bin"
    assert server.sni == ["localhost"]


def test_session_reports_cipher_and_peer_certificate_dates(ca):
    not_after = dt.datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
    server = serve(ca.issue_cert("localhost", not_after=not_after))
    with connect("localhost", server.port, pem(ca), V2, timeout=2) as session:
        cert = session.peer_certificate
        assert cert is not None and cert.not_after == not_after
        assert cert.not_before.tzinfo is UTC
        assert cert.dns_names == ["localhost"]
        assert session.cipher and session.cipher.startswith("TLS-ECDHE-ECDSA-WITH-")
        session.send(b"x")
        assert session.recv(64, timeout=2) == b"echo:x"
    server.done()


@BOTH
@pytest.mark.parametrize("when", ["expired", "not-yet-valid"])
def test_certificate_dates_are_ignored(ca, device, when):
    now = dt.datetime.now(UTC)
    window = ((now - dt.timedelta(days=30), now - dt.timedelta(days=1)) if when == "expired"
              else (now + dt.timedelta(days=1), now + dt.timedelta(days=30)))
    server = serve(ca.issue_cert("localhost", not_before=window[0], not_after=window[1]))
    assert round_trip(server, "localhost", pem(ca), device) == b"echo:GET /firmware.bin"


@BOTH
def test_second_ca_of_the_bundle_is_used(ca, other_ca, device):
    server = serve(other_ca.issue_cert("localhost"))
    assert round_trip(server, "localhost", pem(ca) + pem(other_ca), device) == b"echo:GET /firmware.bin"


@BOTH
def test_intermediate_sent_by_the_server_is_used(ca, device):
    server = serve(ca.create_child_ca().issue_cert("localhost"))
    assert round_trip(server, "localhost", pem(ca), device) == b"echo:GET /firmware.bin"


@BOTH
def test_self_signed_leaf_pinned_in_the_bundle(device):
    cert_pem, key_pem = crafted_leaf(None, cn="localhost", san=[x509.DNSName("localhost")])
    server = Server((cert_pem, key_pem))
    assert round_trip(server, "localhost", cert_pem.decode(), device) == b"echo:GET /firmware.bin"


@BOTH
def test_cn_ip_without_san_is_accepted(ca, device):
    server = Server(crafted_leaf(ca, cn="127.0.0.1", san=None))
    assert round_trip(server, "127.0.0.1", pem(ca), device) == b"echo:GET /firmware.bin"


@BOTH
def test_dns_san_holding_an_ip_string_is_accepted(ca, device):
    server = Server(crafted_leaf(ca, cn="whatever", san=[x509.DNSName("127.0.0.1")]))
    assert round_trip(server, "127.0.0.1", pem(ca), device) == b"echo:GET /firmware.bin"


def test_ip_san_only_accepted_on_3x(ca):
    server = serve(ca.issue_cert("127.0.0.1"))  # trustme: an IP SAN only
    assert round_trip(server, "127.0.0.1", pem(ca), V3) == b"echo:GET /firmware.bin"
    assert server.sni == ["127.0.0.1"]  # SNI is sent for an IP literal too


def test_wildcard_matches_one_label(ca):
    server = serve(ca.issue_cert("*.ota.test"))
    assert round_trip(server, "Fw.OTA.test", pem(ca), V2) == b"echo:GET /firmware.bin"
    server = serve(ca.issue_cert("*.ota.test"))
    assert handshake_fails(server, "a.fw.ota.test", pem(ca), V2).alert == "bad_certificate"


# --- refused -----------------------------------------------------------------------------------


@BOTH
def test_wrong_ca_is_unknown_ca(ca, other_ca, device):
    server = serve(other_ca.issue_cert("localhost"))
    err = handshake_fails(server, "localhost", pem(ca), device)
    assert server.alert_seen == "TLSV1_ALERT_UNKNOWN_CA"
    assert (err.code, err.stage, err.alert) == (-9984, "verify", "unknown_ca")
    assert err.text == "X509 - Certificate verification failed, e.g. CRL, CA or signature check failed"
    assert err.flags == BADCERT["NOT_TRUSTED"]
    assert server.received == b""


@BOTH
def test_wrong_name_is_bad_certificate(ca, device):
    server = serve(ca.issue_cert("update.example.org"))
    err = handshake_fails(server, "localhost", pem(ca), device)
    assert server.alert_seen == "SSLV3_ALERT_BAD_CERTIFICATE"
    assert (err.code, err.alert, err.flags) == (-9984, "bad_certificate", BADCERT["CN_MISMATCH"])


def test_wrong_name_and_wrong_ca_is_bad_certificate(ca, other_ca):
    server = serve(other_ca.issue_cert("update.example.org"))
    err = handshake_fails(server, "localhost", pem(ca), V2)
    assert server.alert_seen == "SSLV3_ALERT_BAD_CERTIFICATE"
    assert err.flags == BADCERT["CN_MISMATCH"] | BADCERT["NOT_TRUSTED"]
    assert err.code == -9984


def test_ip_san_only_refused_on_2x(ca):
    server = serve(ca.issue_cert("127.0.0.1"))
    err = handshake_fails(server, "127.0.0.1", pem(ca), V2)
    assert server.alert_seen == "SSLV3_ALERT_BAD_CERTIFICATE"
    assert (err.code, err.flags, err.alert) == (-9984, BADCERT["CN_MISMATCH"], "bad_certificate")
    assert server.sni == ["127.0.0.1"]


@BOTH
def test_other_ip_in_san_refused(ca, device):
    server = serve(ca.issue_cert("127.0.0.2"))
    assert handshake_fails(server, "127.0.0.1", pem(ca), device).alert == "bad_certificate"


@BOTH
def test_intermediate_not_sent_is_unknown_ca(ca, device):
    server = serve(ca.create_child_ca().issue_cert("localhost"), leaf_only=True)
    err = handshake_fails(server, "localhost", pem(ca), device)
    assert server.alert_seen == "TLSV1_ALERT_UNKNOWN_CA"
    assert err.flags == BADCERT["NOT_TRUSTED"]


def test_self_signed_leaf_not_in_bundle_is_unknown_ca(ca):
    server = Server(crafted_leaf(None, cn="localhost", san=[x509.DNSName("localhost")]))
    assert handshake_fails(server, "localhost", pem(ca), V2).alert == "unknown_ca"
    assert server.alert_seen == "TLSV1_ALERT_UNKNOWN_CA"


# --- the same verdicts as Mbed TLS's own verification (where 2.28 and the device agree) --------

MBEDTLS_VERDICTS = json.loads((Path(__file__).parents[1] / "recorded" / "mbedtls_verdicts.json").read_text())["cases"]


def _ip_san_only(ca, other_ca):
    return serve_args(ca.issue_cert("127.0.0.1")), "127.0.0.1", pem(ca)


CASES = {
    "good": lambda ca, o: (serve_args(ca.issue_cert("localhost")), "localhost", pem(ca)),
    "wrong-ca": lambda ca, o: (serve_args(o.issue_cert("localhost")), "localhost", pem(ca)),
    "wrong-name": lambda ca, o: (serve_args(ca.issue_cert("update.example.org")), "localhost", pem(ca)),
    "wrong-both": lambda ca, o: (serve_args(o.issue_cert("update.example.org")), "localhost", pem(ca)),
    "ip-san-only": _ip_san_only,
    "wildcard-too-deep": lambda ca, o: (serve_args(ca.issue_cert("*.ota.test")), "a.b.ota.test", pem(ca)),
    "second-ca": lambda ca, o: (serve_args(o.issue_cert("localhost")), "localhost", pem(ca) + pem(o)),
    "intermediate-sent": lambda ca, o: (serve_args(ca.create_child_ca().issue_cert("localhost")),
                                        "localhost", pem(ca)),
    "intermediate-missing": lambda ca, o: (
        serve_args(ca.create_child_ca().issue_cert("localhost"), leaf_only=True), "localhost", pem(ca)),
    "cn-ip-no-san": lambda ca, o: (crafted_leaf(ca, cn="127.0.0.1", san=None), "127.0.0.1", pem(ca)),
    "self-signed-pinned": lambda ca, o: _pinned(),
    # two trusted roots with one name: Mbed TLS takes the one whose signature checks out
    "same-name-roots": lambda ca, o: _same_name_roots(),
    # usage extensions that do not fit a TLS server with an ECDHE-ECDSA suite
    "eku-client-auth-only": lambda ca, o: (_dns_leaf(ca, x509.ExtendedKeyUsage(
        [x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH])), "localhost", pem(ca)),
    "intermediate-without-keyCertSign": lambda ca, o: _weak_intermediate(ca),
    # the X.509 profile: SHA-1 signature (even on a pinned certificate), RSA key below 2048 bits
    "sha1-pinned": lambda ca, o: _sha1_pinned(),
    "rsa-1024-leaf": lambda ca, o: (crafted_leaf(ca, cn="x", san=[x509.DNSName("localhost")],
                                                 key=rsa.generate_private_key(65537, 1024)),
                                    "localhost", pem(ca)),
}


def _der(tag: int, content: bytes) -> bytes:
    size = len(content)
    length = bytes([size]) if size < 0x80 else bytes([0x80 | ((size.bit_length() + 7) // 8)]) + size.to_bytes(
        (size.bit_length() + 7) // 8, "big")
    return bytes([tag]) + length + content


def _sha1_pinned():
    """A self-signed ECDSA-with-SHA1 certificate: cryptography no longer signs certificates with
    SHA-1, so the TBS it made is re-labelled and signed here, and the DER put together."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(7).not_valid_before(dt.datetime(2020, 1, 1)).not_valid_after(dt.datetime(2040, 1, 1))
            .sign(key, hashes.SHA256()))
    sha1 = _der(0x30, _der(0x06, bytes.fromhex("2a8648ce3d0401")))  # ecdsa-with-SHA1
    sha256 = _der(0x30, _der(0x06, bytes.fromhex("2a8648ce3d040302")))
    tbs = cert.tbs_certificate_bytes
    tbs = _der(0x30, _tbs_with(tbs, sha256, sha1))
    der = _der(0x30, tbs + sha1 + _der(0x03, b"\0" + key.sign(tbs, ec.ECDSA(hashes.SHA1()))))
    cert_pem = x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return (cert_pem, key_pem), "localhost", cert_pem.decode()


def _tbs_with(tbs: bytes, old: bytes, new: bytes) -> bytes:
    """The TBS's content with its signature algorithm `old` replaced by `new`."""
    header = 2 if tbs[1] < 0x80 else 2 + (tbs[1] & 0x7F)
    content = tbs[header:]
    return content.replace(old, new, 1)


def _same_name_roots():
    first, second = (crafted_leaf(None, cn="Rig CA", san=None, is_ca=True) for _ in range(2))
    leaf = crafted_leaf(second, cn="x", san=[x509.DNSName("localhost")])
    return leaf, "localhost", (first[0] + second[0]).decode()


def _weak_intermediate(ca):
    """An intermediate CA whose keyUsage lacks keyCertSign: not a parent for Mbed TLS."""
    usage = x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=False,
                          crl_sign=False, encipher_only=False, decipher_only=False)
    inter = crafted_leaf(ca, cn="Intermediate", san=None, extensions=(usage,), is_ca=True)
    leaf_pem, key_pem = crafted_leaf(inter, cn="x", san=[x509.DNSName("localhost")])
    return (leaf_pem + inter[0], key_pem), "localhost", pem(ca)


def _dns_leaf(ca, extension):
    return crafted_leaf(ca, cn="x", san=[x509.DNSName("localhost")], extensions=(extension,))


def _pinned():
    leaf = crafted_leaf(None, cn="localhost", san=[x509.DNSName("localhost")])
    return leaf, "localhost", leaf[0].decode()


@pytest.mark.parametrize("case", list(CASES))
def test_verdict_equals_mbedtls_own_verification(ca, other_ca, case):
    """With valid dates, arduino-esp32 2.0 (Mbed TLS 2.28) and Mbed TLS 2.28 in required mode
    agree: same acceptance, same alert at the server, same error code and text."""
    chain, host, bundle = CASES[case](ca, other_ca)
    expected = MBEDTLS_VERDICTS[case]
    ours = Server(chain)
    try:
        connect(host, ours.port, bundle, V2, timeout=2).close()
        got = None
    except TlsError as exc:
        got = exc
    ours.done()
    assert (got is None) == expected["accepted"], (got, expected)
    assert ours.alert_seen == expected["server_saw"]
    if got is not None:
        assert (got.code, got.text) == (expected["code"], expected["text"])


def test_every_recorded_verdict_has_its_case():
    assert sorted(MBEDTLS_VERDICTS) == sorted(CASES)


# --- before TLS --------------------------------------------------------------------------------


@pytest.mark.parametrize("bundle", ["", "  \n"])
def test_an_empty_bundle_is_a_bundle_refused_after_tcp(bundle):
    """setCACert("") passes a real (empty) string, not NULL: start_ssl_client() connects TCP,
    then mbedtls_x509_crt_parse(ca, "", 1) finds no PEM header and refuses the one-byte DER
    with MBEDTLS_ERR_X509_INVALID_FORMAT, -0x2180 (Mbed TLS 2.28.4 and 3.6.x x509_crt.c): the
    server sees a connection closed without a byte."""
    server = Server(None, hang_up=True)
    with pytest.raises(TlsError) as info:
        connect("localhost", server.port, bundle, V2, timeout=2)
    server.done()
    assert (info.value.code, info.value.stage) == (-0x2180, "setup")
    assert info.value.text == "X509 - The CRT/CRL/CSR format is invalid, e.g. different type expected"
    assert server.accepted and server.raw_received == b""


def test_unparsable_bundle_fails_after_tcp_with_mbedtls_code(ca):
    server = Server(None, hang_up=True)
    with pytest.raises(TlsError) as info:
        connect("localhost", server.port, "not a certificate", V2, timeout=2)
    server.done()
    assert info.value.stage == "setup"
    assert info.value.code < -0x2000 and info.value.text.startswith("X509 - ")
    assert server.accepted and server.raw_received == b""  # TCP came, no ClientHello


def test_closed_port_is_minus_one_with_econnrefused(ca):
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    with pytest.raises(TlsError) as info:
        connect("localhost", port, pem(ca), V2)
    err = info.value
    assert (err.code, err.stage, err.errno) == (-1, "tcp", errno.ECONNREFUSED)
    assert err.text == "Connection refused"
    assert err.device_errno == errno.ECONNRESET  # what lwIP reports for a refused port


def test_garbage_instead_of_tls_is_an_error_not_a_hang(ca):
    server = Server(None, garbage=b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
    err = handshake_fails(server, "localhost", pem(ca), V2)
    assert (err.code, err.stage) == (-0x7200, "handshake")  # SSL - An invalid SSL record was received
    assert server.raw_received[:1] == b"\x16"  # it did get a ClientHello


def test_server_hanging_up_is_conn_eof(ca):
    server = Server(None, hang_up=True)
    err = handshake_fails(server, "localhost", pem(ca), V2)
    assert (err.code, err.text) == (-0x7280, "SSL - The connection indicated an EOF")


def test_silent_server_times_out(ca):
    listener = socket.create_server(("127.0.0.1", 0))
    with pytest.raises(TlsTimeout) as info:
        connect("localhost", listener.getsockname()[1], pem(ca), V2, timeout=0.3)
    listener.close()
    assert (info.value.code, info.value.stage) == (-1, "handshake")


def test_recv_timeout_is_tls_timeout_and_the_session_survives(ca):
    server = serve(ca.issue_cert("localhost"))
    with connect("localhost", server.port, pem(ca), V2, timeout=2) as session:
        with pytest.raises(TlsTimeout) as info:
            session.recv(64, timeout=0.1)  # the server waits for the request first
        assert (info.value.code, info.value.stage) == (-0x6800, "io")
        session.send(b"late")
        assert session.recv(64, timeout=2) == b"echo:late"
    server.done()
    assert server.received == b"late"


def test_tcp_close_without_close_notify_is_conn_eof(ca):
    leaf = ca.issue_cert("localhost")
    server = Server(serve_args(leaf), close_notify=False)
    with connect("localhost", server.port, pem(ca), V2, timeout=2) as session:
        session.send(b"hi")
        assert session.recv(64, timeout=2) == b"echo:hi"
        with pytest.raises(TlsError) as info:
            session.recv(64, timeout=2)
    server.done()
    assert (info.value.code, info.value.stage) == (-0x7280, "io")


def test_address_is_dialled_and_host_is_the_tls_name(ca):
    server = serve(ca.issue_cert("ota.example.test"))
    with connect("ota.example.test", server.port, pem(ca), V2, address="127.0.0.1", timeout=2) as session:
        session.send(b"ping")
        assert session.recv(64, timeout=2) == b"echo:ping"
    server.done()
    assert server.sni == ["ota.example.test"] and server.received == b"ping"


# --- pure helpers ------------------------------------------------------------------------------


def test_verify_info_lines_follow_mbedtls():
    assert verify_info(BADCERT["NOT_TRUSTED"] | BADCERT["CN_MISMATCH"], "  ! ") == [
        "  ! The certificate Common Name (CN) does not match with the expected CN",
        "  ! The certificate is not correctly signed by the trusted CA",
    ]
    assert verify_info(0x40000000) == ["Unknown reason (this should not happen)"]


def test_alert_order():
    assert alert_for_flags(BADCERT["NOT_TRUSTED"] | BADCERT["CN_MISMATCH"]) == 42
    assert alert_for_flags(BADCERT["NOT_TRUSTED"] | BADCERT["EXPIRED"]) == 45
    assert alert_for_flags(BADCERT["KEY_USAGE"] | BADCERT["NOT_TRUSTED"]) == 43
    assert alert_for_flags(BADCERT["OTHER"] | BADCERT["CN_MISMATCH"]) == 49
    assert alert_for_flags(BADCERT["NOT_TRUSTED"]) == 48
    assert alert_for_flags(BADCERT["BAD_MD"]) == 46
