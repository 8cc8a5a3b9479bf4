"""The serial monitor against real pyserial ports: a loop:// port (what is written comes back
to be read) and a pty pair whose master end the test writes a flood into, or closes to pull the
port away."""

from __future__ import annotations

import os
import re
import threading
import time
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import pytest
import serial

from ota_rig.bench.monitor import KEEP_LINES, MAX_LINE, Event, ExpectTimeout, Monitor, UnexpectedEvent
from ota_rig.device import printed_lines
from ota_rig.scenario import record as scenario_record


def send(port: serial.SerialBase, *lines: str) -> None:
    """Lines as the sketch prints them: println ends each with CR LF."""
    port.write("".join(f"{line}\r\n" for line in lines).encode())


def later(seconds: float, action, *args) -> threading.Timer:
    timer = threading.Timer(seconds, action, args)
    timer.start()
    return timer


def write_all(fd: int, data: bytes) -> None:
    rest = memoryview(data)
    while rest:
        rest = rest[os.write(fd, rest):]


@pytest.fixture
def pty():
    """A pty pair: its master end, to write what the board says, and its slave end open in pyserial."""
    master, slave = os.openpty()
    port = serial.Serial(os.ttyname(slave), 115200, timeout=0.05)
    os.close(slave)
    yield master, port
    port.close()
    os.close(master)


@pytest.fixture
def port():
    loop = serial.serial_for_url("loop://", timeout=0.05)
    yield loop
    loop.close()


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "serial.log"


@pytest.fixture
def monitor(port, log_path: Path):
    running = Monitor(port, log_path).start()
    yield running
    running.stop()


def test_table_lines_become_timestamped_events(port, monitor: Monitor) -> None:
    before = time.monotonic()
    send(port, "some boot chatter", printed_lines.render("firmware_version", version="1.2.3"),
         "[  2553][E][WiFiClientSecure.cpp:144] connect(): start_ssl_client: -9984")

    event = monitor.expect("firmware_version", timeout=1, version="1.2.3")
    core = monitor.expect("core_log", timeout=1, file="WiFiClientSecure.cpp", level="E")

    assert isinstance(event, Event)
    assert (event.name, event.fields, event.raw) == ("firmware_version", {"version": "1.2.3"}, "Firmware version 1.2.3")
    assert before <= event.t <= core.t <= time.monotonic()
    assert 0 <= event.elapsed <= core.elapsed
    assert core.fields["message"] == "start_ssl_client: -9984"
    assert monitor.lines == ["some boot chatter", "Firmware version 1.2.3", core.raw]
    assert [e.name for e in monitor.events] == ["firmware_version", "core_log"]  # unknown lines stay raw
    assert monitor.lines[event.index] == event.raw


def test_log_is_written_line_by_line_while_running(port, log_path: Path) -> None:
    monitor = Monitor(port, log_path).start()
    send(port, "NTP: waiting for time from pool.ntp.org")
    monitor.expect("ntp_waiting", timeout=1)
    assert log_path.read_text() == "NTP: waiting for time from pool.ntp.org\n"  # before stop()

    port.write(b"WiFi: connecting to ota-r")  # no line ending yet
    time.sleep(0.15)
    assert log_path.read_text() == "NTP: waiting for time from pool.ntp.org\n"
    monitor.stop()
    assert log_path.read_text().splitlines() == ["NTP: waiting for time from pool.ntp.org", "WiFi: connecting to ota-r"]
    assert monitor.events[-1].name == "wifi_connecting"  # the partial last line is kept too


def test_expect_consumes_up_to_and_including_the_match(port, monitor: Monitor) -> None:
    send(port, "Update: next check in 10 s", "HTTP_UPDATE_NO_UPDATES", "Update: next check in 20 s")

    first = monitor.expect("retry", timeout=1)
    second = monitor.expect("retry", timeout=1)
    assert (first.fields["seconds"], second.fields["seconds"]) == ("10", "20")
    with pytest.raises(ExpectTimeout):  # no_updates came before the cursor: consumed
        monitor.expect("no_updates", timeout=0.1)
    assert monitor.cursor == 3


def test_expect_compares_fields_as_strings(port, monitor: Monitor) -> None:
    send(port, "HTTP_UPDATE_FAILD Error (-104): Wrong HTTP Code",
         "HTTP_UPDATE_FAILD Error (-1): HTTP error: connection refused")

    event = monitor.expect("update_failed", timeout=1, code=-1)
    assert event.fields == {"code": "-1", "text": "HTTP error: connection refused"}
    assert monitor.events_since(0)[0].fields["code"] == "-104"  # skipped over, still recorded


