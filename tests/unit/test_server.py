"""ota_rig.server over real HTTPS on 127.0.0.1, with clients built on Python's ssl and http.client.

The client sends what arduino-esp32's HTTPUpdate sends (reference section 2): HTTP/1.0, the
x-ESP32-* headers, the path exactly as given. Assertions use what the client received and
what the server wrote to its record file, read back with ServerLog.
"""

import hashlib
import http.client
import logging
import os
import socket
import ssl
import time
import tracemalloc

import pytest

from ota_rig.server import app
from ota_rig.server.app import UpdateServer
from ota_rig.server.faults import Fault
from ota_rig.server.pki import Pki
from ota_rig.server.records import CLOSED, NOT_READING, SHUTDOWN, TIMEOUT, ConnectionRecord, ServerLog, parse_version

DEVICE_HEADERS = [
    ("User-Agent", "ESP32-http-Update"),
    ("Connection", "close"),
    ("Cache-Control", "no-cache"),
    ("x-ESP32-STA-MAC", "24:6F:28:AA:BB:CC"),
    ("x-ESP32-AP-MAC", "24:6F:28:AA:BB:CD"),
    ("x-ESP32-free-space", "1310720"),
    ("x-ESP32-sketch-size", "912345"),
    ("x-ESP32-chip-size", "4194304"),
    ("x-ESP32-sdk-version", "v4.4.6"),
    ("x-ESP32-mode", "sketch"),
    ("x-ESP32-version", "1.0.0"),
]
BIG = 8 * 1024 * 1024  # more than loopback socket buffers hold, so a dropping client stops the body


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def firmware(tmp_path):
    folder = tmp_path / "firmware"
    folder.mkdir()
    return folder


@pytest.fixture
def image(firmware):
    path = firmware / "app.bin"
    path.write_bytes(b"\xe9" + os.urandom(100_000))
    return path


@pytest.fixture
def server(tmp_path, firmware, pki):
    with UpdateServer(firmware, tmp_path / "server.jsonl") as server:
        server.add_listener("main", pki.dns())
        yield server


def connect(server, authority, host="ota.local", listener="main", maximum=None, strict_eof=False) -> ssl.SSLSocket:
    """A TLS connection to a listener, trusting `authority` and checking `host`; `strict_eof`
    makes a close without close_notify an error instead of an ordinary end.

    Its receive buffer is small, like a device's, so a client that stops reading holds the
    server up instead of the kernel swallowing megabytes for it.
    """
    context = ssl.create_default_context(cadata=authority.pem)
    if maximum is not None:
        context.maximum_version = maximum
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    raw.settimeout(5)
    raw.connect(("127.0.0.1", server.listeners[listener].port))
    return context.wrap_socket(raw, server_hostname=host, suppress_ragged_eofs=not strict_eof)


def send_request(tls: ssl.SSLSocket, path="/update", headers=DEVICE_HEADERS, host="ota.local"):
    lines = [f"GET {path} HTTP/1.0", f"Host: {host}"] + [f"{name}: {value}" for name, value in headers]
    tls.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))


def get(server, pki, path="/update", headers=DEVICE_HEADERS):
    """Send one device request and return (response, body) as http.client reads them."""
    with connect(server, pki.authority()) as tls:
        send_request(tls, path, headers)
        response = http.client.HTTPResponse(tls)
        response.begin()
        body = response.read()
    server.wait_idle()
    return response, body


def with_header(name: str, value: str | None):
    """DEVICE_HEADERS with `name` set to `value`, or left out when value is None."""
    kept = [(key, old) for key, old in DEVICE_HEADERS if key != name]
    return kept if value is None else kept + [(name, value)]


@pytest.mark.parametrize(
    ("left", "right", "order"),
    [
        ("0.10", "0.9", 1),
        ("1.0", "1.0.0", 0),
        ("1.0.0", "1", 0),
        ("1.0.1", "1.0.0", 1),
        ("1.2", "1.2.1", -1),
        ("2", "10", -1),
        ("1.0.10", "1.0.9", 1),
        ("1.0.beta", "1.0.alpha", 1),
        ("1.0.rc1", "1.0.9", 1),  # text after any number
        (" 1.1 ", "1.1", 0),
    ],
)
def test_parse_version_orders_versions(left, right, order):
    a, b = parse_version(left), parse_version(right)
    assert (a > b) - (a < b) == order


