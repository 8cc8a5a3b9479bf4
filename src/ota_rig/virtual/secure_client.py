"""WiFiClientSecure (arduino-esp32 2.0.x; NetworkClientSecure on 3.x): the sketch's TLS
client over the twin's TLS client (tls.py), with the core's log lines and lastError().

Every timeout here is in device seconds (the chip's clock, which a time lapse speeds up).
`read_bytes` is Stream::readBytes() as each core has it (section 10 of the reference):
2.0.14 reads byte by byte with timedRead(), waiting up to the Stream timeout (1000 ms: the
secure client's setTimeout() never reaches Stream) for each; 3.x's NetworkClient::readBytes()
stops at once when the secure client's read() has nothing (it returns -1).

On a failed connect the core logs (shared/reference/esp32-ota-device.md, section 8.1), at
debug level error: ssl_client.cpp's `_handle_error()` line with the Mbed TLS code and text,
then the client's `connect(): start_ssl_client: <code>` line. A TCP failure logs the socket
error instead. An empty CA bundle is still a bundle: TCP connects, then Mbed TLS refuses to
parse it (-8576) before any TLS byte is sent. (3.x also logs `Actual TLS start postponed.` at
info level, which the twin does not model.)
"""

from __future__ import annotations

import logging
import os

from ota_rig.virtual import tls
from ota_rig.virtual.arduino import Core
from ota_rig.virtual.mbedtls_errors import ERR_PEER_CLOSE_NOTIFY, mbedtls_strerror

log = logging.getLogger(__name__)

RIG_LIMITATION = "rig limitation:"  # how the twin's log marks one (ota_rig/records/ reads it)
LWIP_FIRST_FD = 48  # lwIP numbers its sockets from here; the device's logs show fd 48..54


class SecureClient:
    """One WiFiClientSecure object: setCACert() (or setInsecure(): `ca_bundle` None), connect(),
    read/write, stop(), lastError()."""

    def __init__(self, core: Core, ca_bundle: str | None) -> None:
        self.core = core
        self.ca_bundle = ca_bundle
        self.session: tls.TlsSession | None = None
        self.last_error = 0
        self.last_error_text = ""
        self.failure: tls.TlsError | tls.RigLimitation | None = None  # why the last connect() failed
        # Where the device's DNS sends the URL's host: None is the twin's network (every name is
        # 127.0.0.1); a device client on the host's network sets the host's own answer.
        self.address: str | None = None
        self._buffer = b""
        self._eof = False

    @property
    def connected(self) -> bool:
        return self.session is not None and not self._eof

    @property
    def peer_certificate(self):
        return self.session.peer_certificate if self.session else None

    def connect(self, host: str, port: int, timeout: float) -> bool:
        """start_ssl_client(): TCP, TLS handshake, verification. False (and the core's log
        lines) on any failure; `last_error` keeps the Mbed TLS code, as lastError() reports."""
        self.stop()
        try:
            self.session = tls.connect(host, port, self.ca_bundle, self.core.profile, timeout=timeout,
                                       address=self.address, unix_time=self.core.unix_time())
        except tls.TlsError as err:
            self.failure = err
            self._log_failure(err)
            return False
        except tls.RigLimitation as limit:
            self.failure = limit
            # Not the device's verdict: the twin cannot tell what the device does next, so it
            # prints nothing more and says why in its own log (the rig's record reads it there).
            log.warning("%s %s; the app stops here", RIG_LIMITATION, limit)
            self.core.halt()
        self.last_error, self.last_error_text, self.failure = 0, "", None
        self._buffer, self._eof = b"", False
        return True

    def _log_failure(self, err: tls.TlsError) -> None:
        profile = self.core.profile
        if err.stage == "tcp" and err.device_errno:
            self.core.log(
                "E",
                "ssl_client.cpp",
                profile.socket_error_line,
                "start_ssl_client",
                f'connect on fd {LWIP_FIRST_FD}, errno: {err.device_errno}, "{os.strerror(err.device_errno)}"',
            )
        # -1 (a handshake timeout) and a peer's close_notify are the codes _handle_error() does
        # not log; a CA bundle that does not parse fails in start_ssl_client() itself.
        elif err.code not in (-1, ERR_PEER_CLOSE_NOTIFY):
            site = profile.ca_error_site if err.stage == "setup" else profile.tls_error_site
            self.core.log(
                "E", "ssl_client.cpp", profile.ssl_client_line, "_handle_error", f"[{site}]: ({err.code}) {err.text}"
            )
        self.last_error = err.code if err.stage != "tcp" else -1
        self.last_error_text = mbedtls_strerror(self.last_error)
        self.core.log(
            "E",
            profile.secure_client_file,
            profile.secure_client_line,
            "connect",
            profile.connect_failed_text % self.last_error,
        )

    def write(self, data: bytes) -> bool:
        assert self.session is not None
        try:
            self.session.send(data)
            return True
        except (tls.TlsError, OSError) as err:
            log.info("write failed: %s", err)
            self._eof = True
            return False

    def _fill(self, timeout: float) -> bool:
        """Wait up to `timeout` device seconds for more bytes; False if none came (or the peer
        closed)."""
        if self._eof or self.session is None:
            return False
        clock = self.core.chip.clock
        started = clock.waiting()
        try:
            data = self.session.recv(16384, clock.real_seconds(timeout))
        except tls.TlsTimeout:
            return False
        except (tls.TlsError, OSError) as err:
            log.info("read failed: %s", err)
            data = b""
        finally:
            clock.waited(started, timeout)
        if not data:
            self._eof = True
            return False
        self._buffer += data
        return True

    def read_line(self, timeout: float) -> bytes | None:
        """A header line without its CR LF; None on timeout or a closed connection."""
        clock = self.core.chip.clock
        deadline = clock.now() + timeout
        while b"\n" not in self._buffer:
            if not self._fill(deadline - clock.now()):
                return None
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.rstrip(b"\r")

    def read_bytes(self, count: int) -> bytes:
        """Stream::readBytes(): up to `count` bytes. 2.0.x: fewer when no byte came for the
        Stream timeout, or at EOF (which it also waits out: read() keeps returning -1).
        3.x: fewer as soon as nothing is buffered."""
        profile = self.core.profile
        while len(self._buffer) < count:
            if not self._fill(profile.stream_timeout if profile.read_bytes_waits else 0.0):
                if profile.read_bytes_waits and not self.connected:
                    self.core.chip.sleep(profile.stream_timeout)  # timedRead() spins it out
                break
        data, self._buffer = self._buffer[:count], self._buffer[count:]
        return data

    def peek(self) -> int:
        """The next byte without consuming it, or -1: timedRead(), waiting up to the Stream
        timeout (2.0.14 WiFiClientSecure::peek; assumed the same on 3.x)."""
        if not self._buffer:
            self._fill(self.core.profile.stream_timeout)
        return self._buffer[0] if self._buffer else -1

    def __enter__(self) -> "SecureClient":
        return self

    def __exit__(self, *exc: object) -> None:
        """The client going out of scope at the end of loop(): its destructor calls stop().
        A reset in the middle unwinds the app the same way, so the twin's connection closes;
        a real chip's would vanish without a FIN, left to the server's timeouts (a difference
        kept so that a reset does not hold a server connection for its 10 s request timeout)."""
        self.stop()

    def stop(self) -> None:
        if self.session is not None:
            self.session.close()  # stop_ssl_socket(): the socket closes without close_notify
            self.session = None