def test_expect_accepts_a_pattern_for_a_field(port, monitor: Monitor) -> None:
    send(port, "[  2546][E][ssl_client.cpp:37] _handle_error(): [start_ssl_client():273]: (-9984) X509 - "
               "Certificate verification failed, e.g. CRL, CA or signature check failed")
    event = monitor.expect("core_log", timeout=1, message=re.compile(r"\(-9984\)"))
    assert event.fields["function"] == "_handle_error"


def test_expect_sequence_in_order_with_fields(port, monitor: Monitor) -> None:
    send(port, "Update: checking https://10.0.0.1:8443/fw.bin", "Certificate: valid 2025-01-01 00:00:00 to "
         "2035-01-01 00:00:00 UTC", "HTTP_UPDATE_OK", "Restarting into the new firmware")

    events = monitor.expect_sequence(
        ["update_checking", ("cert_dates_ok", {"not_after": "2035-01-01 00:00:00"}), "update_ok", "restarting"],
        timeout=1,
    )
    assert [e.name for e in events] == ["update_checking", "cert_dates_ok", "update_ok", "restarting"]
    assert [e.index for e in events] == [0, 1, 2, 3]


def test_expect_sequence_fails_on_the_wrong_order_naming_the_step(port, monitor: Monitor) -> None:
    send(port, "HTTP_UPDATE_OK", "Update: checking https://10.0.0.1/fw.bin")
    started = time.monotonic()
    with pytest.raises(ExpectTimeout) as failure:
        monitor.expect_sequence(["update_checking", "update_ok"], timeout=0.3)
    assert time.monotonic() - started < 0.6  # one overall timeout, not one per step
    assert "'update_ok'" in str(failure.value) and "step 2 of 2, after update_checking" in str(failure.value)


def test_every_wait_is_kept_with_its_outcome_and_the_line_that_settled_it(port, monitor: Monitor) -> None:
    send(port, "boot chatter", "HTTP_UPDATE_OK", "Restarting into the new firmware", "HTTP_UPDATE_NO_UPDATES")
    monitor.expect_sequence(["update_ok", "restarting"], timeout=1)
    monitor.expect_raw("NO_UPDATES$", timeout=1)
    monitor.not_matching("update_failed", within=0.05)
    with pytest.raises(ExpectTimeout):
        monitor.expect("firmware_version", timeout=0.1, version="9.9")
    monitor.cursor = 0
    with pytest.raises(UnexpectedEvent):
        monitor.not_matching("update_ok")

    kept = [(wait.what, wait.outcome, wait.index) for wait in monitor.expectations]
    assert kept == [
        ("'update_ok'", "met", 1), ("'restarting'", "met", 2), ("line matching 'NO_UPDATES$'", "met", 3),
        ("no 'update_failed'", "absent", None), ("'firmware_version' (version='9.9')", "missed", None),
        ("no 'update_ok'", "came", 1),
    ]
    lines = monitor.lines
    assert [lines[wait.index] for wait in monitor.expectations if wait.outcome == "met"] == [
        "HTTP_UPDATE_OK", "Restarting into the new firmware", "HTTP_UPDATE_NO_UPDATES"]
    times = [wait.t for wait in monitor.expectations[:5]]
    assert times == sorted(times)


def test_not_matching_passes_when_absent_and_fails_when_present(port, monitor: Monitor) -> None:
    send(port, "HTTP_UPDATE_NO_UPDATES", "HTTP_UPDATE_FAILD Error (-1): HTTP error: connection refused")
    monitor.expect("no_updates", timeout=1)
    monitor.not_matching("update_ok", within=0.1)
    monitor.not_matching("update_failed", code=-104)
    with pytest.raises(UnexpectedEvent, match="'update_failed' .*code='-1'.* must not"):
        monitor.not_matching("update_failed", within=0.1, code=-1)
    assert monitor.cursor == 1  # not_matching never moves the cursor


def test_not_matching_fails_as_soon_as_the_event_arrives(port, monitor: Monitor) -> None:
    later(0.1, send, port, "HTTP_UPDATE_OK")
    started = time.monotonic()
    with pytest.raises(UnexpectedEvent):
        monitor.not_matching("update_ok", within=5)
    assert time.monotonic() - started < 1


def test_not_matching_ignores_what_came_before_the_cursor(port, monitor: Monitor) -> None:
    send(port, "HTTP_UPDATE_OK", "Firmware version 2.0")
    monitor.expect("firmware_version", timeout=1)
    monitor.not_matching("update_ok")


