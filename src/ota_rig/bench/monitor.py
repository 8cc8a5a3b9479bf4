"""The serial monitor: follows a board's port in the background, keeps every raw line in a log
file as it arrives, and turns the lines it knows (ota_rig/device/printed_lines.py) into timestamped events that
tests wait for.

Waiting works like pexpect. The monitor holds one cursor over the lines received, a line
number of serial.log. `expect`, `expect_sequence` and `expect_raw` search from the cursor and
move it past the line they matched. `not_matching` looks from the cursor without moving it. A
wait that fails raises `ExpectTimeout`, an AssertionError, so pytest shows it as a test failure.
Its message names what was awaited and shows the last lines the port sent.

Memory stays bounded whatever the port sends; serial.log keeps everything. The monitor holds
the most recent lines (KEEP_LINES bytes of them) and, apart, the most recent events
(KEEP_EVENTS bytes: far more than a scenario prints, so only a flood of protocol lines drops
any). A wait checks every line that arrives while it waits, as it arrives, so a flood cannot
push its line out of memory first; of the lines that came before the wait, it sees those still
held: events for `expect`, `expect_sequence` and `not_matching`, lines for `expect_raw`.

Whatever the port sends, the monitor keeps reading and logs it. A line is cut at MAX_LINE bytes
(a board spewing binary, a lost newline). serial.log and `lines` hold each line as text: UTF-8 as
it came, and as `\\xNN` every byte that is not printable text (invalid UTF-8; a control character
such as NUL, ESC or a lone CR; a backslash, so that each one in the log starts an escape). Any
log line thus reads back to exactly the bytes the port sent, and a terminal shows it safely.
A port that goes away (a pulled cable) ends the line in flight and fails every wait with a
sentence saying so, unless `reopen` brings the port back.

    monitor = Monitor(board_port, tmp_path / "serial.log").start()
    monitor.expect("update_checking", timeout=30)
    monitor.expect("update_failed", timeout=30, code=-1)
    monitor.not_matching("update_ok", within=2)
    monitor.stop()
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from itertools import dropwhile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from ota_rig.device import printed_lines

log = logging.getLogger(__name__)

MAX_LINE = 4096  # bytes; a longer run without a newline is cut into pieces of this size
TAIL = 15  # lines quoted in a failure message
TAIL_WIDTH = 200  # characters quoted of each of them
READ_SIZE = 4096
KEEP_LINES = 256 * 1024  # bytes of recent lines held in memory, their objects counted
KEEP_EVENTS = 1024 * 1024  # bytes of recent events held in memory, their objects counted
LINE_OBJECTS = 150  # bytes a held line takes besides its text (its Received, time and number)
EVENT_OBJECTS = 850  # bytes an event takes besides its text (a core log line: 6 fields and their values)

FieldValue = Any  # compared as str(); a compiled re.Pattern is searched instead
Expected = str | tuple[str, dict[str, FieldValue]]


# What is not printable text: a backslash, C0 and C1 control characters except tab and LF, and
# the lone surrogates that stand for invalid UTF-8 bytes after decoding with surrogateescape.
_NOT_TEXT = re.compile(r"[\\\x00-\x08\x0b-\x1f\x7f-\x9f\udc80-\udcff]")


def printable(raw: bytes) -> str:
    """A line's bytes as log text: UTF-8 as it came; every byte that is not printable text, and
    each backslash, as `\\xNN`; so the text reads back to exactly `raw`."""
    def escape(match: re.Match[str]) -> str:
        return "".join(f"\\x{byte:02x}" for byte in match.group().encode("utf-8", "surrogateescape"))
    return _NOT_TEXT.sub(escape, raw.decode("utf-8", "surrogateescape"))


class ExpectTimeout(AssertionError):
    """A wait that did not see what it waited for: time ran out, the port failed, or the
    monitor was stopped."""


class UnexpectedEvent(AssertionError):
    """`not_matching` saw the event it was told must not come."""


@dataclass(frozen=True, slots=True)
class Event:
    """A line the protocol table knows: its name and fields, the raw text, `t` from
    time.monotonic() when the line ended, and `elapsed` seconds since the monitor started."""

    name: str
    fields: dict[str, str]
    raw: str
    t: float
    elapsed: float
    index: int  # its line in serial.log, counted from the monitor's first line

    def matches(self, name: str, fields: dict[str, FieldValue]) -> bool:
        return self.name == name and all(_field_matches(self.fields.get(key), value) for key, value in fields.items())


@dataclass(frozen=True)
class Expectation:
    """One thing a test waited for, and how it turned out: "met" (`index` is the line that
    matched, `t` when it ended), "missed" (it did not come; `t` when the wait gave up), "absent"
    (a `not_matching` watch that saw none) or "came" (one that did; `index` is that line)."""

    what: str  # describe()'s words: "'update_failed' (code='-1')", or "line matching '...'"
    outcome: str
    t: float
    index: int | None = None


@dataclass(frozen=True, slots=True)
class Received:
    """One raw line (without its line ending), when it ended, its line in serial.log, and the
    event it became, if any."""

    text: str
    t: float
    index: int
    event: Event | None = None


@dataclass(frozen=True)
class UpdateLoop:
    """An update that installed the version the device already ran: `HTTP_UPDATE_OK`, then the
    reboot into the same `Firmware version`. A server that answers 200 to a device already on
    its offer (a static file server answers 200 to every GET) makes the device install the same
    version twice in a row, and again at every check: a reflash each time, wearing the flash and
    never settling (shared/reference/esp32-ota-device.md section 3: HTTPUpdate installs the image of
    any 200 whatever its version; only a 304 is HTTP_UPDATE_NO_UPDATES). `event` is the boot into the version again."""

    version: str
    event: Event

    @property
    def sentence(self) -> str:
        return (f"update loop: version {self.version} was installed over itself (the same version twice in a "
                "row); the server answers 200 to a device already on its offer, as a static file server does, "
                "where it should answer 304")


def update_loops(events: Iterable[Event]) -> list[UpdateLoop]:
    """Each update in `events` after which the device booted the version it ran before it."""
    loops, running, updated = [], None, False
    for event in events:
        if event.name == "update_ok":
            updated = True
        elif event.name == "firmware_version":
            version = event.fields["version"]
            if updated and version == running:
                loops.append(UpdateLoop(version, event))
            running, updated = version, False
    return loops


class _Recent:
    """The newest of the lines appended, as many as fit in `budget` bytes by `size`."""

    def __init__(self, budget: int, size: Callable[[Received], int]) -> None:
        self.items: deque[Received] = deque()
        self._budget = budget
        self._size = size
        self._used = 0

    def append(self, item: Received) -> None:
        self.items.append(item)
        self._used += self._size(item)
        while self._used > self._budget:
            self._used -= self._size(self.items.popleft())

    def since(self, index: int) -> Iterator[Received]:
        """The lines held from serial.log line `index` on."""
        return dropwhile(lambda item: item.index < index, self.items)


@dataclass(eq=False)
class _Wait:
    """A wait under way: the first line `wanted` accepted, once one has."""

    wanted: Callable[[Received], bool]
    found: Received | None = None


def _field_matches(actual: str | None, expected: FieldValue) -> bool:
    if actual is None:
        return False
    if isinstance(expected, re.Pattern):
        return expected.search(actual) is not None
    return actual == str(expected)


def describe(name: str, fields: dict[str, FieldValue]) -> str:
    """'update_failed (code=-1)': an event name and the fields a wait asks for."""
    if not fields:
        return repr(name)
    shown = ", ".join(
        f"{key}={value.pattern!r}" if isinstance(value, re.Pattern) else f"{key}={str(value)!r}"
        for key, value in fields.items()
    )
    return f"{name!r} ({shown})"


class Monitor:
    """Follows `port`, an open pyserial port (serial.Serial, or an rfc2217 one) with a short read
    timeout. Writes each raw line to `log_path` as it arrives, flushed line by line, and turns
    the lines `table` knows into `Event`s.

    When the port fails (a board that left the USB bus after a reset), `reopen` is called, if
    given, for a fresh port to go on with; it raises when the port does not come back, and
    that reason becomes the monitor's `error`.

    Every timeout is multiplied by `time_scale`: a real board joins Wi-Fi, gets NTP time and
    runs TLS in seconds where the twin on loopback takes milliseconds, and the same scenario
    must pass on both."""

    def __init__(self, port: Any, log_path: Path, table: Sequence[printed_lines.Line] = printed_lines.LINES,
                 reopen: Callable[[], Any] | None = None, time_scale: float = 1.0) -> None:
        self.port = port
        self.time_scale = time_scale
        self.reopen = reopen
        self.reopened = 0  # how many times the port came back
        self.log_path = Path(log_path)
        self.table = tuple(table)
        self.started_at = time.monotonic()
        self._lines = _Recent(KEEP_LINES, lambda item: sys.getsizeof(item.text) + LINE_OBJECTS)
        self._events = _Recent(KEEP_EVENTS, lambda item: sys.getsizeof(item.text) + EVENT_OBJECTS)
        self._count = 0  # lines received
        self._waits: list[_Wait] = []
        self.expectations: list[Expectation] = []  # every wait, in the order the test made them
        self._cursor = 0
        self._bytes = 0
        self._last_data = 0.0  # time.monotonic() of the last bytes read
        self._lost: str | None = None  # the sentence saying the port went away, while it is away
        self._error: str | None = None
        self._stopping = threading.Event()
        self._stop_lock = threading.Lock()
        self._done = False
        self._changed = threading.Condition()
        self._buffer = bytearray()
        self._overlong = False
        self._names = {line.name for line in self.table}
        self._log: Any = None
        self._thread: threading.Thread | None = None

    # --- running -------------------------------------------------------------------------

    def start(self) -> "Monitor":
        if self._thread is not None or self._stopping.is_set():
            raise RuntimeError("a Monitor runs once: it is running or was stopped")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("a", encoding="utf-8", newline="\n")
        self.started_at = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"monitor {self.log_path.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Stop reading and wake every waiter. A partial last line is kept and logged.
        The port stays open: it belongs to the board. Safe to call twice, from any thread."""
        with self._stop_lock:
            thread = self._thread
            if thread is None:
                return
            self._stopping.set()
            # A read under way ends at once where the port can cancel it (a local port; the
            # thread exits before reading again), else at the port's short read timeout.
            cancel = getattr(self.port, "cancel_read", None)
            if cancel is not None:
                try:
                    cancel()
                except Exception:  # a closed or foreign port: its read timeout ends the loop
                    pass
            thread.join(timeout)
            if thread.is_alive():
                log.warning("monitor thread for %s did not stop within %.1f s", self.log_path, timeout)
                return
            self._thread = None
            self._end_line()
            self._log.close()
            with self._changed:
                self._done = True
                self._changed.notify_all()

    def __enter__(self) -> "Monitor":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                try:
                    data = self.port.read(max(1, min(self.port.in_waiting, READ_SIZE)))
                except Exception as err:  # SerialException, OSError, a port closed under us
                    if self._stopping.is_set():
                        return
                    self._went_away(err)
                    if self.reopen is None:
                        self._fail(self._lost)
                        return
                    log.warning("%s: %s; reopening it", self.log_path.name, self._lost)
                    try:
                        self.port = self.reopen()
                    except Exception as gone:  # it did not come back in time
                        self._fail(f"{self._lost}, and did not come back ({_named(gone)})")
                        return
                    self.reopened += 1
                    with self._changed:
                        self._lost = None
                    continue
                if data:
                    self._feed(data)
        except Exception as err:  # the log cannot be written, a broken port object: reading ends
            if not self._stopping.is_set():
                self._fail(f"the monitor failed ({_named(err)})")
        finally:
            with self._changed:
                self._done = True
                self._changed.notify_all()

    def _went_away(self, err: Exception) -> None:
        """Reading failed: the bytes in flight are lost, so the line being received ends here."""
        self._end_line()
        with self._changed:
            self._lost = f"the serial port went away at {time.monotonic() - self.started_at:.3f} s ({_named(err)})"

    def _fail(self, reason: str | None) -> None:
        log.warning("%s: reading the serial port ends: %s", self.log_path.name, reason)
        with self._changed:
            self._error = reason
            self._changed.notify_all()

    def _end_line(self) -> None:
        """Keep an unfinished line as a line of its own: the port went away or the monitor stopped."""
        if self._buffer:
            self._add_line(bytes(self._buffer), classify=not self._overlong)
            self._buffer.clear()
        self._overlong = False

    def _feed(self, data: bytes) -> None:
        self._bytes += len(data)
        self._last_data = time.monotonic()
        self._buffer += data
        while True:
            end = self._buffer.find(b"\n", 0, MAX_LINE + 1)
            if end >= 0:
                self._add_line(bytes(self._buffer[:end]), classify=not self._overlong)
                del self._buffer[: end + 1]
                self._overlong = False
            elif len(self._buffer) > MAX_LINE:
                # An overlong line is no protocol line, but its bytes still go to the log,
                # in pieces of MAX_LINE.
                self._add_line(bytes(self._buffer[:MAX_LINE]), classify=False)
                del self._buffer[:MAX_LINE]
                self._overlong = True
            else:
                return

    def _add_line(self, raw: bytes, classify: bool = True) -> None:
        """Log a line, keep it for a while, and hand it to the waits under way."""
        text = printable(raw.rstrip(b"\r"))
        self._log.write(text + "\n")
        self._log.flush()
        now = time.monotonic()
        found = printed_lines.classify(text, self.table) if classify else None
        with self._changed:
            event = None
            if found is not None:
                line, values = found
                event = Event(line.name, values, text, now, now - self.started_at, self._count)
            item = Received(text, now, self._count, event)
            self._count += 1
            self._lines.append(item)
            if event is not None:
                self._events.append(item)
            for wait in self._waits:
                if wait.found is None and wait.wanted(item):
                    wait.found = item
            self._changed.notify_all()

    # --- what arrived --------------------------------------------------------------------

    @property
    def lines(self) -> list[str]:
        """The raw lines held in memory, without line endings: every line until they pass
        KEEP_LINES bytes, the most recent after that (serial.log has them all)."""
        with self._changed:
            return [item.text for item in self._lines.items]

    @property
    def events(self) -> list[Event]:
        """The events held in memory, cursor or not: every event until they pass KEEP_EVENTS
        bytes, the most recent after that."""
        return self.events_since(0)

    @property
    def update_loops(self) -> list[UpdateLoop]:
        """The updates among the held events that installed the running version again."""
        return update_loops(self.events)

    @property
    def bytes_read(self) -> int:
        """Bytes read from the port so far, in finished lines or not."""
        return self._bytes

    @property
    def error(self) -> str | None:
        """Why the port stopped being readable, if it did."""
        return self._error

    @property
    def away(self) -> bool:
        """The port went away and the monitor is waiting for it to come back."""
        return self._lost is not None

    @property
    def cursor(self) -> int:
        """The serial.log line from which the next wait searches."""
        return self._cursor

    @cursor.setter
    def cursor(self, position: int) -> None:
        with self._changed:
            if not 0 <= position <= self._count:
                raise ValueError(f"cursor {position} is outside 0..{self._count}")
            self._cursor = position

    def mark(self) -> int:
        """The position after the last line received so far: how many lines this monitor wrote
        to serial.log. Set `cursor` to it to ignore everything before, or pass it to `events_since`."""
        with self._changed:
            return self._count

    def events_since(self, position: int | None = None) -> list[Event]:
        """The events held in memory from serial.log line `position` on (default: the cursor)."""
        with self._changed:
            start = self._cursor if position is None else position
            return [item.event for item in self._events.since(start) if item.event is not None]

    # --- waiting -------------------------------------------------------------------------

    def expect(self, name: str, timeout: float, **fields: FieldValue) -> Event:
        """The next event called `name` whose fields equal `fields`. The cursor moves past it."""
        self._check_name(name)
        timeout *= self.time_scale
        return self._wait_event(name, fields, time.monotonic() + timeout, f"event {describe(name, fields)}", timeout)

    def expect_sequence(self, expected: Iterable[Expected], timeout: float) -> list[Event]:
        """Each event in order (a name, or a (name, fields) pair), all within `timeout`."""
        steps = [(item, {}) if isinstance(item, str) else (item[0], dict(item[1])) for item in expected]
        timeout *= self.time_scale
        deadline = time.monotonic() + timeout
        found: list[Event] = []
        for number, (name, fields) in enumerate(steps, 1):
            self._check_name(name)
            what = f"event {describe(name, fields)} (step {number} of {len(steps)}"
            what += f", after {', '.join(event.name for event in found)})" if found else ")"
            found.append(self._wait_event(name, fields, deadline, what, timeout))
        return found

    def expect_raw(self, pattern: str | re.Pattern[str], timeout: float) -> re.Match[str]:
        """The next raw line `pattern` matches (re.search), for lines outside the table: among
        the lines still held in memory from the cursor on, then each line as it arrives. The
        cursor moves past it."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        timeout *= self.time_scale
        received = self._wait(lambda item: regex.search(item.text) is not None, self._lines,
                              time.monotonic() + timeout, f"a line matching {regex.pattern!r}", timeout,
                              f"line matching {regex.pattern!r}")
        match = regex.search(received.text)
        assert match is not None
        return match

    def not_matching(self, name: str, within: float = 0.0, **fields: FieldValue) -> None:
        """Wait `within` seconds (0: not at all), then fail if an event called `name` with
        `fields` has arrived since the cursor. Fails as soon as one arrives. The cursor stays."""
        self._check_name(name)
        within *= self.time_scale
        deadline = time.monotonic() + within
        what = f"no {describe(name, fields)}"
        with self._changed:
            came = self._first(_event_called(name, fields), self._events, deadline)
            now = time.monotonic()
            if came is not None:
                self._expected(what, "came", came.t, came.index)
                raise UnexpectedEvent(
                    f"event {describe(name, fields)} came, and it must not: {came.text!r} at "
                    f"{came.t - self.started_at:.3f} s; {self._tail()}"
                )
            if now >= deadline:
                self._expected(what, "absent", now)
                return
            # The monitor is done: the rest of the watch cannot happen, no evidence of absence.
            self._expected(what, "missed", now)
            raise ExpectTimeout(
                f"Watching that event {describe(name, fields)} does not come for {within:g} s ended "
                f"{within - (deadline - now):.3f} s into it: {self._error or 'the monitor stopped'}; {self._tail()}"
            )

    def _check_name(self, name: str) -> None:
        if name not in self._names:  # a typo, not a timeout
            raise KeyError(f"no protocol line named {name!r}")

    def _expected(self, what: str, outcome: str, t: float, index: int | None = None) -> None:
        self.expectations.append(Expectation(what, outcome, t, index))

    def _wait_event(self, name: str, fields: dict[str, FieldValue], deadline: float, what: str,
                    timeout: float) -> Event:
        received = self._wait(_event_called(name, fields), self._events, deadline, what, timeout,
                              describe(name, fields))
        assert received.event is not None
        return received.event

    def _wait(self, wanted: Callable[[Received], bool], held: _Recent, deadline: float, what: str,
              timeout: float, wanted_words: str) -> Received:
        """The first line from the cursor `wanted` accepts, looked for in `held` and in the
        lines to come; `what` names it in a failure, `wanted_words` in `expectations`."""
        with self._changed:
            item = self._first(wanted, held, deadline)
            if item is not None:
                self._cursor = item.index + 1
                self._expected(wanted_words, "met", item.t, item.index)
                return item
            now = time.monotonic()
            self._expected(wanted_words, "missed", now)
            if self._done:
                raise ExpectTimeout(f"Waiting for {what}, {self._error or 'the monitor stopped'}; {self._tail()}")
            if self._lost:
                why = f": {self._lost} and has not come back yet"
            elif self._bytes and now - self._last_data >= timeout:
                why = f", and the port has sent nothing for {now - self._last_data:.1f} s"
            else:
                why = ""
            raise ExpectTimeout(f"{what} did not come within {timeout:g} s{why}; {self._tail()}")

    def _first(self, wanted: Callable[[Received], bool], held: _Recent, deadline: float) -> Received | None:
        """The first line from the cursor `wanted` accepts: among those `held`, else the first
        to arrive (the reading thread offers each to the waits under way) before `deadline` or
        the monitor's end; None if none did. Called with the lock held."""
        wait = _Wait(wanted, next((item for item in held.since(self._cursor) if wanted(item)), None))
        self._waits.append(wait)
        try:
            while wait.found is None and not self._done:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
        finally:
            self._waits.remove(wait)
        return wait.found

    def _tail(self) -> str:
        if not self._bytes:
            return "no bytes at all came from the port"
        recent = list(self._lines.items)[-TAIL:]
        shown = "\n".join(f"  [{item.t - self.started_at:8.3f}] {_cut(item.text)}" for item in recent)
        partial = f"\n  (unfinished line: {bytes(self._buffer[-200:])!r})" if self._buffer else ""
        return f"the last {len(recent)} lines received:\n{shown}{partial}"


def _event_called(name: str, fields: dict[str, FieldValue]) -> Callable[[Received], bool]:
    """Accepts a line whose event is called `name` and has `fields`."""
    return lambda item: item.event is not None and item.event.matches(name, fields)


def _cut(text: str) -> str:
    """A line as a failure message quotes it: at most TAIL_WIDTH characters."""
    return text if len(text) <= TAIL_WIDTH else f"{text[:TAIL_WIDTH]}... ({len(text) - TAIL_WIDTH} more characters)"


def _named(err: Exception) -> str:
    return f"{type(err).__name__}: {err}"
