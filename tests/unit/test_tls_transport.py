"""ota_rig.server.tls_transport against real TLS clients: Python's ssl on a socket, and curl.

The evidence is what the client received (its bytes and their MD5, how the stream ended: a
close_notify, or a TCP close without one) and, through the update server, its record; never
what the transport says of itself.
"""

import asyncio
import hashlib
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from ota_rig.server.app import UpdateServer
from ota_rig.server.pki import Pki
from ota_rig.server.records import CLOSED
from ota_rig.server.tls_transport import TlsTransport

from .test_server import connect, send_request


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki(tmp_path_factory.mktemp("pki"))


class Serving:
    """A loop thread accepting TCP connections on a free port of 127.0.0.1, each wrapped in a
    TlsTransport whose protocol `make()` returns."""

    def __init__(self, context: ssl.SSLContext, make: Callable[[], asyncio.Protocol]) -> None:
        self.loop = asyncio.new_event_loop()
        self.listening = socket.create_server(("127.0.0.1", 0))
        self.listening.setblocking(False)
        self.port = self.listening.getsockname()[1]
        self.context, self.make = context, make
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def _accept(self) -> None:
        sock, _ = self.listening.accept()
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)  # the client's window fills soon
        TlsTransport(self.loop, sock, self.context, self.make(), handshake_timeout=5)

    def __enter__(self) -> "Serving":
        self.loop.call_soon_threadsafe(self.loop.add_reader, self.listening.fileno(), self._accept)
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.listening.close()
        self.loop.close()


def server_context(pki: Pki) -> ssl.SSLContext:
    cert = pki.dns()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert.cert_pem, cert.key_pem)
    return context


class Sender(asyncio.Protocol):
    """Once the handshake is done, writes `pieces` (one write or writelines each), waiting
    while the transport says the client's window is full, then closes or aborts."""

    def __init__(self, pieces: list, end: str = "close") -> None:
        self.pieces, self.end = iter(pieces), end
        self.paused = 0
        self.lost: list[Exception | None] = []
        self.transport: TlsTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        self._go_on()

    def _go_on(self) -> None:
        assert self.transport is not None
        for piece in self.pieces:
            if isinstance(piece, list):
                self.transport.writelines(piece)
            else:
                self.transport.write(piece)
                if isinstance(piece, bytearray):
                    piece[:] = b"!" * len(piece)  # changed after the write: what was written must go out
            if self.transport.get_write_buffer_size() > self.transport.get_write_buffer_limits()[1]:
                return  # pause_writing came; resume_writing goes on
        getattr(self.transport, self.end)()

    def pause_writing(self) -> None:
        self.paused += 1

    def resume_writing(self) -> None:
        self._go_on()

    def handshake_failed(self, error: OSError) -> None:
        raise AssertionError(f"the handshake failed: {error}")

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.append(exc)


def read_to_the_end(tls: ssl.SSLSocket) -> tuple[bytes, str]:
    """Everything the server sent, and how it ended: "close_notify", or "eof" for a TCP close
    without one (the client's suppress_ragged_eofs is off)."""
    received = bytearray()
    try:
        while data := tls.recv(65536):
            received += data
    except (ssl.SSLEOFError, ConnectionResetError):
        return bytes(received), "eof"
    return bytes(received), "close_notify"