def test_older_device_gets_the_image_with_length_and_md5(server, pki, image):
    server.offer("1.0.1", image)
    response, body = get(server, pki)
    assert response.status == 200
    assert body == image.read_bytes()
    assert response.getheader("Content-Length") == str(len(body))
    assert response.getheader("Content-Type") == "application/octet-stream"
    assert response.getheader("x-MD5") == hashlib.md5(body).hexdigest()  # lower-case hex
    [download] = server.log.downloads()
    assert (download.status, download.bytes_sent, download.complete) == (200, len(body), True)


@pytest.mark.parametrize("device", ["1.0.1", "1.0.1.0", "1.1", "2.0.0"])
def test_current_or_newer_device_gets_304_without_body(server, pki, image, device):
    server.offer("1.0.1", image)
    response, body = get(server, pki, headers=with_header("x-ESP32-version", device))
    assert (response.status, body) == (304, b"")
    assert server.log.downloads() == []


def test_nothing_offered_is_304(server, pki):
    response, body = get(server, pki)
    assert (response.status, body) == (304, b"")


@pytest.mark.parametrize("missing", ["x-ESP32-STA-MAC", "x-ESP32-version"])
def test_request_without_esp32_headers_is_403(server, pki, image, missing):
    server.offer("1.0.1", image)
    response, body = get(server, pki, headers=with_header(missing, None))
    assert (response.status, body) == (403, b"")


def test_record_keeps_headers_as_received_and_the_tls_outcome(server, pki, image):
    server.offer("1.0.1", image)
    get(server, pki)
    [connection] = server.log.connections()
    assert connection.listener == "main"
    assert connection.peer.startswith("127.0.0.1:")
    assert connection.sni == "ota.local"
    assert connection.tls.ok and connection.tls.version == "TLSv1.3" and connection.tls.cipher
    assert connection.ended == "closed" and connection.duration > 0
    [request] = connection.requests
    assert (request.method, request.path, request.version) == ("GET", "/update", "HTTP/1.0")
    assert request.headers == [("Host", "ota.local")] + DEVICE_HEADERS
    assert request.header("X-ESP32-VERSION") == "1.0.0"
    assert ConnectionRecord.from_json(connection.to_json()) == connection


def test_record_shows_tls_1_2_as_the_device_speaks_it(server, pki):
    with connect(server, pki.authority(), maximum=ssl.TLSVersion.TLSv1_2) as tls:
        send_request(tls)
        http.client.HTTPResponse(tls).begin()
    server.wait_idle()
    [connection] = server.log.connections()
    assert connection.tls.version == "TLSv1.2"


def test_record_names_the_certificate_presented_and_follows_a_change(server, pki):
    for cert in (pki.dns(), pki.dns(ca="new")):
        server.listeners["main"].cert = cert
        with connect(server, cert.authority) as tls:
            send_request(tls)
            http.client.HTTPResponse(tls).begin()
    server.wait_idle()
    assert [c.tls.certificate for c in server.log.connections()] == ["dns-ota.local", "dns-ota.local-new-ca"]


def test_a_reassigned_certificate_is_what_the_next_connection_gets_and_its_record_names(server, pki, monkeypatch):
    """Contexts are kept per certificate: two connections load the certificate once; after
    `cert` is assigned the next connection is presented the new one, its record names it, and
    a client trusting only the old CA is refused by it."""
    made, new_context = [], app._new_context
    monkeypatch.setattr(app, "_new_context",
                        lambda cert, versions: made.append(cert.name) or new_context(cert, versions))
    old, new = pki.dns(), pki.dns(ca="new")
    listener = server.listeners["main"]
    presented = []
    for cert in (old, old, new, new):
        if listener.cert is not cert:
            listener.cert = cert
        with connect(server, cert.authority) as tls:
            presented.append(hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest())
            send_request(tls)
            http.client.HTTPResponse(tls).begin()
        server.wait_idle()
    with pytest.raises(ssl.SSLCertVerificationError):
        connect(server, old.authority)
    server.wait_idle()
    assert presented == [old.fingerprint, old.fingerprint, new.fingerprint, new.fingerprint]
    assert made == [old.name, new.name]  # one context per certificate, kept between connections
    records = server.log.connections()
    assert [(c.tls.certificate, c.tls.ok, c.sni) for c in records] == [
        (old.name, True, "ota.local"), (old.name, True, "ota.local"),
        (new.name, True, "ota.local"), (new.name, True, "ota.local"), (new.name, False, "ota.local")]
    assert records[-1].tls.alert == "unknown_ca"


