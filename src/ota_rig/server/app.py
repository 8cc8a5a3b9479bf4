"""The HTTPS update server a device under test polls (its record of each connection: records.py).

`UpdateServer` answers the request arduino-esp32's HTTPUpdate sends (reference section 2):

* `GET /update` compares the device's `x-ESP32-version` with the offered firmware: an older
  device gets 200 with the image, `Content-Length` and a lower-case hex `x-MD5`; a current or
  newer one gets 304. A request without `x-ESP32-STA-MAC` or `x-ESP32-version` is not an
  ESP32 updater and gets 403.
* `GET /firmware/<name>.bin` serves a file from the firmware folder, as a static file server.
* Anything else is 404.

It listens on several ports at once, each with its own certificate (a listener), and runs its
own asyncio loop in a daemon thread so that synchronous test code can drive it::

    with UpdateServer(firmware_dir, tmp_path / "server.jsonl") as server:
        server.add_listener("main", pki.dns())
        server.offer("1.0.1", image)
        url = server.url("main")        # https://ota.local:<port>/update
        ...                             # the device updates
        server.wait_idle()
        assert server.log.downloads()[0].complete

The record is one JSON line per connection (`ConnectionRecord`), appended when the
connection closes: the TLS outcome, including the alert a client sends when it refuses the
certificate, then every request with its headers exactly as received and how much of the
body went out. The server accepts each connection itself and does its TLS on the socket
(tls_transport.TlsTransport: OpenSSL writes straight into the kernel socket, where asyncio's
`start_tls` copied every record out of a memory buffer), so the handshake's outcome is
recorded here; only then does aiohttp's request handler see the connection.

A body goes out a chunk at a time, so that many clients cost little: the offered image is one
bytes object that every request reads from (its MD5 computed once, by `offer`), and a file of
the firmware folder is read from disk as it is sent. A plain body goes in BIG_CHUNK pieces; a
rate-limited or chunk-coded one in CHUNK_SIZE pieces, so that pacing stays smooth and the
chunks on the wire are what they always were. Each listener keeps the SSL contexts of its
certificate for the next handshakes (see Listener), and listens with a `backlog` of 1024, so a
fleet polling at once is neither reloading PEM files nor refused at the door.
"""

import asyncio
import contextlib
import datetime
import fcntl
import hashlib
import io
import logging
import socket
import ssl
import struct
import termios
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO, TypeVar

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from ota_rig.server.faults import Fault, Offer, Reply
from ota_rig.server.pki import ServerCert
from ota_rig.server.records import (
    CLOSED,
    NOT_READING,
    SHUTDOWN,
    TIMEOUT,
    ConnectionRecord,
    RequestRecord,
    ServerLog,
    TlsRecord,
    parse_version,
    tls_alert,
)
from ota_rig.server.tls_transport import TlsTransport

T = TypeVar("T")

log = logging.getLogger(__name__)
progress = logging.getLogger("ota_rig.progress")  # what `rig run` shows while a scenario runs

