"""What `/update` offers and how it misbehaves: the firmware on offer and the faults of real
servers, proxies and attackers that fault scenarios play.
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)
progress = logging.getLogger("ota_rig.progress")  # what `rig run` shows while a scenario runs


@dataclass
class Reply:
    """What a route decided to answer; `_send` writes it and records how that went.

    `body` is bytes in memory, which every reply of an offer shares, or a file read as it
    goes out."""

    status: int
    body: bytes | Path = b""
    headers: dict[str, str] = field(default_factory=dict)
    rate: float | None = None  # body bytes per second (None: as fast as the client reads)
    framing: str = "length"  # see Fault
    drop_after: int | None = None  # see Fault
    stall_after: int | None = None


@dataclass(frozen=True)
class Fault:
    """How `/update` misbehaves when it hands out the offer, for fault scenarios. The default
    is a good server: each field names one way a real server, proxy or attacker gets it wrong.

    `status`: answer this status with no body instead of 200 (404, 403, 500, a 302 with a
    `Location` in `headers`). `md5`: this `x-MD5` instead of the body's ("" sends none).
    `framing`: "length" (Content-Length), "chunked" (Transfer-Encoding: chunked) or "close"
    (neither: the body ends when the server closes, as an HTTP/1.0 server does).
    `drop_after`: send that many body bytes, then drop the connection (no close_notify, as a
    crashed server or a broken link leaves it). `stall_after`: send that many body bytes, then
    nothing more, keeping the connection open until the client gives up.
    """

    status: int | None = None
    headers: tuple[tuple[str, str], ...] = ()
    md5: str | None = None
    framing: str = "length"
    drop_after: int | None = None
    stall_after: int | None = None

    def __post_init__(self) -> None:
        if self.framing not in ("length", "chunked", "close"):
            raise ValueError(f"framing {self.framing!r} is not one of length, chunked, close")
        if self.drop_after is not None and self.stall_after is not None:
            raise ValueError("a body is either dropped or stalled, not both")


@dataclass(frozen=True)
class Offer:
    """The firmware `/update` offers: its version, the bytes served as its image (and their
    MD5, in lower-case hex), and how."""

    version: str
    image: bytes
    md5: str
    rate: float | None = None
    fault: Fault = Fault()