def test_handshakes_at_once_each_record_their_own_server_name(server, pki):
    """A kept context is one handshake's at a time: a connection that sends its ClientHello
    only after another connection's whole handshake still has its own server name recorded,
    and the other one keeps its own."""
    get(server, pki)  # a context is kept from now on
    client = ssl.create_default_context(cadata=pki.authority().pem)
    client.check_hostname = False
    raw = socket.create_connection(("127.0.0.1", server.listeners["main"].port), timeout=5)
    raw_port = raw.getsockname()[1]
    deadline = time.monotonic() + 5
    while not server._open and time.monotonic() < deadline:
        time.sleep(0.01)  # accepted: its handshake has its context, waiting for the ClientHello
    with connect(server, pki.authority(), host="ota.local") as tls:  # a whole handshake meanwhile
        send_request(tls)
        http.client.HTTPResponse(tls).begin()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    first = client.wrap_bio(incoming, outgoing, server_hostname="first.local")
    while True:  # now the first one shakes hands
        try:
            first.do_handshake()
            break
        except ssl.SSLWantReadError:
            raw.sendall(outgoing.read())
            incoming.write(raw.recv(65536))
    raw.sendall(outgoing.read())
    raw.close()
    server.wait_idle()
    records = server.log.connections()[1:]
    by_port = sorted((c.peer == f"127.0.0.1:{raw_port}", c.sni, c.tls.ok) for c in records)
    assert by_port == [(False, "ota.local", True), (True, "first.local", True)]


def legacy_client(authority) -> ssl.SSLContext:
    """A client that still speaks TLS 1.0 and 1.1 (OpenSSL 3 needs security level 0 for it)."""
    context = ssl.create_default_context(cadata=authority.pem)
    context.minimum_version = ssl.TLSVersion.TLSv1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
def test_a_legacy_listener_offers_only_tls_1_0_and_1_1(server, pki):
    listener = server.add_listener("legacy", pki.dns(), tls_versions=("TLSv1", "TLSv1.1"))
    with socket.create_connection(("127.0.0.1", listener.port), timeout=5) as raw:
        with legacy_client(pki.authority()).wrap_socket(raw, server_hostname="ota.local") as tls:
            assert tls.version() == "TLSv1.1"
    with pytest.raises(ssl.SSLError):  # a client that insists on TLS 1.2
        with connect(server, pki.authority(), listener="legacy"):
            pass
    server.wait_idle()
    ok, refused = server.log.connections()
    assert ok.tls.ok and ok.tls.version == "TLSv1.1"
    assert not refused.tls.ok


def test_an_unknown_tls_version_is_refused_by_name(server, pki):
    with pytest.raises(ValueError, match="'SSLv3' is not one of TLSv1, TLSv1.1, TLSv1.2, TLSv1.3"):
        server.add_listener("legacy", pki.dns(), tls_versions=("SSLv3",))


def test_firmware_folder_serves_a_bin_file(server, pki, image):
    response, body = get(server, pki, path="/firmware/app.bin")
    assert (response.status, body) == (200, image.read_bytes())
    assert response.getheader("Content-Length") == str(len(body))


@pytest.mark.parametrize(
    "path",
    [
        "/firmware/../secret.bin",
        "/firmware/..%2fsecret.bin",
        "/firmware/%2e%2e%2fsecret.bin",
        "/firmware/%2e%2e/secret.bin",
        "/firmware/%2E%2E%2Fsecret.bin",
        "/firmware/..%5csecret.bin",
        "/firmware//tmp/secret.bin",
        "/firmware/%2ftmp%2fsecret.bin",
        "/firmware/outside.bin",  # a symlink pointing out of the folder
        "/firmware/notes.txt",
        "/firmware/missing.bin",
        "/secret.bin",
    ],
)
def test_firmware_path_traversal_is_404(server, pki, firmware, path):
    secret = firmware.parent / "secret.bin"
    secret.write_bytes(b"\xe9secret")
    (firmware / "outside.bin").symlink_to(secret)
    (firmware / "notes.txt").write_text("notes")
    response, body = get(server, pki, path=path)
    assert response.status == 404
    assert b"secret" not in body
    [request] = server.log.requests()
    assert (request.path, request.status) == (path, 404)  # recorded as sent, not normalised


def test_client_trusting_another_ca_is_recorded_as_unknown_ca(server, pki):
    with pytest.raises(ssl.SSLCertVerificationError):
        connect(server, pki.authority("other"))
    server.wait_idle()
    [failure] = server.log.handshake_failures()
    assert failure.tls.alert == "unknown_ca"
    assert "TLSV1_ALERT_UNKNOWN_CA" in failure.tls.error
    assert (failure.sni, failure.requests) == ("ota.local", [])