def test_mark_moves_the_cursor_past_old_lines(port, monitor: Monitor) -> None:
    send(port, "HTTP_UPDATE_OK")
    monitor.expect_raw("HTTP_UPDATE_OK", timeout=1)
    send(port, "HTTP_UPDATE_NO_UPDATES")
    monitor.expect("no_updates", timeout=1)
    monitor.cursor = 0
    monitor.cursor = monitor.mark()
    assert monitor.events_since() == []
    with pytest.raises(ExpectTimeout):
        monitor.expect("update_ok", timeout=0.05)


def test_timeout_message_names_the_event_and_shows_the_last_lines(port, monitor: Monitor) -> None:
    send(port, *[f"line {n}" for n in range(20)])
    monitor.expect_raw("^line 19$", timeout=1)
    with pytest.raises(ExpectTimeout) as failure:
        monitor.expect("update_failed", timeout=0.1, code=-1)
    message = str(failure.value)
    assert re.match(r"event 'update_failed' \(code='-1'\) did not come within 0.1 s, and the port has sent nothing "
                    r"for 0\.\d s; the last 15 lines received:\n", message), message
    assert "line 19" in message and "line 5" in message and "line 4\n" not in message
    assert isinstance(failure.value, AssertionError)


def test_timeout_message_says_when_nothing_came(monitor: Monitor) -> None:
    with pytest.raises(ExpectTimeout, match="'update_ok' did not come within 0.05 s; no bytes at all came"):
        monitor.expect("update_ok", timeout=0.05)


def test_expect_raw_finds_lines_outside_the_table(port, monitor: Monitor) -> None:
    send(port, "configsip: 0, SPIWP:0xee", "entry 0x400805e4")
    match = monitor.expect_raw(r"^entry (0x[0-9a-f]+)$", timeout=1)
    assert match.group(1) == "0x400805e4"
    assert monitor.events == []


def test_an_unknown_event_name_is_an_error_not_a_timeout(monitor: Monitor) -> None:
    with pytest.raises(KeyError, match="update_okay"):
        monitor.expect("update_okay", timeout=5)


def test_garbage_bytes_and_a_100_kb_line_do_not_stop_it(port, monitor: Monitor, log_path: Path) -> None:
    port.write(b"\xff\xfe\x00\x1b[0m\xe9garbage\r\n")
    port.write(b"x" * 100_000 + b"HTTP_UPDATE_OK\r\n")
    send(port, "HTTP_UPDATE_NO_UPDATES")

    monitor.expect("no_updates", timeout=2)
    assert monitor.lines[0] == "\\xff\\xfe\\x00\\x1b[0m\\xe9garbage"  # every byte that is not text, escaped
    assert all(len(line.encode()) <= MAX_LINE for line in monitor.lines)
    assert [e.name for e in monitor.events] == ["no_updates"]  # the long line's tail is no event
    logged = log_path.read_text().split("\n")
    assert logged[0] == monitor.lines[0]
    assert "".join(logged[1:-2]) == "x" * 100_000 + "HTTP_UPDATE_OK"  # every byte is in the log, in pieces


def test_stop_wakes_a_waiter(port, monitor: Monitor) -> None:
    later(0.1, monitor.stop)
    started = time.monotonic()
    with pytest.raises(ExpectTimeout, match="the monitor stopped"):
        monitor.expect("update_ok", timeout=5)
    assert time.monotonic() - started < 1


def test_a_vanishing_port_fails_waiters_and_keeps_the_log(log_path: Path) -> None:
    master, slave = os.openpty()
    port = serial.Serial(os.ttyname(slave), 115200, timeout=0.05)
    os.close(slave)
    monitor = Monitor(port, log_path).start()
    try:
        os.write(master, b"Firmware version 1.0\r\nWiFi: conn")
        monitor.expect("firmware_version", timeout=1)
        later(0.1, os.close, master)
        started = time.monotonic()
        with pytest.raises(ExpectTimeout) as failure:
            monitor.expect("update_ok", timeout=5)
        assert time.monotonic() - started < 1
        message = str(failure.value)
        assert re.match(r"Waiting for event 'update_ok', the serial port went away at \d+\.\d{3} s \(\w+: ", message)
        # The line in flight ended with the port: it is the last line, not an unfinished one.
        before, last = message.splitlines()[-2:]
        assert before.endswith("] Firmware version 1.0") and last.endswith("] WiFi: conn"), message
        assert monitor.error is not None
        with pytest.raises(ExpectTimeout, match="serial port went away"):  # and every later wait too
            monitor.not_matching("update_ok", within=1)
    finally:
        monitor.stop()
        port.close()
    assert log_path.read_text().splitlines() == ["Firmware version 1.0", "WiFi: conn"]


