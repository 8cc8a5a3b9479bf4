"""A TLS connection as an asyncio transport, on a non-blocking `ssl.SSLSocket`.

asyncio's own TLS (`loop.start_tls`) runs OpenSSL on memory buffers: each record it encrypts
is read out of one buffer into a new bytes object, handed to the TCP transport and copied
again into its buffer when the socket does not take it all, with a state machine in Python
around every step. Here OpenSSL writes its records straight into the kernel socket
(SSL_write on the socket's descriptor) and reads straight from it, and the event loop only
says when the socket is ready (`add_reader`, `add_writer`). Under the fleet benchmark
(bench/fleet.py) that took 11-15 % off the update server's CPU a download (README, Speed).

`TlsTransport(loop, sock, context, protocol, handshake_timeout)` shakes hands on an accepted
socket, then behaves as the transport asyncio's TLS gives a protocol, for what aiohttp's
request handler uses of it: write/writelines, flow control (`pause_writing` past the high
water mark of the write buffer, `resume_writing` under the low one, 64 and 16 KiB as
asyncio's), pause_reading/resume_reading, close (what is buffered goes out first, then a
close_notify, then the socket closes once the peer has sent its own close_notify or closed,
or after SHUTDOWN_TIMEOUT), abort (the socket closed at once: no close_notify), and
get_extra_info ("peername", "sockname", "socket", "sslcontext", "ssl_object", "peercert",
"cipher", "compression").

As asyncio's `start_tls`, the protocol hears `connection_made` only once the handshake is
done, with the first data right behind it; a failed handshake closes the socket and is
reported to the protocol's `handshake_failed(error)` instead, with the error `start_tls` would
raise for it: OpenSSL's ssl.SSLError, ConnectionResetError for a peer that closed in the
middle, ConnectionAbortedError at the timeout. One difference on the wire: an alert OpenSSL
sends when it refuses a handshake (protocol_version to a client that offers none of the
listener's versions) reaches the client here, where asyncio dropped it with the connection.

Python's ssl has no partial writes (SSL_MODE_ENABLE_PARTIAL_WRITE): a write that raises
SSLWantWriteError has gone out in part, and must be retried with the same bytes when the
socket is writable again (the head of the buffer here, never copied). Either direction may
want the other (TLS 1.2 renegotiation, a TLS 1.3 key update), so each operation waits for
whichever readiness OpenSSL asked for (not exercised by the tests: Python's ssl cannot make
a client start either).
"""

import asyncio
import collections
import contextlib
import os
import socket
import ssl
from typing import Any

HIGH_WATER = 64 * 1024  # asyncio's defaults for a transport's write buffer
LOW_WATER = HIGH_WATER // 4
READ_SIZE = 256 * 1024  # at most this much plaintext a read (asyncio's TLS reads as much)
# How long a close waits for the peer's close_notify, as asyncio's TLS (constants.SSL_SHUTDOWN_TIMEOUT).
SHUTDOWN_TIMEOUT = 30.0
DRAIN_READS = 64  # reads (64 KB) at most of what a closing socket holds unread (see _drain)
# OpenSSL writes each record (16 KB at most) to the socket on its own, and the server's sockets
# have TCP_NODELAY (as asyncio's): each write would leave as a TCP segment of its own, where the kernel could
# send 64 KB ones (loopback), each segment costing both ends. Corked while a buffer of more
# than CORK_ABOVE bytes goes out, the socket sends full segments (Linux's TCP_CORK).
CORKS = hasattr(socket, "TCP_CORK")  # Linux
CORK_ABOVE = 16 * 1024
READ, WRITE = "read", "write"  # the readiness an operation waits for

_DROPPED = bytearray(64 * 1024)  # where _drain reads to (shared: what it holds is never used)
_HANDSHAKE, _OPEN, _FLUSHING, _SHUTDOWN, _CLOSED = range(5)