def test_client_checking_another_hostname_is_recorded_as_bad_certificate(server, pki):
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        connect(server, pki.authority(), host="wrong.local")
    server.wait_idle()
    [failure] = server.log.handshake_failures()
    assert failure.tls.alert == "bad_certificate"
    assert failure.sni == "wrong.local"


def test_client_dropping_mid_body_shows_how_far_it_got(server, pki, firmware):
    big = firmware / "big.bin"
    big.write_bytes(b"\xe9" * BIG)
    server.offer("1.0.1", big)
    with connect(server, pki.authority()) as tls:
        send_request(tls)
        tls.recv(4096)
    server.wait_idle()
    [download] = server.log.downloads()
    assert download.content_length == BIG
    assert 0 < download.bytes_sent < BIG
    assert not download.complete


def test_several_listeners_present_their_own_certificates(server, pki):
    server.add_listener("ip", pki.ip())  # after start
    certs = {"main": pki.dns(), "ip": pki.ip()}
    ports = {name: listener.port for name, listener in server.listeners.items()}
    assert server.url("main") == f"https://ota.local:{ports['main']}/update"
    assert server.url("ip", "/firmware/a.bin") == f"https://127.0.0.1:{ports['ip']}/firmware/a.bin"
    for name, cert in certs.items():
        with connect(server, pki.authority(), host=cert.host, listener=name) as tls:
            presented = hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest()
            assert presented == cert.fingerprint
    server.wait_idle()
    assert sorted(c.listener for c in server.log.connections()) == ["ip", "main"]
    # Python's ssl sends no SNI for an IP address
    assert [c.sni for c in server.log.connections() if c.listener == "ip"] == [None]


def test_a_client_that_speaks_plain_http_fails_the_handshake_without_an_alert(server):
    with socket.create_connection(("127.0.0.1", server.listeners["main"].port), timeout=5) as plain:
        plain.sendall(b"GET /update HTTP/1.0\r\n\r\n")
        assert plain.recv(100) == b""
    server.wait_idle()
    [failure] = server.log.handshake_failures()
    assert (failure.tls.alert, failure.ended) == (None, "closed")
    assert "HTTP_REQUEST" in failure.tls.error


def test_a_silent_client_is_dropped_after_the_handshake_timeout(tmp_path, firmware, pki):
    with UpdateServer(firmware, tmp_path / "server.jsonl", handshake_timeout=0.2) as server:
        server.add_listener("main", pki.dns())
        port = server.listeners["main"].port
        with socket.create_connection(("127.0.0.1", port), timeout=5) as silent:
            assert silent.recv(100) == b""  # the server closed it
        server.wait_idle()
        [failure] = server.log.handshake_failures()
    assert "0.2 seconds" in failure.tls.error and failure.tls.alert is None


def test_stop_records_the_connections_still_open(tmp_path, firmware, pki):
    big = firmware / "big.bin"
    big.write_bytes(b"\xe9" * BIG)
    server = UpdateServer(firmware, tmp_path / "server.jsonl")
    server.add_listener("main", pki.dns())  # before start
    with server:
        server.offer("1.0.1", big)
        downloading = connect(server, pki.authority())
        send_request(downloading)
        downloading.recv(4096)
        silent = socket.create_connection(("127.0.0.1", server.listeners["main"].port))
        # TLS up, no request. With TLS 1.2 the server's Finished comes last, so the server is
        # done with the handshake when the client is (with 1.3 the client is done first).
        idle = connect(server, pki.authority(), maximum=ssl.TLSVersion.TLSv1_2)
        server.stop()
    for client in (downloading, silent, idle):
        client.close()
    connections = ServerLog(tmp_path / "server.jsonl").connections()
    assert [c.ended for c in connections] == [SHUTDOWN] * 3
    by_requests = sorted(connections, key=lambda c: (len(c.requests), c.tls.ok))
    handshaking, idling, downloading = by_requests
    assert handshaking.tls.error == "server shutdown during the handshake"
    assert idling.tls.ok and idling.requests == []
    [download] = downloading.requests
    assert 0 < download.bytes_sent < BIG and not download.complete


def raw_answer(server, pki) -> bytes:
    """Everything the server sent for one device request, up to its close, as bytes on the wire."""
    with connect(server, pki.authority()) as tls:
        send_request(tls)
        answer = b""
        while chunk := tls.recv(65536):
            answer += chunk
    server.wait_idle()
    return answer


