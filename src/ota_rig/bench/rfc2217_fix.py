"""pyserial's RFC2217 client at line speed (issue 17).

pyserial 3.5's `serial.rfc2217.Serial` inherits `SerialBase.timeout`, whose setter calls
`_reconfigure_port()` on an open port. Over RFC2217 that sends the four line settings (baud
rate, data size, parity, stop size) to the server again and polls, 50 ms at a time, until the
server has acknowledged all four: about 0.2 s for nothing, since a timeout is the client's own
business and RFC2217 has no such setting. esptool sets the port's timeout around every command
it sends the chip, so over RFC2217 `esptool chip-id` takes 13 s instead of 2.6 s, and writing
1 MB 55 s instead of 4.4 s (docs/hardware.md, "RFC2217 speed").

labgrid's fork of pyserial, pyserial-labgrid 3.5.0.2 (https://github.com/labgrid-project/pyserial-labgrid,
on PyPI; compared file by file with pyserial 3.5: only serial/rfc2217.py and the version differ),
carries two fixes, which this module makes in the running process, each only when the
installed `serial.rfc2217` behaves the slow way:

1. `rfc2217.Serial.timeout` gets a setter of its own that checks and stores the value and
   sends nothing (the read loop takes the timeout from the instance, so nothing else changes);
2. `rfc2217.TelnetSubnegotiation.set` sends a request only when the value differs from the one
   last requested on this connection, so reconfiguring a port (a baud rate change) does not
   send the settings that stay as they are. A fresh connection makes fresh subnegotiation
   objects, so the first settings of every connection are always sent. The fork skips a repeat
   of any subnegotiation; here only the four line settings are skipped: a purge (what
   `reset_input_buffer()` asks the server for) is an action, and a second one must reach the
   server as the first did.

What needs fixing is found by trying the behaviour, not by reading version numbers: a timeout
set on an open (stand-in) port that calls `_reconfigure_port`, a value set twice that is sent
twice. On a pyserial that already behaves (pyserial-labgrid, a future pyserial release),
`apply()` changes nothing.

The rig applies it where it opens ports in its own process (`SerialBoard.open`) and in every
esptool process it starts (`python -m ota_rig.bench.esptool_cli`, esptool's own CLI run after
this fix).
"""

from __future__ import annotations

import logging
from typing import Any

import serial.rfc2217
from serial.serialutil import SerialBase

log = logging.getLogger(__name__)

TIMEOUT = "timeout sent no settings"
UNCHANGED = "unchanged settings not sent again"


class _Recorder:
    """Stands in for an RFC2217 connection: counts the subnegotiations sent through it."""

    logger = None

    def __init__(self) -> None:
        self.sent = 0

    def rfc2217_send_subnegotiation(self, option: bytes, value: bytes = b"") -> None:
        self.sent += 1


def timeout_renegotiates() -> bool:
    """Whether setting the timeout of an open rfc2217 port reconfigures it (pyserial 3.5)."""
    port = serial.rfc2217.Serial()  # no URL: nothing is opened
    calls: list[None] = []
    port._reconfigure_port = lambda: calls.append(None)  # this instance only
    port.is_open = True
    try:
        port.timeout = 1.0
    finally:
        port.is_open = False
    return bool(calls)


def resends_unchanged() -> bool:
    """Whether an RFC2217 line setting set twice to one value is sent twice (pyserial 3.5)."""
    recorder = _Recorder()
    option = serial.rfc2217.TelnetSubnegotiation(recorder, "baudrate", serial.rfc2217.SET_BAUDRATE,
                                                 serial.rfc2217.SERVER_SET_BAUDRATE)
    option.set(b"\x00\x01\xc2\x00")
    option.set(b"\x00\x01\xc2\x00")
    return recorder.sent > 1


def needed() -> tuple[str, ...]:
    """The fixes the installed pyserial needs: none on one that already behaves."""
    return tuple(name for name, slow in ((TIMEOUT, timeout_renegotiates), (UNCHANGED, resends_unchanged)) if slow())


def _check_timeout(value: Any) -> None:
    """SerialBase's rule for a timeout: None (block) or a number of seconds, 0 or more."""
    if value is None:
        return
    try:
        negative = value < 0
    except TypeError:
        raise ValueError(f"Not a valid timeout: {value!r}") from None
    if negative:
        raise ValueError(f"Not a valid timeout: {value!r}")


def _local_timeout(self: Any, value: Any) -> None:
    _check_timeout(value)
    self._timeout = value


# The subnegotiations that carry a line setting, a state the server keeps (RFC 2217, 3).
_LINE_SETTINGS = frozenset((serial.rfc2217.SET_BAUDRATE, serial.rfc2217.SET_DATASIZE, serial.rfc2217.SET_PARITY,
                            serial.rfc2217.SET_STOPSIZE))


def _send_if_changed(original: Any) -> Any:
    def set(self: Any, value: bytes) -> None:
        if self.option in _LINE_SETTINGS and value == self.value:
            if self.connection.logger:
                self.connection.logger.debug(f"SB Requesting {self.name} -> {value!r} (unchanged: not sent)")
            return
        original(self, value)

    set.__doc__ = original.__doc__
    set.__wrapped__ = original  # type: ignore[attr-defined]
    return set


def apply() -> tuple[str, ...]:
    """Fix the installed `serial.rfc2217` where it is slow; the fixes made (none when pyserial
    already behaves, or when this process applied them before)."""
    fixes = needed()
    if TIMEOUT in fixes:
        serial.rfc2217.Serial.timeout = property(SerialBase.timeout.fget, _local_timeout,
                                                 doc="The read timeout; RFC2217 has no such setting: nothing is sent.")
    if UNCHANGED in fixes:
        subnegotiation = serial.rfc2217.TelnetSubnegotiation
        subnegotiation.set = _send_if_changed(subnegotiation.set)
    if fixes:
        log.debug("pyserial's RFC2217 client fixed: %s", ", ".join(fixes))
    return fixes