class TlsTransport(asyncio.Transport):
    """A TLS server connection on an accepted, non-blocking TCP socket `sock`: the handshake
    with `context` starts at once and fails after `handshake_timeout` seconds."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, context: ssl.SSLContext,
                 protocol: Any, handshake_timeout: float) -> None:
        super().__init__()
        self._loop = loop
        self._info: dict[str, Any] = {"sslcontext": context}
        for name, get in (("peername", sock.getpeername), ("sockname", sock.getsockname)):
            with contextlib.suppress(OSError):  # a peer gone already: its handshake fails below
                self._info[name] = get()
        self._sock = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False,
                                         suppress_ragged_eofs=False)  # a TCP EOF is not a close_notify
        self._info["socket"] = self._sock
        self._fd = self._sock.fileno()
        self._protocol = protocol
        self._state = _HANDSHAKE
        self._buffer: collections.deque[bytes | memoryview] = collections.deque()
        self._buffer_size = 0
        self._high, self._low = HIGH_WATER, LOW_WATER
        self._writing_paused = False  # the protocol was told to pause writing
        self._reading_paused = False  # the protocol asked not to be given data
        self._write_wants: str | None = None  # what the handshake, a write or the shutdown waits for
        self._read_wants: str | None = READ  # what reading waits for
        self._reader = self._writer = False  # registered with the loop
        self._peer_gone = False  # the peer closed TCP without a close_notify
        self._timer: asyncio.TimerHandle | None = loop.call_later(handshake_timeout, self._handshake_timed_out,
                                                                  handshake_timeout)
        self._handshake()

    # The transport's interface.

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._info.get(name, default)

    def is_closing(self) -> bool:
        return self._state != _OPEN

    def is_reading(self) -> bool:
        return self._state == _OPEN and not self._reading_paused

    def pause_reading(self) -> None:
        self._reading_paused = True
        self._watch()

    def resume_reading(self) -> None:
        if self._reading_paused:
            self._reading_paused = False
            if self._state == _OPEN:  # OpenSSL may hold decrypted bytes the socket no longer signals
                self._loop.call_soon(self._read)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._high = HIGH_WATER if high is None else high
        self._low = self._high // 4 if low is None else low
        if not 0 <= self._low <= self._high:
            raise ValueError(f"high ({self._high!r}) must be >= low ({self._low!r}) must be >= 0")
        self._control_writing()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low, self._high

    def get_write_buffer_size(self) -> int:
        """Bytes written and not yet taken by OpenSSL whole (the head may be out in part)."""
        return self._buffer_size

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._state != _OPEN or not data:
            return  # as asyncio's TLS transport, a write after close goes nowhere
        if isinstance(data, bytearray) or isinstance(data, memoryview) and not data.readonly:
            data = bytes(data)  # the caller may change it before it is out
        self._buffer.append(data)
        self._buffer_size += len(data)
        if self._write_wants is None:
            self._flush()
        self._control_writing()
        self._watch()

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def can_write_eof(self) -> bool:
        return False

    def write_eof(self) -> None:
        raise NotImplementedError("TLS has no half-close")

    def close(self) -> None:
        """Send what is buffered, then a close_notify, then close the socket."""
        if self._state == _OPEN:
            self._state = _FLUSHING
            self._timer = self._loop.call_later(SHUTDOWN_TIMEOUT, self._shutdown_timed_out)
            self._read_wants = None
            self._flush()
            self._watch()

    def abort(self) -> None:
        """Close the socket at once, buffered bytes and all, without a close_notify; after a
        handshake the protocol hears connection_lost(None), during one nothing."""
        self._close_socket(None)

    # Readiness.

    def _watch(self) -> None:
        """Ask the loop for the readiness the pending operations wait for, and no other."""
        if self._state == _CLOSED:
            return
        reading = self._state == _OPEN and not self._reading_paused
        reader = self._write_wants == READ or reading and self._read_wants == READ
        writer = self._write_wants == WRITE or reading and self._read_wants == WRITE
        if reader != self._reader:
            if reader:
                self._loop.add_reader(self._fd, self._on_ready, READ)
            else:
                self._loop.remove_reader(self._fd)
            self._reader = reader
        if writer != self._writer:
            if writer:
                self._loop.add_writer(self._fd, self._on_ready, WRITE)
            else:
                self._loop.remove_writer(self._fd)
            self._writer = writer

    def _on_ready(self, readiness: str) -> None:
        if self._state == _HANDSHAKE:
            self._handshake()
        elif self._state == _SHUTDOWN:
            self._shutdown()
        else:
            if self._write_wants == readiness:
                self._flush()
            if self._state == _OPEN and self._read_wants == readiness:
                self._read()
            self._watch()

    # The handshake.

    def _handshake(self) -> None:
        try:
            self._sock.do_handshake()
        except ssl.SSLWantReadError:
            self._write_wants = READ
        except ssl.SSLWantWriteError:
            self._write_wants = WRITE
        except ssl.SSLEOFError:  # the peer closed mid-handshake: what asyncio's start_tls raises then
            self._handshake_failed(ConnectionResetError())
            return
        except OSError as error:  # an ssl.SSLError, a reset
            self._handshake_failed(error)
            return
        else:
            self._state, self._write_wants = _OPEN, None
            self._cancel_timer()
            self._info.update(ssl_object=self._sock, peercert=self._sock.getpeercert(),
                               cipher=self._sock.cipher(), compression=self._sock.compression())
            self._protocol.connection_made(self)
            self._read()  # the first request may have come with the client's Finished
        self._watch()

    def _handshake_timed_out(self, timeout: float) -> None:
        self._handshake_failed(ConnectionAbortedError(
            f"SSL handshake is taking longer than {timeout} seconds: aborting the connection"))

    def _handshake_failed(self, error: OSError) -> None:
        self._close_socket(None)
        self._loop.call_soon(self._protocol.handshake_failed, error)  # as connection_lost: after what is due

    # Data.

    def _read(self) -> None:
        """Hand the protocol what has come in, then an end if the peer ended."""
        if self._state != _OPEN or self._reading_paused:
            return
        received: list[bytes] = []
        ended: str | None = None
        self._read_wants = READ
        try:
            while data := self._sock.recv(READ_SIZE):
                received.append(data)
            ended = "close_notify"
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLWantWriteError:
            self._read_wants = WRITE
        except ssl.SSLEOFError:
            ended = "eof"  # a TCP close without close_notify
        except OSError as error:
            self._close_socket(error)
            return
        if received:
            self._protocol.data_received(received[0] if len(received) == 1 else b"".join(received))
        if ended and self._state == _OPEN:
            self._peer_gone = ended == "eof"  # then no close_notify goes to it, as with asyncio's TLS
            self._protocol.eof_received()  # its answer does not matter: TLS has no half-close
            self.close()
        self._watch()

    def _flush(self) -> None:
        """Hand OpenSSL the buffered bytes, the head first, until the socket is full."""
        self._write_wants = None
        cork = CORKS and self._buffer_size > CORK_ABOVE
        if cork:
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        error = self._send_buffer()
        if error is not None:
            self._close_socket(error)
            return
        if cork:
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)  # out goes the last, partial segment
        if self._state == _FLUSHING and not self._buffer:
            self._state = _SHUTDOWN
            self._shutdown()
        else:
            self._control_writing()

    def _send_buffer(self) -> OSError | None:
        """SSL_write the buffer, whole pieces, until it is empty or the socket full; what
        went wrong, if something did (a reset, a broken pipe)."""
        while self._buffer:
            data = self._buffer[0]
            try:
                self._sock.send(data)  # all of it, or an exception
            except ssl.SSLWantWriteError:
                self._write_wants = WRITE
                return None
            except ssl.SSLWantReadError:
                self._write_wants = READ
                return None
            except OSError as error:
                return error
            self._buffer.popleft()
            self._buffer_size -= len(data)
        return None

    def _control_writing(self) -> None:
        if self._state == _CLOSED:
            return
        if self._buffer_size > self._high and not self._writing_paused:
            self._writing_paused = True
            self._protocol.pause_writing()
        elif self._buffer_size <= self._low and self._writing_paused:
            self._writing_paused = False
            self._protocol.resume_writing()

    # The end.

    def _shutdown(self) -> None:
        """Send a close_notify and wait for the peer's (OpenSSL drops what data comes before
        it), then close the socket."""
        if self._peer_gone:
            self._close_socket(None)
            return
        try:
            self._sock.unwrap()
        except ssl.SSLWantReadError:
            self._write_wants = READ
        except ssl.SSLWantWriteError:
            self._write_wants = WRITE
        except OSError as error:  # the peer closed or reset without its close_notify
            self._close_socket(error)
            return
        else:
            self._close_socket(None)
            return
        self._watch()

    def _shutdown_timed_out(self) -> None:
        self._close_socket(TimeoutError("SSL shutdown timed out"))

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _close_socket(self, error: Exception | None) -> None:
        """Close the socket now; after a handshake, the protocol hears connection_lost(error)."""
        if self._state == _CLOSED:
            return
        handshaken = self._state != _HANDSHAKE
        self._state = _CLOSED
        self._cancel_timer()
        if self._reader:
            self._loop.remove_reader(self._fd)
        if self._writer:
            self._loop.remove_writer(self._fd)
        self._reader = self._writer = False
        self._buffer.clear()
        self._buffer_size = 0
        _drain(self._fd)
        self._sock.close()
        if handshaken:
            self._loop.call_soon(self._protocol.connection_lost, error)


def _drain(fd: int) -> None:
    """Read and drop what the kernel holds for socket `fd`: closed with bytes unread, a socket
    sends a reset instead of a FIN, and the peer may lose what it has not read yet. OpenSSL
    reads no further than the record it needs (the rest of a plain-HTTP request after its
    first five bytes stays in the kernel); asyncio's transports had read it all."""
    try:
        for _ in range(DRAIN_READS):  # a peer that keeps sending does not keep this loop
            if not os.readv(fd, [_DROPPED]):
                return
    except OSError:  # nothing more (EAGAIN), or a reset
        pass