def test_a_chunked_fault_sends_real_chunks_without_a_length(server, pki, image, caplog):
    data = image.read_bytes()
    server.offer("1.0.1", image, fault=Fault(framing="chunked"))
    caplog.set_level(logging.INFO, logger="ota_rig.progress")
    head, _, body = raw_answer(server, pki).partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head and b"Content-Length" not in head
    decoded, rest = b"", body
    while True:  # undo the chunked coding by hand: size line, data, CRLF
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        decoded, rest = decoded + rest[:size], rest[size + 2:]
    assert decoded == data and rest == b"\r\n"
    [request] = server.log.requests()
    assert (request.bytes_sent, request.complete) == (len(body), True)
    progress = [r.getMessage() for r in caplog.records if r.name == "ota_rig.progress"]
    assert progress[-1] == f"download /update: {len(body)} of {len(body)} bytes"  # the coded length


def test_a_close_delimited_fault_sends_no_length_and_closes(server, pki, image):
    server.offer("1.0.1", image, fault=Fault(framing="close"))
    head, _, body = raw_answer(server, pki).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 OK") and b"Content-Length" not in head and b"chunked" not in head
    assert body == image.read_bytes()


def test_a_status_fault_answers_that_status_with_its_headers_and_no_body(server, pki, image):
    server.offer("1.0.1", image, fault=Fault(status=302, headers=(("Location", "/firmware/app.bin"),)))
    response, body = get(server, pki)
    assert (response.status, response.getheader("Location"), body) == (302, "/firmware/app.bin", b"")
    assert [r.status for r in server.log.requests()] == [302]


@pytest.mark.parametrize("md5", ["0" * 32, ""])
def test_an_md5_fault_replaces_or_drops_x_md5(server, pki, image, md5):
    server.offer("1.0.1", image, fault=Fault(md5=md5))
    response, body = get(server, pki)
    assert body == image.read_bytes() and response.getheader("x-MD5") == (md5 or None)


def test_an_image_can_be_offered_as_bytes(server, pki):
    server.offer("1.0.1", b"\xe9tampered")
    assert get(server, pki)[1] == b"\xe9tampered"


def read_until_quiet(tls: ssl.SSLSocket, quiet: float) -> tuple[bytes, str]:
    """Everything the server sends until it closes ("eof"), resets or stays quiet for `quiet` s."""
    tls.settimeout(quiet)
    data = b""
    try:
        while chunk := tls.recv(65536):
            data += chunk
    except TimeoutError:
        return data, "quiet"
    except (ssl.SSLError, ConnectionError):
        return data, "broken"
    return data, "eof"


def test_a_drop_fault_sends_part_of_the_body_then_drops_without_close_notify(server, pki):
    image = bytes(range(256)) * 64  # 16 KiB
    server.offer("1.0.1", image, fault=Fault(drop_after=5000))
    with connect(server, pki.authority(), strict_eof=True) as tls:
        send_request(tls)
        data, ending = read_until_quiet(tls, quiet=5)
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"Content-Length: 16384" in head and body == image[:5000]
    assert ending == "broken"  # TCP closed without a close_notify: ssl calls that an EOF violation
    server.wait_idle()
    [request] = server.log.requests()
    assert (request.bytes_sent, request.complete) == (5000, False)


def test_a_stall_fault_sends_part_of_the_body_then_holds_the_connection_silent(server, pki):
    image = bytes(range(256)) * 64
    server.offer("1.0.1", image, fault=Fault(stall_after=4096 + 100))
    with connect(server, pki.authority()) as tls:
        send_request(tls)
        data, ending = read_until_quiet(tls, quiet=0.5)
        assert ending == "quiet" and data.partition(b"\r\n\r\n")[2] == image[:4196]
    server.wait_idle()  # the client closed: the server stops waiting and writes its record
    [request] = server.log.requests()
    assert (request.bytes_sent, request.complete) == (4196, False)


def test_a_body_is_either_dropped_or_stalled():
    with pytest.raises(ValueError, match="either dropped or stalled"):
        Fault(drop_after=1, stall_after=1)


# Robustness: what a hostile or broken client cannot do to the server (ota_rig.server.hostile floods it).


def status_of(answer: bytes) -> bytes:
    """The status code of a raw HTTP answer ("HTTP/1.x NNN ..."), as bytes."""
    assert answer.startswith(b"HTTP/1."), answer[:100]
    return answer[9:12]


