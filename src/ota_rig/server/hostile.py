"""A hostile client: abuse a TLS server the way scanners, fuzzers and slowloris do.

Each `Case` is one named way to misbehave on one connection: a bad method, a broken request
line, headers over any sane limit, a path out of the firmware folder, a body where none
belongs, broken chunked coding, a sender too slow to finish, bytes that are not TLS at all,
a client that hangs up mid-request. `flood` runs N of them (cycling through the catalogue)
with a bounded number of connections open at once, and classifies each by the bytes that
actually came back::

    result = flood("127.0.0.1", port, ca_pem, "ota.local", secret=folder / "canary.bin")
    print(result.summary())
    assert not result.findings          # no traversal answered 200

What came back (`Attempt.outcome`): "http <status>" from the first line the server sent,
"tls alert" for a TLS alert record sent to a client that spoke no TLS, "closed" when the
server closed or reset the connection without either, "timeout" when it was still open and
silent at the client's deadline, "hung up" when the case itself closed without reading.

The client reads until the server closes: a server that answers but then keeps a hostile
connection open shows as `Attempt.ending` "deadline".

`Attacker` runs a `flood` in a process of its own, as a real attacker would be, so that it does
not share the server's interpreter: `python -m ota_rig.server.hostile`, the flood's arguments
in and its `Flood` out (pickled, between two processes of this package). It is a plain child
process rather than a multiprocessing one, which would leave multiprocessing's resource tracker
running for as long as the process that started it.
"""

from __future__ import annotations

import asyncio
import base64
import pickle
import random
import re
import socket
import ssl
import struct
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

KEEP = 65536  # bytes of each answer kept: the status line, and enough to spot a leaked file
_STATUS = re.compile(rb"HTTP/\d\.\d (\d{3})")
TLS_ALERT = 0x15  # the content type of a TLS alert record


@dataclass(frozen=True)
class Case:
    """One way to misbehave on one connection.

    `data` goes out at once after the TLS handshake (in the clear when `tls` is false, to
    the same TLS port), then `slow` one byte every `pace` seconds. `then` is what the client
    does next: "read" until the server closes, "close" at once, "reset" at once with a TCP RST.
    """

    name: str
    group: str
    data: bytes
    tls: bool = True
    slow: bytes = b""
    pace: float = 0.0
    then: str = "read"


