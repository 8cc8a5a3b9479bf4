"""The update server's record: one JSON line per connection, appended when it closes.

Each `ConnectionRecord` holds the TLS outcome, including the alert a client sends when it
refuses the certificate, then every request with its headers exactly as received and how much
of the body went out. `ServerLog` reads a record back for a test's verdict.
"""

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)
progress = logging.getLogger("ota_rig.progress")  # what `rig run` shows while a scenario runs
CLOSED = "closed"
SHUTDOWN = "server shutdown"
TIMEOUT = "timeout"
NOT_READING = "not reading"
_ALERT_REASON = re.compile(r"(?:SSLV3|TLSV1|TLSV13)_ALERT_(?P<name>\w+)")


def parse_version(text: str) -> tuple[tuple[int, int, str], ...]:
    """A firmware version as a key that compares the way people read versions.

    The dotted parts of a version compare left to right: numeric parts as numbers, so
    "0.10" > "0.9", other parts as text, and a text part after any number. Trailing zero
    parts do not count, so "1.0" == "1.0.0"; otherwise a longer version is the newer one.
    A number compares by its count of digits, then digit by digit, so that any header a
    client sends is a key: int() refuses more than 4300 digits.
    """
    parts = []
    for part in text.strip().split("."):
        if part.isascii() and part.isdecimal():
            digits = part.lstrip("0")
            parts.append((0, len(digits), digits))
        else:
            parts.append((1, 0, part))
    while parts and parts[-1] == (0, 0, ""):
        parts.pop()
    return tuple(parts)


def tls_alert(error: BaseException) -> str | None:
    """The TLS alert a peer sent, by its RFC 8446 name, if `error` reports one.

    OpenSSL names a received alert in its reason code, which Python keeps as `reason`:
    TLSV1_ALERT_UNKNOWN_CA is `unknown_ca`, SSLV3_ALERT_BAD_CERTIFICATE `bad_certificate`.
    Errors of this side's own (a timeout, a reset, garbage instead of a ClientHello) have none.
    """
    match = _ALERT_REASON.fullmatch(getattr(error, "reason", None) or "")
    return match["name"].lower() if match else None


@dataclass
class RequestRecord:
    """One HTTP request: what the client sent, what it was answered, how much body went out.

    `headers` are (name, value) pairs in the order and case received. `bytes_sent` counts the
    body bytes handed to the connection (headers not counted), so a client that drops
    mid-body shows how far it got; `complete` is true once the whole response was handed to
    the connection. Handed, not received: the kernel's socket buffers take megabytes that the
    client may never read (on loopback a whole app image), so `complete` says the server did
    its part; what the device got is the device's evidence to tell.
    Times are seconds since the connection was accepted: `at` when the request's headers were
    in, `body_started` when its body began to go out and `body_ended` when the last of it was
    handed to the connection (`body_started` if none was), None for an answer without a body.
    """

    method: str
    path: str
    version: str
    headers: list[tuple[str, str]]
    status: int | None = None
    content_length: int | None = None
    bytes_sent: int = 0
    complete: bool = False
    at: float | None = None
    body_started: float | None = None
    body_ended: float | None = None

    def header(self, name: str) -> str | None:
        """The first value of header `name`, matched regardless of case as HTTP does."""
        return next((value for key, value in self.headers if key.lower() == name.lower()), None)


@dataclass
class TlsRecord:
    """How the TLS handshake went: the certificate the server presented (its ServerCert
    name), version and cipher if it succeeded, else the error text and the alert the client
    sent (None when the failure was not a client's alert); `seconds` from the connection's
    accept to the handshake's end."""

    ok: bool
    certificate: str | None = None
    version: str | None = None
    cipher: str | None = None
    error: str | None = None
    alert: str | None = None
    seconds: float | None = None


@dataclass
class ConnectionRecord:
    """One TCP connection to a listener, from accept to close.

    `start` is ISO 8601 UTC, `duration` seconds; `sni` the server name the client asked for;
    `error` what the server refused before any route saw a request (aiohttp's parser: "400
    Invalid method encountered"); `ended` is "closed", "timeout" for a client the server
    dropped for keeping it waiting for a request, "not reading" for one it dropped for taking
    none of a response for too long (see UpdateServer), or "server shutdown" for a
    connection still open when the server stopped.
    """

    listener: str
    peer: str
    start: str
    duration: float | None = None
    sni: str | None = None
    tls: TlsRecord | None = None
    requests: list[RequestRecord] = field(default_factory=list)
    error: str | None = None
    ended: str | None = None

    def to_json(self) -> str:
        """One JSON object, the fields in their order, as `dataclasses.asdict` would give them,
        built from the instances' own dicts: asdict deep-copies every header pair, which cost a
        tenth of the server's CPU under a fleet."""
        record = {**vars(self), "tls": None if self.tls is None else vars(self.tls),
                  "requests": [vars(request) for request in self.requests]}
        return json.dumps(record)

    @classmethod
    def from_json(cls, line: str) -> "ConnectionRecord":
        data = json.loads(line)
        data["tls"] = TlsRecord(**data["tls"]) if data["tls"] else None
        data["requests"] = [
            RequestRecord(**{**request, "headers": [tuple(pair) for pair in request["headers"]]})
            for request in data["requests"]
        ]
        return cls(**data)


class ServerLog:
    """Reads a server's record back: the connections closed so far, in the order they closed."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def connections(self) -> list[ConnectionRecord]:
        if not self.path.exists():
            return []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        return [ConnectionRecord.from_json(line) for line in lines if line.strip()]

    def requests(self) -> list[RequestRecord]:
        return [request for connection in self.connections() for request in connection.requests]

    def downloads(self) -> list[RequestRecord]:
        """Requests answered 200 with a body, complete or not."""
        return [r for r in self.requests() if r.status == 200 and r.bytes_sent > 0]

    def handshake_failures(self) -> list[ConnectionRecord]:
        return [c for c in self.connections() if c.tls is not None and not c.tls.ok]