def tls_in_memory(authority) -> tuple[ssl.SSLObject, ssl.MemoryBIO, ssl.MemoryBIO]:
    """A TLS client whose bytes go where the test puts them: (client, incoming, outgoing)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = ssl.create_default_context(cadata=authority.pem).wrap_bio(incoming, outgoing, server_hostname="ota.local")
    return client, incoming, outgoing


def test_a_request_sent_with_the_last_handshake_message_is_answered(server, pki):
    """A fast client's Finished and its request can reach the server in one TCP segment, so
    the TLS layer hands the request over before the handshake's own code has returned."""
    client, incoming, outgoing = tls_in_memory(pki.authority())
    with socket.create_connection(("127.0.0.1", server.listeners["main"].port), timeout=5) as raw:
        while True:
            try:
                client.do_handshake()
                break
            except ssl.SSLWantReadError:
                raw.sendall(outgoing.read())
                incoming.write(raw.recv(65536))
        client.write(b"GET /update HTTP/1.0\r\nHost: ota.local\r\n\r\n")
        raw.sendall(outgoing.read())  # the client's Finished and the request, in one segment
        answer = b""
        while not answer.endswith(b"\r\n\r\n") and (data := raw.recv(65536)):
            incoming.write(data)
            try:
                answer += client.read(65536)
            except ssl.SSLWantReadError:
                pass
    assert answer.startswith(b"HTTP/1.0 403 Forbidden")
    server.wait_idle()
    [request] = server.log.requests()
    assert (request.path, request.status) == ("/update", 403)


@pytest.mark.parametrize("request_bytes", [
    b"GET\x00 /update HTTP/1.0\r\n\r\n",
    b"GET /update HTTP/1.0\r\nX-Big: " + b"a" * 65536 + b"\r\n\r\n",
    b"GET /update HTTP/1.0\r\n" + b"X-h: v\r\n" * 10_000 + b"\r\n",
], ids=["NUL in the method", "a 64 kB header", "10,000 headers"])
def test_a_request_the_parser_refuses_is_answered_400_and_recorded_without_a_traceback(server, pki, caplog,
                                                                                        request_bytes):
    with connect(server, pki.authority()) as tls:
        try:
            tls.sendall(request_bytes)
        except (ConnectionError, ssl.SSLError):
            # The server answered and closed before the client had sent it all (80 kB of
            # headers): the rest met a reset, which may take the answer with it.
            pass
        answer, _ = read_until_quiet(tls, quiet=5)
    server.wait_idle()
    assert answer or len(request_bytes) > 65536, "a short request must get its answer"
    if answer:
        assert status_of(answer) == b"400"
    [connection] = server.log.connections()
    assert connection.requests == [] and connection.error.startswith("400 ")
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.fixture
def impatient(tmp_path, firmware, pki):
    """A server that waits 0.3 s for a handshake or a request."""
    with UpdateServer(firmware, tmp_path / "server.jsonl", handshake_timeout=0.3, request_timeout=0.3) as server:
        server.add_listener("main", pki.dns())
        yield server


def trickle(tls: ssl.SSLSocket, data: bytes, pace: float) -> float | None:
    """Send `data` one byte every `pace` seconds, listening in between: the seconds until the
    server closed the connection, or None if it let the whole trickle through."""
    started = time.monotonic()
    tls.settimeout(pace)
    for byte in data:
        try:
            tls.sendall(bytes([byte]))
            if tls.recv(1) == b"":
                return time.monotonic() - started
        except TimeoutError:  # `pace` seconds of silence: the next byte
            continue
        except OSError:  # a reset, or a write after the server's close
            return time.monotonic() - started
    return None


def test_slowloris_is_dropped_after_the_request_timeout_however_it_trickles(impatient, pki):
    """A client that sends a header byte every 50 ms (4 s in all), never the end of its headers."""
    with connect(impatient, pki.authority()) as tls:
        tls.sendall(b"GET /update HTTP/1.1\r\nHost: ota.local\r\n")
        dropped_after = trickle(tls, b"X-a: b\r\n" * 10, pace=0.05)
    assert dropped_after is not None and 0.2 < dropped_after < 2
    impatient.wait_idle()
    [connection] = impatient.log.connections()
    assert connection.tls.ok and connection.requests == [] and connection.ended == TIMEOUT


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"GET /update HTTP/1.1\r\nHost: ota.local\r\n\r\n", 403),  # kept alive, then silent
    (b"GET /update HTTP/1.0\r\nContent-Length: 1000000000\r\n\r\nabc", 403),  # a body that never comes
], ids=["idle after a response", "a body that never comes"])
def test_a_client_that_leaves_the_server_waiting_after_a_response_is_dropped(impatient, pki, request_bytes, status):
    with connect(impatient, pki.authority()) as tls:
        tls.sendall(request_bytes)
        started = time.monotonic()
        answer, ending = read_until_quiet(tls, quiet=5)
    assert status_of(answer) == str(status).encode()
    assert ending in ("eof", "broken") and time.monotonic() - started < 2
    impatient.wait_idle()
    [connection] = impatient.log.connections()
    assert [r.status for r in connection.requests] == [status] and connection.ended == TIMEOUT