def catalogue(secret: Path, seed: int = 0) -> list[Case]:
    """Every case, grouped. `secret` is a file next to the firmware folder that no request
    may read: traversal cases aim at it as `../<name>` and by its absolute path."""
    rng = random.Random(seed)
    name = secret.name

    def get(path: str, *headers: str, version: str = "HTTP/1.0") -> bytes:
        lines = [f"GET {path} {version}", "Host: ota.local", *headers]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    device = ("x-ESP32-STA-MAC: 24:6F:28:AA:BB:CC",)
    return [
        Case("method FOO", "bad method", b"FOO /update HTTP/1.0\r\n\r\n"),
        Case("method GET NUL", "bad method", b"GET\x00 /update HTTP/1.0\r\n\r\n"),
        Case("method lower-case get", "bad method", b"get /update HTTP/1.0\r\n\r\n"),
        Case("method CONNECT", "bad method", b"CONNECT ota.local:443 HTTP/1.0\r\n\r\n"),
        Case("method TRACE", "bad method", b"TRACE /update HTTP/1.0\r\n\r\n"),
        Case("method DELETE", "bad method", b"DELETE /firmware/ota_https.ino.bin HTTP/1.0\r\n\r\n"),
        Case("method of 10 kB", "bad method", b"A" * 10240 + b" /update HTTP/1.0\r\n\r\n"),
        Case("line without version", "request line", b"GET /update\r\n\r\n"),
        Case("line HTTP/9.9", "request line", b"GET /update HTTP/9.9\r\n\r\n"),
        Case("line of random bytes", "request line", rng.randbytes(200) + b"\r\n\r\n"),
        Case("line with bare LF", "request line", b"GET /update HTTP/1.0\nHost: ota.local\n\n"),
        Case("line without spaces", "request line", b"GET/updateHTTP/1.0\r\n\r\n"),
        Case("line with a control byte", "request line", b"GET /up\x7fdate HTTP/1.0\r\n\r\n"),
        Case("line HTTP/2 preface", "request line", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
        Case("path of 10 kB", "request line", get("/" + "a" * 10240)),
        Case("header of 64 kB", "huge headers", get("/update", "X-Big: " + "a" * 65536)),
        Case("10,000 headers", "huge headers", get("/update", *[f"X-h{i}: v" for i in range(10_000)])),
        Case("header without colon", "huge headers", get("/update", "NoColon")),
        Case("header folded", "huge headers", get("/update", "X-a: b", "  folded")),
        Case("header with NUL", "huge headers", get("/update", "X-a: b\x00c")),
        *[Case(f"traversal {path}", "traversal", get(path)) for path in (
            f"/firmware/../{name}",
            f"/firmware/..%2f{name}",
            f"/firmware/%2e%2e%2f{name}",
            f"/firmware/%2e%2e/{name}",
            f"/firmware/%252e%252e%252f{name}",  # double encoding
            f"/firmware/..%5c{name}",
            f"/firmware/..\\{name}",
            f"/firmware/%c0%ae%c0%ae%c0%af{name}",  # overlong UTF-8 for ../
            f"/firmware/....//{name}",
            f"/firmware/{secret}",  # absolute: /firmware//abs/path
            f"/firmware/{str(secret).replace('/', '%2f')}",
            f"/firmware/..%2f{name}%00.bin",
            "/firmware/../../../../../../../../etc/passwd",
            f"/update/../{name}",
            f"/update/..%2f{name}",
            f"/update?file=../{name}",
            f"/{name}",
        )],
        Case("traversal raw NUL", "traversal", get(f"/firmware/../{name}\x00.bin")),
        Case("update without ESP32 headers", "not a device", get("/update")),
        Case("update with MAC only", "not a device", get("/update", *device)),
        Case("update version of 5000 digits", "not a device",
             get("/update", *device, "x-ESP32-version: 1" + "0" * 5000)),
        Case("update version not a number", "not a device",
             get("/update", *device, "x-ESP32-version: ../../\xff")),
        Case("GET with Content-Length 10^14", "bodies", get("/update", "Content-Length: 99999999999999") + b"abc"),
        Case("GET with 1 MB body", "bodies", get("/update", "Content-Length: 1048576") + b"\xe9" * 1048576),
        Case("Content-Length -1", "bodies", get("/update", "Content-Length: -1")),
        Case("two Content-Lengths", "bodies", get("/update", "Content-Length: 5", "Content-Length: 6") + b"abcdef"),
        Case("chunked size not hex", "chunked",
             get("/update", "Transfer-Encoding: chunked") + b"zz\r\nabc\r\n0\r\n\r\n"),
        Case("chunked size overflow", "chunked",
             get("/update", "Transfer-Encoding: chunked", version="HTTP/1.1") + b"f" * 40 + b"\r\nabc\r\n"),
        Case("chunked and Content-Length", "chunked",
             get("/update", "Transfer-Encoding: chunked", "Content-Length: 3", version="HTTP/1.1") + b"0\r\n\r\n"),
        Case("chunked never ends", "chunked",
             get("/update", "Transfer-Encoding: chunked", version="HTTP/1.1") + b"5\r\nabc"),
        Case("20 pipelined requests", "keep-alive", get("/firmware/missing.bin", version="HTTP/1.1") * 20),
        Case("idle after a response", "keep-alive", get("/update", version="HTTP/1.1")),
        Case("slowloris headers", "slow sender", b"GET /update HTTP/1.1\r\nHost: ota.local\r\n",
             slow=b"X-a: b\r\n" * 4, pace=0.1),
        Case("slow request line", "slow sender", b"", slow=b"GET /update HTTP/1.0\r\n", pace=0.1),
        Case("plain HTTP to the TLS port", "TLS garbage", get("/update"), tls=False),
        Case("truncated ClientHello", "TLS garbage", client_hello()[:60], tls=False),
        Case("random bytes", "TLS garbage", rng.randbytes(512), tls=False),
        Case("TLS record of 64 kB announced", "TLS garbage", b"\x16\x03\x01\xff\xff" + rng.randbytes(100), tls=False),
        Case("never starts TLS", "TLS garbage", b"", tls=False),
        Case("ClientHello, then hang up", "closed mid-request", client_hello(), tls=False, then="close"),
        Case("hang up in the request line", "closed mid-request", b"GET /upd", then="close"),
        Case("hang up in the headers", "closed mid-request", b"GET /update HTTP/1.0\r\nHost: ota", then="close"),
        Case("reset in the headers", "closed mid-request", b"GET /update HTTP/1.0\r\nHost: ota", then="reset"),
        Case("hang up before the answer", "closed mid-request", get("/firmware/missing.bin"), then="close"),
    ]


def client_hello() -> bytes:
    """The ClientHello Python's ssl sends first, taken from a handshake run in memory."""
    client = ssl.create_default_context().wrap_bio(ssl.MemoryBIO(), outgoing := ssl.MemoryBIO(),
                                                  server_hostname="ota.local")
    try:
        client.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


@dataclass
class Attempt:
    """One case run on one connection: what came back, how it ended, how long it took."""

    case: Case
    outcome: str
    ending: str  # "server closed", "deadline" (still open), "client closed", "no connection"
    received: bytes = field(repr=False)
    seconds: float

    @property
    def status(self) -> int | None:
        match = _STATUS.match(self.received)
        return int(match[1]) if match else None


@dataclass
class Flood:
    """The attempts of a `flood`, with their counts."""

    attempts: list[Attempt]
    seconds: float

    def by_outcome(self) -> Counter[str]:
        return Counter(a.outcome for a in self.attempts)

    def by_ending(self) -> Counter[str]:
        return Counter(a.ending for a in self.attempts)

    def by_case(self) -> dict[str, Counter[str]]:
        cases: dict[str, Counter[str]] = {}
        for attempt in self.attempts:
            cases.setdefault(attempt.case.name, Counter())[attempt.outcome] += 1
        return cases

    @property
    def findings(self) -> list[Attempt]:
        """Traversal attempts the server answered 200: each one a file it should not serve."""
        return [a for a in self.attempts if a.case.group == "traversal" and a.status == 200]

    def to_json(self) -> dict:
        return {"attempts": len(self.attempts), "seconds": round(self.seconds, 3),
                "per_second": round(len(self.attempts) / self.seconds, 1),
                "by_outcome": dict(self.by_outcome()), "by_ending": dict(self.by_ending()),
                "findings": [a.case.name for a in self.findings],
                "by_case": {name: dict(counts) for name, counts in self.by_case().items()}}

    def summary(self) -> str:
        """A table: each case and its outcomes, then the totals."""
        rows = [f"{name:<48} {', '.join(f'{k} x{v}' for k, v in sorted(counts.items()))}"
                for name, counts in self.by_case().items()]
        totals = ", ".join(f"{k} x{v}" for k, v in sorted(self.by_outcome().items()))
        endings = ", ".join(f"{k} x{v}" for k, v in sorted(self.by_ending().items()))
        return "\n".join([*rows, f"{len(self.attempts)} attempts in {self.seconds:.2f} s "
                          f"({len(self.attempts) / self.seconds:.0f}/s): {totals}", f"endings: {endings}",
                          f"findings: {len(self.findings)}"])


def flood(host: str, port: int, ca_pem: str, server_hostname: str, *, secret: Path, count: int = 1000,
          concurrency: int = 50, deadline: float = 5.0, seed: int = 0) -> Flood:
    """Run `count` cases of the catalogue, in turn, against a TLS server at host:port that
    presents a certificate for `server_hostname` from the CA `ca_pem`, at most `concurrency`
    connections at once; each connection is given up after `deadline` seconds."""
    cases = catalogue(secret, seed)
    context = ssl.create_default_context(cadata=ca_pem)
    started = time.monotonic()
    attempts = asyncio.run(_flood(host, port, context, server_hostname,
                                  [cases[i % len(cases)] for i in range(count)], concurrency, deadline))
    return Flood(attempts, time.monotonic() - started)


async def _flood(host: str, port: int, context: ssl.SSLContext, server_hostname: str, cases: list[Case],
                 concurrency: int, deadline: float) -> list[Attempt]:
    slots = asyncio.Semaphore(concurrency)

    async def one(case: Case) -> Attempt:
        async with slots:
            return await _attempt(host, port, context, server_hostname, case, deadline)

    return await asyncio.gather(*(one(case) for case in cases))


class _Catch(asyncio.Protocol):
    """Keeps the first KEEP bytes the server sends and notes when the connection ends."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.lost: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.received += data[:KEEP - len(self.received)]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set_result(exc)


async def _attempt(host: str, port: int, context: ssl.SSLContext, server_hostname: str, case: Case,
                   deadline: float) -> Attempt:
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    try:
        if case.tls:
            transport, catch = await loop.create_connection(
                _Catch, host, port, ssl=context, server_hostname=server_hostname, ssl_handshake_timeout=deadline)
        else:
            transport, catch = await loop.create_connection(_Catch, host, port)
    except (OSError, asyncio.TimeoutError):  # no TCP connection, or no TLS handshake
        return Attempt(case, "connect failed", "no connection", b"", time.monotonic() - started)
    transport.write(case.data)
    for byte in case.slow:
        if catch.lost.done() or time.monotonic() - started > deadline:
            break
        await asyncio.sleep(case.pace)
        transport.write(bytes([byte]))
    if case.then != "read":
        if case.then == "reset":  # SO_LINGER with a zero timeout: close() sends RST, not FIN
            transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
        return Attempt(case, "hung up", "client closed", b"", time.monotonic() - started)
    try:
        await asyncio.wait_for(asyncio.shield(catch.lost), deadline - (time.monotonic() - started))
        ending = "server closed"
    except asyncio.TimeoutError:
        ending = "deadline"
        transport.abort()
    received = bytes(catch.received)
    return Attempt(case, _outcome(received, case, ending), ending, received, time.monotonic() - started)


def _outcome(received: bytes, case: Case, ending: str) -> str:
    """What the server answered, from the bytes alone."""
    if status := _STATUS.match(received):
        return f"http {status[1].decode()}"
    if not case.tls and received[:1] == bytes([TLS_ALERT]):
        return "tls alert"
    return "closed" if ending == "server closed" else "timeout"


class Attacker:
    """`flood(...)` in a child process, started at once: `done()` while it runs, `result()` to
    wait for its Flood. Use as a context manager: leaving it kills a flood still running."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        given = base64.b64encode(pickle.dumps((args, kwargs))).decode()
        self._process = subprocess.Popen([sys.executable, "-m", __name__, given],
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def done(self) -> bool:
        return self._process.poll() is not None

    def result(self, timeout: float | None = None) -> Flood:
        """The flood's outcome; RuntimeError with its last words if the process failed."""
        out, err = self._process.communicate(timeout=timeout)
        if self._process.returncode != 0:
            last = err.decode(errors="replace").strip().splitlines()[-1:] or [f"exit status {self._process.returncode}"]
            raise RuntimeError(f"the hostile client's process failed: {last[0]}")
        flood_result: Flood = pickle.loads(out)
        return flood_result

    def __enter__(self) -> "Attacker":
        return self

    def __exit__(self, *exc: object) -> None:
        if self._process.poll() is None:
            self._process.kill()
        self._process.communicate()


if __name__ == "__main__":  # Attacker's child: the flood's arguments in, its Flood out
    # The flood of the module under its own name, so that the parent finds the classes it unpickles.
    from ota_rig.server import hostile

    arguments, options = pickle.loads(base64.b64decode(sys.argv[1]))
    sys.stdout.buffer.write(pickle.dumps(hostile.flood(*arguments, **options)))
