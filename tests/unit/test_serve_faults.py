"""`rig serve --rate/--stall-after/--drop-after/--status`, a real `rig serve` process read by
Python's ssl as an ESP32 at 0.1 asks: what arrived on the wire and the server's own record.
"""

import socket
import ssl

import pytest

from ota_rig.server.records import ServerLog
from tests.unit.test_manual import app_image, refusal, serving  # noqa: F401 (app_image: a fixture)
from tests.unit.test_server import send_request, with_header

WAIT = 3.0  # seconds a stalled read waits before the client gives up


def raw_update(hostname: str, port: int, ca_pem: str) -> tuple[bytes, bytes, str]:
    """GET /update as a device at 0.1, reading raw bytes until the server closes, drops or
    stalls: the head, the body bytes that arrived, and how the read ended."""
    context = ssl.create_default_context(cadata=ca_pem)
    received, ended = b"", "closed"
    with context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=WAIT),
                             server_hostname=hostname, suppress_ragged_eofs=False) as tls:
        send_request(tls, headers=with_header("x-ESP32-version", "0.1"), host=hostname)
        while True:
            try:
                chunk = tls.recv(65536)
            except TimeoutError:
                ended = "stalled"
                break
            except (ssl.SSLError, ConnectionError) as err:  # no close_notify: a dropped connection
                ended = f"dropped ({type(err).__name__})"
                break
            if not chunk:
                break
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    return head, body, ended


def served(folder, app, *faults: str):
    return serving(folder, "--firmware", str(app), "--firmware-version", "0.2", *faults)


def the_request(output, folder):
    """The one /update request in the server's record, once `rig serve` printed its line."""
    output.until(lambda line: "GET /update" in line)
    [request] = ServerLog(folder / "server.jsonl").requests()
    return request


def test_drop_after_sends_that_many_bytes_then_drops_the_connection(tmp_path, app_image):  # noqa: F811
    image = app_image.read_bytes()
    with served(tmp_path, app_image, "--drop-after", "1000") as (process, output, url, ca_pem):
        assert "faults of /update: drops the connection after 1000 bytes" in output.seen
        head, body, ended = raw_update(url["host"], int(url["port"]), ca_pem)
        request = the_request(output, tmp_path)
    assert head.startswith(b"HTTP/1.0 200") and f"Content-Length: {len(image)}".encode() in head
    assert body == image[:1000] and ended.startswith("dropped")
    assert (request.status, request.bytes_sent, request.complete) == (200, 1000, False)


def test_stall_after_sends_that_many_bytes_then_nothing(tmp_path, app_image):  # noqa: F811
    image = app_image.read_bytes()
    with served(tmp_path, app_image, "--stall-after", "2048") as (process, output, url, ca_pem):
        head, body, ended = raw_update(url["host"], int(url["port"]), ca_pem)
        request = the_request(output, tmp_path)
    assert head.startswith(b"HTTP/1.0 200") and body == image[:2048] and ended == "stalled"
    assert (request.status, request.bytes_sent, request.complete) == (200, 2048, False)


def test_rate_sends_the_whole_image_no_faster_than_asked(tmp_path, app_image):  # noqa: F811
    image = app_image.read_bytes()
    rate = len(image) / 0.5  # half a second's worth of body, so the lower bound below is clear of noise
    with served(tmp_path, app_image, "--rate", f"{rate:g}") as (process, output, url, ca_pem):
        head, body, ended = raw_update(url["host"], int(url["port"]), ca_pem)
        request = the_request(output, tmp_path)
    assert head.startswith(b"HTTP/1.0 200") and body == image and ended == "closed"
    assert (request.status, request.bytes_sent, request.complete) == (200, len(image), True)
    # The server pauses len(piece)/rate before each piece it writes: never faster than the rate.
    assert request.body_ended - request.body_started >= len(image) / rate


def test_status_answers_that_status_with_no_body(tmp_path, app_image):  # noqa: F811
    with served(tmp_path, app_image, "--status", "503") as (process, output, url, ca_pem):
        head, body, ended = raw_update(url["host"], int(url["port"]), ca_pem)
        request = the_request(output, tmp_path)
    assert head.startswith(b"HTTP/1.0 503") and body == b"" and ended == "closed"
    assert (request.status, request.bytes_sent, request.complete) == (503, 0, True)


@pytest.mark.parametrize(("faults", "sentence"), [
    (["--status", "500"], "pass --firmware and --firmware-version too"),
    (["--firmware", "{app}", "--firmware-version", "0.2", "--stall-after", "1", "--drop-after", "2"],
     "either stalled or dropped, not both"),
    (["--firmware", "{app}", "--firmware-version", "0.2", "--rate", "0"], "--rate 0 is not a rate"),
    (["--firmware", "{app}", "--firmware-version", "0.2", "--status", "42"], "--status 42 is not an HTTP status"),
    (["--firmware", "{app}", "--firmware-version", "0.2", "--status", "500", "--rate", "10"], "pass --status alone"),
])
def test_serve_refuses_faults_it_cannot_stage(faults, sentence, tmp_path, app_image, capsys):  # noqa: F811
    argv = [word.format(app=app_image) for word in faults]
    assert sentence in refusal(capsys, "serve", "--folder", str(tmp_path / "serve"), "--host", "127.0.0.1", *argv)