def wait_for(condition: Callable[[], object], timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the server did not get there"
        time.sleep(0.01)


def client(pki: Pki, port: int) -> ssl.SSLSocket:
    """A client with a small receive buffer, so that the server's writes fill its window."""
    context = ssl.create_default_context(cadata=pki.authority().pem)
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    raw.settimeout(10)
    raw.connect(("127.0.0.1", port))
    return context.wrap_socket(raw, server_hostname="ota.local", suppress_ragged_eofs=False)


def test_a_body_larger_than_the_socket_buffers_arrives_whole_then_a_close_notify(pki):
    """Pieces of every kind a caller hands over (bytes, memoryview slices of one shared
    buffer, writelines, a bytearray the caller changes at once) arrive in order, each byte
    once, though the client's window fills many times; then the close sends a close_notify."""
    data = os.urandom(6 * 1024 * 1024 + 123)
    view = memoryview(data)
    pieces: list = [data[:100], [view[100:5000], view[5000:70_000]], bytearray(data[70_000:70_500])]
    pieces += [view[start:start + 256 * 1024] for start in range(70_500, len(data), 256 * 1024)]
    protocol = Sender(pieces)
    with Serving(server_context(pki), lambda: protocol) as serving, client(pki, serving.port) as tls:
        received, ending = read_to_the_end(tls)
        tls.unwrap()  # the client's close_notify in answer: the server's close is complete
        wait_for(lambda: protocol.lost)
    assert hashlib.md5(received).hexdigest() == hashlib.md5(data).hexdigest() and len(received) == len(data)
    assert ending == "close_notify"
    assert protocol.paused > 0  # the window filled: the retried writes are the ones that arrived whole
    assert protocol.lost == [None]


def test_a_close_the_client_answers_with_a_tcp_close_ends_with_that_error(pki):
    """As asyncio's TLS: a peer that closes without answering the close_notify ends the
    connection with the EOF error."""
    protocol = Sender([b"y" * 100])
    with Serving(server_context(pki), lambda: protocol) as serving:
        with client(pki, serving.port) as tls:
            assert read_to_the_end(tls) == (b"y" * 100, "close_notify")
        wait_for(lambda: protocol.lost)
    [lost] = protocol.lost
    assert isinstance(lost, ssl.SSLEOFError)


def test_an_abort_closes_without_a_close_notify_after_what_was_handed_over(pki):
    protocol = Sender([b"x" * 1000], end="abort")
    with Serving(server_context(pki), lambda: protocol) as serving, client(pki, serving.port) as tls:
        received, ending = read_to_the_end(tls)
    assert (received, ending) == (b"x" * 1000, "eof")


class Echo(asyncio.Protocol):
    """Echoes what it receives, pausing reading for a moment after each piece."""

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)
        self.transport.pause_reading()
        asyncio.get_running_loop().call_later(0.05, self.transport.resume_reading)

    def eof_received(self) -> None:
        return None


def test_reading_paused_and_resumed_loses_and_reorders_nothing(pki):
    """While reading is paused what the client sends waits (in the kernel, or decrypted in
    OpenSSL, which the socket no longer signals); resumed, it all comes, in order."""
    messages = [f"message {number}\n".encode() * (number + 1) for number in range(20)]
    with Serving(server_context(pki), Echo) as serving, client(pki, serving.port) as tls:
        for message in messages:
            tls.sendall(message)
        echoed = b""
        while len(echoed) < sum(map(len, messages)):
            echoed += tls.recv(65536)
        tls.unwrap()  # the client's close_notify: the server answers with its own
    assert echoed == b"".join(messages)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_downloads_a_firmware_file_whole(tmp_path, pki):
    """curl (its own TLS and HTTP) fetches a file of the firmware folder: the bytes on its
    disk have the file's MD5, and it reports the status and size it saw."""
    folder = tmp_path / "firmware"
    folder.mkdir()
    data = b"\xe9" + os.urandom(3_000_000)
    (folder / "app.bin").write_bytes(data)
    (tmp_path / "ca.pem").write_text(pki.authority().pem)
    with UpdateServer(folder, tmp_path / "server.jsonl") as server:
        port = server.add_listener("main", pki.dns()).port
        done = subprocess.run(
            ["curl", "--silent", "--show-error", "--cacert", str(tmp_path / "ca.pem"),
             "--resolve", f"ota.local:{port}:127.0.0.1", "--output", str(tmp_path / "got.bin"),
             "--write-out", "%{http_code} %{size_download}", f"https://ota.local:{port}/firmware/app.bin"],
            capture_output=True, text=True, timeout=60)
        server.wait_idle()
        [connection] = server.log.connections()
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"200 {len(data)}"
    assert hashlib.md5((tmp_path / "got.bin").read_bytes()).hexdigest() == hashlib.md5(data).hexdigest()
    assert connection.ended == CLOSED and connection.requests[0].complete


@pytest.fixture
def offering(tmp_path, pki) -> Iterator[tuple[UpdateServer, bytes]]:
    data = b"\xe9" + os.urandom(8 * 1024 * 1024)
    with UpdateServer(tmp_path, tmp_path / "server.jsonl") as server:
        server.add_listener("main", pki.dns())
        server.offer("1.0.1", data)
        yield server, data


def test_a_client_that_stops_reading_mid_body_and_closes_is_recorded_as_far_as_it_got(offering, pki):
    """The client takes the head and 64 KB of an 8 MB body and closes while the server's
    write waits on its full window: the server's record shows a body handed over in part,
    and the connection closed (the client's reset ends the wait)."""
    server, data = offering
    with connect(server, pki.authority()) as tls:
        send_request(tls)
        received = b""
        while len(received.partition(b"\r\n\r\n")[2]) < 64 * 1024:
            received += tls.recv(65536)
    head = received.partition(b"\r\n\r\n")[2][:64 * 1024]
    server.wait_idle(timeout=10)
    [connection] = server.log.connections()
    [download] = connection.requests
    assert head == data[:64 * 1024]
    assert (download.status, download.content_length, download.complete) == (200, len(data), False)
    assert 64 * 1024 <= download.bytes_sent < len(data)
    assert connection.ended == CLOSED