def test_a_version_of_thousands_of_digits_is_compared_not_refused(server, pki, image):
    """int() refuses more than 4300 digits; a version header may hold any number of them."""
    huge = "1" + "0" * 5000
    assert parse_version(huge) > parse_version("9" * 4999) > parse_version("0.2")
    assert parse_version("0" * 5000 + "1.0") == parse_version("1")
    server.offer("1.0.1", image)
    response, body = get(server, pki, headers=with_header("x-ESP32-version", huge))
    assert (response.status, body) == (304, b"")


@pytest.mark.parametrize("path", ["/firmware/app.bin%00", "/firmware/..%2fsecret.bin%00.bin"])
def test_a_firmware_name_with_a_nul_byte_is_404(server, pki, image, path):
    response, body = get(server, pki, path=path)
    assert (response.status, body) == (404, b"")


def test_a_paced_download_is_complete_when_the_client_hangs_up_after_the_last_byte(server, pki):
    image = bytes(range(256)) * 64  # 16 KiB: four chunks at 0.05 s each
    server.offer("1.0.1", image, rate=4096 / 0.05)
    with connect(server, pki.authority()) as tls:
        send_request(tls)
        response = http.client.HTTPResponse(tls)
        response.begin()
        assert response.read() == image  # exactly Content-Length bytes; then the client closes
    server.wait_idle()
    [download] = server.log.downloads()
    assert (download.bytes_sent, download.complete) == (len(image), True)


def test_the_record_times_the_handshake_the_request_and_the_body_on_the_connections_clock(server, pki, caplog):
    image = bytes(range(256)) * 64  # 16 KiB: four chunks, the pause before each 0.05 s
    server.offer("1.0.1", image, rate=4096 / 0.05)
    caplog.set_level(logging.INFO, logger="ota_rig.progress")
    with connect(server, pki.authority()) as tls:
        tls.do_handshake()
        time.sleep(0.1)  # the device thinks before it asks
        send_request(tls)
        response = http.client.HTTPResponse(tls)
        response.begin()
        assert response.read() == image
    server.wait_idle()
    [connection] = server.log.connections()
    [download] = connection.requests
    assert 0 < connection.tls.seconds
    # the server finishes its handshake when the client's Finished arrives, a little after the
    # client is done with it; the request comes the client's 0.1 s of thought later
    assert download.at >= 0.1 and download.at > connection.tls.seconds
    assert download.at <= download.body_started < download.body_ended <= connection.duration
    assert download.body_ended - download.body_started >= 3 * 0.05  # the pauses before chunks 2-4
    progress = [r.getMessage() for r in caplog.records if r.name == "ota_rig.progress"]
    assert progress[-1] == f"download /update: {len(image)} of {len(image)} bytes" and len(progress) == 4


def test_an_answer_without_a_body_has_no_body_times(server, pki):
    response, _ = get(server, pki, headers=with_header("x-ESP32-version", "9.9"))
    assert response.status == 304
    [request] = server.log.requests()
    assert request.at is not None and (request.body_started, request.body_ended) == (None, None)


# Resources: what clients that stop reading cost the server, and for how long.

SEND_TIMEOUT = 1.0  # the strict server's patience with a client that takes nothing
READERS = 5


@pytest.fixture
def strict(tmp_path, firmware, pki):
    """A server that drops a client after SEND_TIMEOUT s without a byte of its response taken."""
    with UpdateServer(firmware, tmp_path / "server.jsonl", send_timeout=SEND_TIMEOUT) as server:
        server.add_listener("main", pki.dns())
        yield server


def open_fds() -> int:
    """This process's open file descriptors, as the kernel lists them (the server runs here)."""
    return len(os.listdir("/proc/self/fd"))


def stop_reading(server, pki, path: str, count: int) -> list[ssl.SSLSocket]:
    """`count` devices that ask for `path`, take the first 4 KB of the answer and no more."""
    readers = []
    for _ in range(count):
        tls = connect(server, pki.authority())
        send_request(tls, path)
        tls.recv(4096)
        readers.append(tls)
    return readers