def test_a_flood_leaves_memory_bounded_and_serial_log_whole_and_the_waits_find_their_lines(pty, log_path: Path) -> None:
    """8 MB through a pty, the waits begun before it: 2 MB of log lines (half of them protocol
    lines, each an event), a line of raw bytes, the line the raw wait wants, 6 MB without a
    newline, then the device line. bench/monitor_flood.py sends 50 MB."""
    texts = [text for n in range(10_000) for text in (
        f"noise {n:06d}: the quick brown fox jumps over the lazy dog, again and again and again",
        f"[{n:7d}][D][HTTPClient.cpp:{n % 999}] handleHeaderResponse(): RX: x-flood: {n}, and some more")]
    pieces = 1500
    flood = ("".join(f"{text}\r\n" for text in texts).encode() + b"raw \xff\x00\\ bytes\r\nentry 0x400805e4\r\n"
             + b"L" * (pieces * MAX_LINE + 100) + b"\r\nHTTP_UPDATE_OK\r\n")
    # serial.log by its format: a line a line, CRs before LF dropped, bytes that are not text and
    # backslashes as \xNN, a line without a newline cut into pieces of MAX_LINE bytes.
    logged = [*texts, "raw \\xff\\x00\\x5c bytes", "entry 0x400805e4", *["L" * MAX_LINE] * pieces, "L" * 100,
              "HTTP_UPDATE_OK"]
    master, port = pty
    tracemalloc.start()
    try:
        with Monitor(port, log_path) as monitor:
            later(0.1, write_all, master, flood)
            entry = monitor.expect_raw(r"^entry (0x[0-9a-f]+)$", timeout=30)
            done = monitor.expect("update_ok", timeout=30)
            peak = tracemalloc.get_traced_memory()[1]
            assert log_path.read_text(encoding="utf-8") == "".join(f"{line}\n" for line in logged)
            held = monitor.lines
            events = monitor.events
    finally:
        tracemalloc.stop()

    assert peak < 0.4 * len(flood), f"the monitor held {peak / 1e6:.1f} MB for a {len(flood) / 1e6:.1f} MB flood"
    assert entry.group(1) == "0x400805e4" and done.index == len(logged) - 1 == monitor.mark() - 1
    assert [(wait.what, wait.index) for wait in monitor.expectations] == [
        ("line matching '^entry (0x[0-9a-f]+)$'", logged.index("entry 0x400805e4")), ("'update_ok'", done.index)]
    assert len(held) < len(logged) and held == logged[-len(held):]  # the most recent lines
    assert len(events) < 10_000 and events[-1] == done  # the most recent events
    assert all(logged[event.index] == event.raw for event in events)


def test_of_what_came_before_a_wait_events_outlast_lines_in_memory(pty, log_path: Path) -> None:
    master, port = pty
    monitor = Monitor(port, log_path).start()
    texts = ["Firmware version 1.0", "entry 0x400805e4", *(f"{n:03d} {'x' * 1000}" for n in range(KEEP_LINES // 1000)),
             "HTTP_UPDATE_NO_UPDATES"]
    write_all(master, "".join(f"{text}\r\n" for text in texts).encode())
    monitor.expect("no_updates", timeout=2)
    monitor.cursor = 0

    assert monitor.expect("firmware_version", timeout=1).index == 0
    with pytest.raises(ExpectTimeout):  # the line after it is no longer held: only serial.log has it
        monitor.expect_raw("^entry ", timeout=0.1)
    held = monitor.lines
    monitor.stop()
    assert len(held) < len(texts) and held == texts[-len(held):] and monitor.mark() == len(texts)
    assert log_path.read_text().splitlines() == texts


def test_results_point_at_serial_log_lines_after_the_monitor_let_lines_go(pty, log_path: Path) -> None:
    """Two monitors, one after the other, on one serial.log, as a scenario that reads back flash
    has; the first lets most of its lines go."""
    master, port = pty
    first = Monitor(port, log_path).start()
    write_all(master, b"Firmware version 0.1\r\n" + b"x" * 2 * KEEP_LINES + b"\r\nHTTP_UPDATE_OK\r\n")
    first.expect("update_ok", timeout=2)
    first.stop()
    assert len(first.lines) < first.mark()
    second = Monitor(port, log_path).start()
    os.write(master, b"Firmware version 0.2\r\n")
    second.expect("firmware_version", timeout=1)
    second.stop()

    observed, expected, findings = scenario_record._serial(SimpleNamespace(monitors=[first, second], began=0.0))
    logged = log_path.read_text().splitlines()
    assert [logged[event["line"]] for event in observed] == [event["text"] for event in observed] == [
        "Firmware version 0.1", "HTTP_UPDATE_OK", "Firmware version 0.2"]
    assert [logged[wait["line"]] for wait in expected] == ["HTTP_UPDATE_OK", "Firmware version 0.2"]
    assert findings == []  # an update from 0.1 to 0.2, across two monitors, is no update loop