CHUNK_SIZE = 4096  # a rate-limited or chunk-coded body's pieces
# A plain body's pieces: 64 times fewer trips through aiohttp than 4 KB ones, and still ten
# progress steps (`rig run`) for a 2.5 MB image. Server CPU per 1.3 MB download under
# bench/fleet.py, with asyncio's TLS then: 64 KB 5.6 ms, 112 KB 4.7, 256 KB 4.3, 512 KB 4.3,
# 2 MB 5.2 (a loaded machine: the order, not the figures).
BIG_CHUNK = 256 * 1024
BACKLOG = 1024  # connections the kernel queues for accept: a fleet polls at once
ACCEPT_RETRY = 1.0  # seconds without accepting after the process ran out of descriptors (as asyncio)
IDLE_CONTEXTS = 256  # SSL contexts a listener keeps for later handshakes, at most
LAST_CHUNK = b"0\r\n\r\n"  # ends a chunked body
OCTET_STREAM = "application/octet-stream"
TLS_VERSIONS = {"TLSv1": ssl.TLSVersion.TLSv1, "TLSv1.1": ssl.TLSVersion.TLSv1_1,
                "TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}


@dataclass
class Listener:
    """A port the server listens on and the certificate it presents there.

    The socket is bound when the listener is added, so `port` is known at once (port 0 picks
    a free one). Assigning `cert` changes what the next connection sees, as when a server's
    certificate is renewed or moved to a new CA. `tls_versions` limits the protocol versions
    offered, e.g. ("TLSv1", "TLSv1.1") for a legacy server; empty means what Python's ssl
    offers by default (TLS 1.2 and 1.3).

    Loading a certificate and key costs more than a handshake's share of the server's CPU, so
    the SSL contexts made for `cert` are kept for the next handshakes. Each handshake borrows
    one for itself (`borrow_context`), since the context's SNI callback says which
    connection's record the server name goes to, and gives it back once the handshake is
    over. Assigning `cert` or `tls_versions` drops the kept contexts, and a context borrowed
    before is not taken back: the next connection loads the new certificate from its files
    and its record names it (as does every connection's, with the certificate of the context
    it borrowed). The files of a certificate are read when a context is made, so rewriting
    them in place, without assigning `cert`, is not seen by every connection.
    """

    name: str
    cert: ServerCert
    port: int
    sock: socket.socket = field(repr=False)
    tls_versions: tuple[str, ...] = ()
    accepting: bool = field(default=False, repr=False)
    _idle: list[ssl.SSLContext] = field(default_factory=list, init=False, repr=False, compare=False)
    _generation: int = field(default=0, init=False, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    def __setattr__(self, name: str, value: object) -> None:
        if name in ("cert", "tls_versions") and "_lock" in self.__dict__:
            with self._lock:  # the loop thread borrows while a test thread may assign
                super().__setattr__(name, value)
                self._idle = []
                self._generation += 1
        else:
            super().__setattr__(name, value)

    def ssl_context(self) -> ssl.SSLContext:
        """A new server context for this listener's certificate and versions."""
        return _new_context(self.cert, self.tls_versions)

    def borrow_context(self) -> tuple[ServerCert, ssl.SSLContext, int]:
        """A context for one handshake, kept or new, the certificate it presents and the
        generation to hand back with it (`give_back`)."""
        with self._lock:
            cert, versions, generation = self.cert, self.tls_versions, self._generation
            context = self._idle.pop() if self._idle else None
        return cert, context or _new_context(cert, versions), generation

    def give_back(self, context: ssl.SSLContext, generation: int) -> None:
        """Keep `context` for a later handshake, unless `cert` or `tls_versions` changed since
        it was borrowed or enough are kept."""
        context.sni_callback = None
        with self._lock:
            if generation == self._generation and len(self._idle) < IDLE_CONTEXTS:
                self._idle.append(context)


def _new_context(cert: ServerCert, tls_versions: tuple[str, ...]) -> ssl.SSLContext:
    """The server side of a handshake presenting `cert`, offering `tls_versions` (all: empty)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert.cert_pem, cert.key_pem)
    if tls_versions:
        versions = [TLS_VERSIONS[name] for name in tls_versions]
        context.minimum_version, context.maximum_version = min(versions), max(versions)
        if context.minimum_version < ssl.TLSVersion.TLSv1_2:
            context.set_ciphers("DEFAULT:@SECLEVEL=0")  # OpenSSL 3 refuses TLS < 1.2 above level 0
    return context


class UpdateServer:
    """An HTTPS update server on `host`, recording every connection to `record_path`.

    `start()` and `stop()` (or a `with` block) run it in a background thread. `stop()`
    records the connections still open, marked "server shutdown".

    A client cannot hold a connection open by saying nothing, or too little: the TLS
    handshake must finish within `handshake_timeout` seconds, and after it the server waits
    at most `request_timeout` seconds for a request's headers (then again after each
    response, for the next request or the rest of a body it does not read) before dropping
    the connection, recorded as ended "timeout". Both are read at each connection, so a
    test may shorten them on a running server. aiohttp's parser answers 400 to a request
    line or header field over 8190 bytes and to more than 128 headers.

    Nor by not reading: a client whose TCP window stays full, so that the response cannot go
    on, for `send_timeout` seconds (no byte of it acknowledged in that time) is dropped,
    recorded as ended "not reading". A slow reader is not: each byte it takes starts the
    time again, and neither is a rate-limited body or a stall `Fault`, where the server is
    the one that waits.
    """

    def __init__(
        self,
        firmware_dir: Path,
        record_path: Path,
        host: str = "127.0.0.1",
        handshake_timeout: float = 30.0,
        request_timeout: float = 10.0,
        send_timeout: float = 30.0,
        backlog: int = BACKLOG,
    ) -> None:
        self.firmware_dir = Path(firmware_dir)
        self.record_path = Path(record_path)
        self.host = host
        self.handshake_timeout = handshake_timeout
        self.request_timeout = request_timeout
        self.send_timeout = send_timeout
        self.backlog = backlog
        self.listeners: dict[str, Listener] = {}
        self._offer: Offer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._record_file: TextIO | None = None
        self._open: set[_Connection] = set()
        self._idle = threading.Condition()

    @property
    def log(self) -> ServerLog:
        return ServerLog(self.record_path)

    def add_listener(self, name: str, cert: ServerCert, port: int = 0, tls_versions: tuple[str, ...] = ()) -> Listener:
        """Listen on `port` (0: a free one) presenting `cert`, offering only `tls_versions`
        if given (see Listener); before or after `start()`."""
        if name in self.listeners:
            raise ValueError(f"listener {name!r} exists already")
        for version in tls_versions:
            if version not in TLS_VERSIONS:
                raise ValueError(f"TLS version {version!r} is not one of {', '.join(TLS_VERSIONS)}")
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.create_server((self.host, port), family=family, backlog=self.backlog)
        listener = Listener(name, cert, sock.getsockname()[1], sock, tuple(tls_versions))
        self.listeners[name] = listener
        if self._loop is not None:
            self._call(self._serve(listener))
        return listener

    def url(self, listener_name: str, path: str = "/update") -> str:
        """The URL a device uses to reach a listener: the certificate's host and the port."""
        listener = self.listeners[listener_name]
        return f"https://{_host_port(listener.cert.host, listener.port)}{path}"

    def offer(self, version: str, image: Path | bytes, *, rate: float | None = None, fault: Fault = Fault()) -> None:
        """Offer `image` (a file, or the bytes themselves), as firmware `version`, on
        `/update`; `rate` limits the body to that many bytes per second, like a slow link;
        `fault` makes the answer go wrong in one way. The bytes are read, and their MD5
        computed, once: every request of the offer is served from them."""
        data = image if isinstance(image, bytes) else Path(image).read_bytes()
        self._offer = Offer(version, data, hashlib.md5(data).hexdigest(), rate, fault)
        log.info("offering %s (%d bytes)%s", version, len(data), f" with {fault}" if fault != Fault() else "")

    def start(self) -> "UpdateServer":
        """Serve every listener from a new loop thread; a server starts once."""
        if self._thread is not None:
            raise RuntimeError("an UpdateServer starts once")
        self.record_path.parent.mkdir(parents=True, exist_ok=True)
        self._record_file = self.record_path.open("a", encoding="utf-8")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="update-server", daemon=True
        )
        self._thread.start()
        self._call(self._setup())
        return self

    def stop(self) -> None:
        """Stop listening, record and close the open connections, end the thread."""
        if self._loop is None:
            for listener in self.listeners.values():
                listener.sock.close()
            return
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        assert self._thread is not None  # start() sets it together with _loop
        self._thread.join()
        self._loop.close()
        self._loop = None

    def wait_idle(self, timeout: float = 5.0) -> None:
        """Wait until no connection is open, so the record holds every connection so far.

        A connection counts once the server has accepted it: call this after the client
        has at least begun its TLS handshake.
        """
        with self._idle:
            if not self._idle.wait_for(lambda: not self._open, timeout):
                raise TimeoutError(f"{len(self._open)} connection(s) still open after {timeout} s")

    def sending(self) -> list[RequestRecord]:
        """The requests on connections still open (their records are written at close), so
        a rig can watch a download as it goes: `bytes_sent` grows as the body goes out."""
        with self._idle:
            return [request for connection in self._open for request in connection.record.requests]

    def __enter__(self) -> "UpdateServer":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # The loop thread's side.

    def _call(self, coroutine: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        if self._loop is None:
            raise RuntimeError("the update server's loop is not running: call start() first")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    async def _setup(self) -> None:
        app = web.Application()
        app.router.add_get("/update", self._route(self._update), allow_head=False)
        app.router.add_get("/firmware/{name}", self._route(self._firmware), allow_head=False)
        app.router.add_route("*", "/{path:.*}", self._route(lambda request: Reply(404)))
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        for listener in self.listeners.values():
            await self._serve(listener)

    async def _serve(self, listener: Listener) -> None:
        listener.sock.setblocking(False)
        asyncio.get_running_loop().add_reader(listener.sock.fileno(), self._accept, listener)
        listener.accepting = True
        log.info("listener %s on %s with certificate %s", listener.name,
                 _host_port(self.host, listener.port), listener.cert.name)

    def _accept(self, listener: Listener) -> None:
        """Take the connections waiting at `listener` (up to a backlog's worth) and start
        their handshakes. Out of descriptors, stop accepting for a second, as asyncio does."""
        for _ in range(self.backlog):
            try:
                sock, address = listener.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:  # EMFILE, ENFILE, ENOBUFS, ...: the kernel keeps them queued
                log.warning("listener %s cannot accept: %s; retrying in 1 s", listener.name, error)
                loop = asyncio.get_running_loop()
                loop.remove_reader(listener.sock.fileno())
                loop.call_later(ACCEPT_RETRY, self._resume_accepting, listener)
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as asyncio's transports
            _Connection(self, listener).start(sock, address)

    def _resume_accepting(self, listener: Listener) -> None:
        if listener.accepting:
            asyncio.get_running_loop().add_reader(listener.sock.fileno(), self._accept, listener)

    async def _shutdown(self) -> None:
        for listener in self.listeners.values():
            if not listener.accepting:
                raise RuntimeError(f"listener {listener.name!r} never started serving, so it cannot stop")
            listener.accepting = False
            asyncio.get_running_loop().remove_reader(listener.sock.fileno())
            listener.sock.close()
        for connection in list(self._open):
            connection.shut_down()
        assert self._runner is not None and self._record_file is not None  # start() made both before the loop ran
        await self._runner.cleanup()
        self._record_file.close()

    def _track(self, connection: "_Connection") -> None:
        with self._idle:
            self._open.add(connection)

    def _record(self, connection: "_Connection") -> None:
        """Append a finished connection's record and flush it."""
        assert self._record_file is not None  # start() opens it before the loop that records runs
        self._record_file.write(connection.record.to_json() + "\n")
        self._record_file.flush()
        with self._idle:
            self._open.discard(connection)
            self._idle.notify_all()

    def _route(self, decide: Callable[[web.Request], Reply]) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """An aiohttp handler that records the request, asks `decide` for the reply and sends it."""

        async def handle(request: web.Request) -> web.StreamResponse:
            record = RequestRecord(
                method=request.method,
                path=request.raw_path,
                version=f"HTTP/{request.version.major}.{request.version.minor}",
                headers=[(name.decode("latin-1"), value.decode("latin-1"))
                         for name, value in request.raw_headers],
            )
            handler = request.protocol
            assert isinstance(handler, _Handler)  # _Connection.connection_made makes every connection's handler
            connection = handler.connection
            record.at = connection.elapsed()
            connection.record.requests.append(record)
            connection.request_started()
            try:
                return await _send(request, record, decide(request), connection.elapsed)
            finally:
                connection.wait_for_request()

        return handle

    def _update(self, request: web.Request) -> Reply:
        mac = request.headers.get("x-ESP32-STA-MAC")
        version = request.headers.get("x-ESP32-version")
        if not mac or not version:
            log.info("403 to %s: not an ESP32 updater (no STA MAC or version)", request.remote)
            return Reply(403)
        offer = self._offer
        if offer is None or parse_version(version) >= parse_version(offer.version):
            log.info("304 to %s at %s: offered %s", mac, version, offer.version if offer else None)
            return Reply(304)
        fault = offer.fault
        if fault.status is not None:
            log.info("%d to %s at %s (fault)", fault.status, mac, version)
            return Reply(fault.status, headers=dict(fault.headers))
        log.info("200 to %s at %s: sending %s", mac, version, offer.version)
        md5 = offer.md5 if fault.md5 is None else fault.md5
        headers = {"Content-Type": OCTET_STREAM, **({"x-MD5": md5} if md5 else {}), **dict(fault.headers)}
        return Reply(200, offer.image, headers, offer.rate, fault.framing, fault.drop_after, fault.stall_after)

    def _firmware(self, request: web.Request) -> Reply:
        """A `.bin` file directly inside the firmware folder; anything else, 404.

        The name comes percent-decoded, so it may hold "../", "/" or a NUL (which no file
        system call accepts): only a name that resolves to a file in the folder is served.
        """
        name = request.match_info["name"]
        folder = self.firmware_dir.resolve()
        path = None if "\0" in name else (folder / name).resolve()
        if not name.endswith(".bin") or path is None or path.parent != folder or not path.is_file():
            log.info("404 for firmware %r", name)
            return Reply(404)
        return Reply(200, path, {"Content-Type": OCTET_STREAM})


async def _send(request: web.Request, record: RequestRecord, reply: Reply,
                elapsed: Callable[[], float]) -> web.StreamResponse:
    """Stream `reply` in chunks, counting in `record` the body bytes that went out and noting,
    by the connection's clock `elapsed`, when they began and ended."""
    response = web.StreamResponse(status=reply.status, headers=reply.headers)
    chunked = reply.framing == "chunked"
    size = reply.body.stat().st_size if isinstance(reply.body, Path) else len(reply.body)
    if chunked:
        # HTTPUpdate asks in HTTP/1.0, to which aiohttp (rightly) never chunks: this is a
        # broken proxy's answer, so the chunks are made here and the connection closes.
        response.headers["Transfer-Encoding"] = "chunked"
        size = _chunked_size(size)
    elif reply.framing == "length" and reply.status != 304:  # a 304 has no body, so no length
        response.content_length = size
    # "close": no length; to an HTTP/1.0 request aiohttp ends such a body by closing.
    record.status = reply.status
    record.content_length = response.content_length
    stop = reply.drop_after if reply.drop_after is not None else reply.stall_after
    end = size if stop is None else min(stop, size)
    try:
        await response.prepare(request)
        if size:
            record.body_started = record.body_ended = elapsed()
        # Small pieces where they show: a rate's pauses, a broken proxy's chunks. A drop or a
        # stall cuts the piece it falls in, so it comes after exactly as many bytes either way.
        piece_size = CHUNK_SIZE if chunked or reply.rate else BIG_CHUNK
        with contextlib.closing(_pieces(reply.body, chunked, piece_size)) as pieces:
            for piece in pieces:
                piece = piece[:end - record.bytes_sent]
                if not piece:
                    break
                # The pause for `rate` comes before a piece, not after: a client that has the
                # whole body may hang up at once. aiohttp only waits when the transport is
                # full; yield anyway, so that a client's reset is noticed before the next piece.
                await asyncio.sleep(len(piece) / reply.rate if reply.rate else 0)
                await response.write(piece)
                record.bytes_sent += len(piece)
                record.body_ended = elapsed()
                _report_progress(record, len(piece), size)
        if stop is not None:
            await _stop_sending(request, record, dropped=reply.drop_after is not None)
            return response
        await response.write_eof()
    except ConnectionError as error:
        log.info("%s %s: connection lost after %d of %d body bytes (%s)", request.method,
                 record.path, record.bytes_sent, size, error)
    else:
        record.complete = True
    return response


def _pieces(body: bytes | Path, chunked: bool, size: int = CHUNK_SIZE) -> Generator[bytes | memoryview, None, None]:
    """`body` as it goes on the wire, `size` bytes of it at a time, each in a chunk of its own
    and then the last chunk if `chunked` (HTTP/1.1 chunked coding: hex size line, data, CRLF).
    Bytes in memory are sliced where they are (a memoryview: no copy), a file is read as each
    piece is needed: at most a few tens of kilobytes from a local file, short enough to read
    on the loop.
    """
    if isinstance(body, bytes) and not chunked:
        view = memoryview(body)
        for start in range(0, len(body), size):
            yield view[start:start + size]
        return
    with io.BytesIO(body) if isinstance(body, bytes) else body.open("rb") as source:
        while data := source.read(size):
            yield b"%x\r\n%s\r\n" % (len(data), data) if chunked else data
    if chunked:
        yield LAST_CHUNK


def _chunked_size(size: int) -> int:
    """How many bytes `size` bytes take in the chunked coding of `_pieces`."""

    def chunk(length: int) -> int:  # hex size, CRLF, data, CRLF
        return len(f"{length:x}") + 4 + length

    full, rest = divmod(size, CHUNK_SIZE)
    return full * chunk(CHUNK_SIZE) + (chunk(rest) if rest else 0) + len(LAST_CHUNK)


def _report_progress(record: RequestRecord, chunk: int, total: int) -> None:
    """Tell `rig run` (logger ota_rig.progress) how far a body is: at each tenth of it."""
    if record.bytes_sent * 10 // total != (record.bytes_sent - chunk) * 10 // total:
        progress.info("download %s: %d of %d bytes", record.path, record.bytes_sent, total)


async def _stop_sending(request: web.Request, record: RequestRecord, dropped: bool) -> None:
    """The body stops here: drop the connection at once, or hold it open, sending nothing,
    until the client closes it."""
    transport = request.transport
    if dropped:
        log.info("%s %s: dropping the connection after %d body bytes (fault)", request.method,
                 record.path, record.bytes_sent)
        if transport is None:  # the client closed it first; _send catches this and logs a lost connection
            raise ConnectionResetError("the client closed the connection before the fault dropped it")
        transport.abort()
        return
    log.info("%s %s: stalling after %d body bytes (fault)", request.method, record.path, record.bytes_sent)
    while transport is not None and not transport.is_closing():
        await asyncio.sleep(0.05)


class _Handler(RequestHandler):
    """aiohttp's request handler for one connection, knowing that connection's record.

    A request aiohttp refuses before any route sees it (its parser's 400: a bad method, a
    broken request line, headers over the limits) is answered with the bare status and
    noted in the record, instead of being logged with a traceback at error level: a
    scanner's garbage is not the server's error. A route's exception (500) still is.
    """

    def __init__(self, connection: "_Connection", manager: web.Server, lingering_time: float) -> None:
        super().__init__(manager, loop=asyncio.get_running_loop(), lingering_time=lingering_time)
        self.connection = connection

    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        text = (message or str(exc or "")).strip()  # the parser's message goes on to quote the bytes
        self.connection.record.error = f"{status} {text.splitlines()[0].rstrip(':') if text else ''}".strip()
        if status >= 500:
            return super().handle_error(request, status, exc, message)
        log.info("%s from %s", self.connection.record.error, self.connection.record.peer)
        response = web.Response(status=status)
        response.force_close()
        return response


class _Connection(asyncio.Protocol):
    """One accepted TCP connection: the TLS handshake done here (TlsTransport), so its outcome
    is recorded, then aiohttp's request handler behind it.

    This protocol stays under the TLS transport and forwards to the handler, so it also
    hears `connection_lost` and can finish the record, and `pause_writing`, when the
    client's window is full, to watch that the client still reads.
    """

    def __init__(self, server: UpdateServer, listener: Listener) -> None:
        self._server = server
        self._listener = listener
        self._transport: TlsTransport | None = None
        self._handler: _Handler | None = None
        self._certificate = listener.cert.name  # the name of the certificate presented
        self._borrowed: tuple[ssl.SSLContext, int] | None = None  # the handshake's context, see Listener
        self._timer: asyncio.TimerHandle | None = None  # see wait_for_request
        self._progress_check: asyncio.TimerHandle | None = None  # see pause_writing
        self._started = 0.0
        self._finished = False
        self._record: ConnectionRecord | None = None

    @property
    def record(self) -> ConnectionRecord:
        """This connection's record, made when it is accepted (start)."""
        if self._record is None:
            raise RuntimeError("a connection has no record before it starts")
        return self._record

    def start(self, sock: socket.socket, peer: tuple) -> None:
        """Record the accepted `sock`, from `peer` (its address), and start its TLS handshake
        (nothing of the client's ClientHello is read before)."""
        self._started = time.monotonic()
        self._record = ConnectionRecord(
            listener=self._listener.name,
            peer=_host_port(*peer[:2]),
            start=datetime.datetime.now(datetime.timezone.utc).isoformat(),
        )
        self._server._track(self)
        try:
            cert, context, generation = self._listener.borrow_context()
            self._certificate, self._borrowed = cert.name, (context, generation)
            context.sni_callback = self._on_sni  # this context is this handshake's alone
            self._transport = TlsTransport(asyncio.get_running_loop(), sock, context, self,
                                           self._server.handshake_timeout)
        except OSError as error:  # no key file, a client already gone
            sock.close()
            self._give_back()
            self._tls_failed(error)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """The handshake is done: record it and give the connection to aiohttp's handler."""
        assert isinstance(transport, TlsTransport)  # start() made it; it calls this once
        self._give_back()
        self.record.tls = TlsRecord(
            ok=True, certificate=self._certificate, version=transport.get_extra_info("ssl_object").version(),
            cipher=transport.get_extra_info("cipher")[0], seconds=self.elapsed(),
        )
        # aiohttp reads and drops a body no route wanted ("lingering") for as long as the
        # server waits for a request, so that its task ends with the connection.
        runner = self._server._runner
        if runner is None or runner.server is None:
            raise RuntimeError("the update server accepted a connection before its aiohttp runner was set up")
        self._handler = _Handler(self, runner.server, lingering_time=self._server.request_timeout)
        self._handler.connection_made(transport)
        self.wait_for_request()

    def handshake_failed(self, error: OSError) -> None:
        """TlsTransport's word that the handshake failed (the socket is closed)."""
        self._give_back()
        self._tls_failed(error)

    def _tls_failed(self, error: OSError) -> None:
        self.record.tls = TlsRecord(ok=False, certificate=self._certificate, error=str(error) or type(error).__name__,
                                    alert=tls_alert(error), seconds=self.elapsed())
        log.info("TLS handshake with %s on %s failed: %s", self.record.peer,
                 self.record.listener, self.record.tls.error)
        self.finish(CLOSED)

    def _give_back(self) -> None:
        if self._borrowed is not None:
            self._listener.give_back(*self._borrowed)
            self._borrowed = None

    def _on_sni(self, _ssl_socket: object, server_name: str | None, _context: ssl.SSLContext) -> None:
        self.record.sni = server_name

    def data_received(self, data: bytes) -> None:
        assert self._handler is not None  # the transport gives data only after connection_made
        self._handler.data_received(data)

    def eof_received(self) -> None:  # as aiohttp's handler's, which returns None: the transport closes
        if self._handler is not None:
            self._handler.eof_received()

    def pause_writing(self) -> None:
        """The client's TCP window is full and the handler must wait: from now on the client
        has `send_timeout` seconds to take a byte of what is in flight, and again after each
        byte it takes, or be dropped."""
        assert self._handler is not None  # only the handler writes, so only its writes fill the window
        self._handler.pause_writing()
        self._watch_progress(self._in_flight(), time.monotonic())

    def resume_writing(self) -> None:
        # asyncio resumes only after pausing, and pause_writing set both
        assert self._progress_check is not None and self._handler is not None
        self._progress_check.cancel()
        self._handler.resume_writing()

    def _in_flight(self) -> int:
        """Bytes written to this connection that the client has not acknowledged: those the
        TLS transport holds and those in the kernel's send queue (Linux's SIOCOUTQ)."""
        assert self._transport is not None  # start() made it before any write
        queued = fcntl.ioctl(self._transport.get_extra_info("socket").fileno(), termios.TIOCOUTQ, bytes(4))
        return self._transport.get_write_buffer_size() + struct.unpack("i", queued)[0]

    def _watch_progress(self, in_flight: int, since: float) -> None:
        """Look again at what is in flight in a quarter of `send_timeout`: it was `in_flight`
        bytes, unmoved `since` then (time.monotonic)."""
        self._progress_check = asyncio.get_running_loop().call_later(
            self._server.send_timeout / 4, self._check_progress, in_flight, since)

    def _check_progress(self, in_flight: int, since: float) -> None:
        """Drop the client once what is in flight has not moved for `send_timeout` seconds:
        while the handler waits, only the client's reading moves it."""
        now = self._in_flight()
        if now != in_flight:
            in_flight, since = now, time.monotonic()
        if time.monotonic() - since >= self._server.send_timeout:
            self._drop(NOT_READING, f"took no byte of a response for {self._server.send_timeout} s")
        else:
            self._watch_progress(in_flight, since)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._handler is not None:  # TlsTransport calls it only after connection_made
            self._handler.connection_lost(exc)
            self.finish(CLOSED)

    def elapsed(self) -> float:
        """Seconds since this connection was accepted (the times in its record)."""
        return round(time.monotonic() - self._started, 6)

    def wait_for_request(self) -> None:
        """Give the client `request_timeout` seconds to complete a request's headers."""
        if not self._finished:
            self._timer = asyncio.get_running_loop().call_later(self._server.request_timeout, self._time_out)

    def request_started(self) -> None:
        """A request's headers are in: the server is the one to act until it has answered."""
        assert self._timer is not None  # connection_made called wait_for_request before the handler got a byte
        self._timer.cancel()

    def _time_out(self) -> None:
        self._drop(TIMEOUT, f"sent no complete request within {self._server.request_timeout} s")

    def _drop(self, ended: str, why: str) -> None:
        """Record this connection as `ended`, then drop it."""
        log.info("%s on %s %s: dropped", self.record.peer, self.record.listener, why)
        self.finish(ended)
        assert self._transport is not None  # start() made it, before any timer
        self._transport.abort()

    def shut_down(self) -> None:
        """Record this connection as ended by the server's shutdown, then drop it."""
        # start() made the transport, or finished the connection when it could not
        assert self._transport is not None
        if self.record.tls is None:
            self.record.tls = TlsRecord(ok=False, error="server shutdown during the handshake")
            self._give_back()
        self.finish(SHUTDOWN)
        self._transport.abort()  # during the handshake, silently

    def finish(self, ended: str) -> None:
        """Complete the record and hand it to the server, once."""
        if self._finished:
            return
        self._finished = True
        for timer in (self._timer, self._progress_check):
            if timer is not None:
                timer.cancel()
        self.record.duration = self.elapsed()
        self.record.ended = ended
        self._server._record(self)


def _host_port(host: str, port: int) -> str:
    """`host:port`, with an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