def wait_until_stuck(server, count: int, timeout: float = 30) -> list[int]:
    """Wait until `count` bodies are going out and none has moved for 0.3 s: their bytes_sent."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        sent = sorted(request.bytes_sent for request in server.sending())
        if len(sent) == count and sent == last:
            return sent
        last = sent
        time.sleep(0.3)
    raise AssertionError(f"the bodies did not settle: {last}")


def offer_big(server, firmware, path: str) -> None:
    """BIG bytes at `path`: offered on /update (chunked, for "/update?chunked"), or a file."""
    data = b"\xe9" + os.urandom(BIG - 1)
    (firmware / "big.bin").write_bytes(data)
    server.offer("1.0.1", data, fault=Fault(framing="chunked") if path.endswith("?chunked") else Fault())


@pytest.mark.parametrize("path", ["/update", "/update?chunked", "/firmware/big.bin"])
def test_clients_that_stop_reading_are_dropped_and_their_descriptors_freed(strict, pki, firmware, path):
    offer_big(strict, firmware, path)
    baseline = open_fds()
    readers = stop_reading(strict, pki, path, READERS)
    deadline = time.monotonic() + 30  # the server fills the readers' windows (seconds on a busy machine)
    while (len(strict.log.connections()) < READERS or open_fds() > baseline + READERS) and time.monotonic() < deadline:
        time.sleep(0.05)
    fds_while_readers_open, still_open = open_fds(), strict.sending()
    for reader in readers:
        reader.close()
    connections = strict.log.connections()
    assert [c.ended for c in connections] == [NOT_READING] * READERS and still_open == []
    assert fds_while_readers_open == baseline + READERS  # the readers' own sockets: the server's are closed
    for connection in connections:
        [request] = connection.requests
        assert request.status == 200 and not request.complete
        assert 0 < request.bytes_sent < BIG
        # the server looks every quarter of SEND_TIMEOUT, so it drops a reader between one
        # SEND_TIMEOUT and 1.25 of it after the last piece it could hand over
        waited = connection.duration - request.body_ended
        assert 0.75 * SEND_TIMEOUT < waited < 1.25 * SEND_TIMEOUT + 1  # (margins for a busy machine)
    assert open_fds() == baseline


@pytest.mark.parametrize("path", ["/update?chunked", "/firmware/big.bin"])
def test_a_body_is_not_copied_for_each_client(server, pki, firmware, path):
    """Python's own allocations while READERS clients hold a body of BIG bytes each: less than
    one copy of it in all (the server's per-connection buffers are a few hundred KB)."""
    offer_big(server, firmware, path)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        readers = stop_reading(server, pki, path, READERS)
        wait_until_stuck(server, READERS)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    for reader in readers:
        reader.close()
    server.wait_idle()
    assert held < BIG, f"{held / 1e6:.1f} MB held for {READERS} clients"


def test_a_slow_reader_is_not_dropped(strict, pki):
    """A client whose window stays full but that takes a TLS record (4 KB) every 20 ms: the
    kernel lets the server write again only once a third of its send buffer (megabytes) is
    free, seconds apart, but each byte the client takes is progress."""
    strict.offer("1.0.1", b"\xe9" * BIG)
    with connect(strict, pki.authority()) as tls:
        send_request(tls)
        received = len(tls.recv(4096))
        wait_until_stuck(strict, 1)
        reading_until = time.monotonic() + 3 * SEND_TIMEOUT
        while time.monotonic() < reading_until:
            received += len(tls.recv(16 * 1024))
            time.sleep(0.02)
        assert len(strict.sending()) == 1  # still going
    strict.wait_idle()
    [connection] = strict.log.connections()
    assert connection.ended == CLOSED and received > 3 * SEND_TIMEOUT * 100_000


def test_a_rate_limited_download_slower_than_the_send_timeout_is_complete(strict, pki):
    image = bytes(range(256)) * 64 * 8  # 128 KiB at 64 KiB/s: 2 s
    strict.offer("1.0.1", image, rate=64 * 1024)
    _, body = get(strict, pki)
    assert body == image
    [connection] = strict.log.connections()
    assert connection.ended == CLOSED and connection.requests[0].complete


def test_a_stall_fault_is_not_taken_for_a_client_that_stopped_reading(strict, pki):
    image = bytes(range(256)) * 64
    strict.offer("1.0.1", image, fault=Fault(stall_after=4096 + 100))
    with connect(strict, pki.authority()) as tls:
        send_request(tls)
        data, ending = read_until_quiet(tls, quiet=2 * SEND_TIMEOUT + 0.5)
        assert ending == "quiet" and data.partition(b"\r\n\r\n")[2] == image[:4196]
    strict.wait_idle()
    [connection] = strict.log.connections()
    assert connection.ended == CLOSED and connection.requests[0].bytes_sent == 4196
