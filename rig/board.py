"""Boards a test holds: a port URL to flash and watch, and a way to reset the chip.

Two ways to reset an ESP32, as on real benches:
- through the USB bridge's DTR/RTS and the dev board's auto-reset circuit (a local port or an
  rfc2217:// port): esptool resets the chip itself (`--before default-reset`), and a reset to
  run the firmware pulses RTS on the open port, as esptool's hard reset does;
- through wires: EN and IO0 driven directly by the host (relays, GPIOs). esptool then runs with
  `--before no-reset --after no-reset`, and the rig moves the pins itself.

`VirtualBoard` runs the twin (`python -m rig.virtual`) as its own process, like a board on a
cable: over RFC2217 it resets through DTR/RTS; over a pty (the fast default in tests, since
esptool over any RFC2217 port is slow) its EN and IO0 are wired to the process's stdin.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import BinaryIO

import serial

log = logging.getLogger(__name__)

BAUD = 115200
RESET_PULSE = 0.1  # seconds EN is held low


class BoardError(RuntimeError):
    """The board could not be started or reached; one sentence."""


class SerialBoard:
    """A board behind a serial port URL (/dev/ttyUSB0, rfc2217://host:port) with the usual
    DTR/RTS auto-reset circuit."""

    # esptool's --before and --after: after writing, the chip stays in the loader, so the new
    # firmware first runs when the rig resets it with the monitor listening (a hard reset
    # would let it talk to the update server before anyone watches).
    esptool_reset = ("default-reset", "no-reset")
    start_seconds = 0.0  # how long the board took to come up (a twin's process start)

    def __init__(self, port: str) -> None:
        self.port = port

    def open(self, timeout: float = 0.1) -> serial.SerialBase:
        """The port at the ROM's and the sketch's 115200 baud, lines released (chip running)."""
        try:
            line = serial.serial_for_url(self.port, baudrate=BAUD, timeout=timeout, do_not_open=True)
            line.dtr = False
            line.rts = False
            line.open()
        except (serial.SerialException, OSError, ValueError) as err:
            raise BoardError(f"cannot open the board's port {self.port}: {err}") from err
        return line

    def enter_bootloader(self) -> None:
        """Nothing to do: esptool's default reset puts the chip in download mode."""

    def reset(self, line: serial.SerialBase, discard_pending: bool = False) -> None:
        """Boot the firmware: pulse EN through RTS with IO0 high (DTR low), as esptool's hard
        reset does. With `discard_pending`, bytes the chip sent before the reset are dropped
        (only before a monitor reads the port: a monitor must see everything)."""
        line.dtr = False
        line.rts = True
        time.sleep(RESET_PULSE)
        if discard_pending:
            line.reset_input_buffer()
        line.rts = False

    def close(self) -> None:
        """A physical board outlives the test."""

    def __enter__(self) -> "SerialBoard":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class VirtualBoard(SerialBoard):
    """A twin process. Use as a context manager, or call `close()`.

    `transport` is "rfc2217" (a free port on 127.0.0.1, DTR/RTS reset) or "pty" (a symlink in
    `workdir`, EN/IO0 wired to the twin's stdin). The twin's own log goes to `workdir/twin.log`.
    """

    def __init__(self, workdir: Path, *, transport: str = "rfc2217", mac: str | None = None,
                 flash: Path | None = None, pacing: bool = False, start_timeout: float = 10.0) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.flash_file = Path(flash) if flash else self.workdir / "flash.bin"
        self.transport = transport
        argv = [sys.executable, "-m", "rig.virtual", "--flash", str(self.flash_file)]
        if transport == "rfc2217":
            argv += ["--rfc2217", "0"]
        elif transport == "pty":
            argv += ["--pty", str(self.workdir / "ttyESP32")]
            self.esptool_reset = ("no-reset", "no-reset")
        else:
            raise ValueError(f"unknown transport {transport!r}: use 'rfc2217' or 'pty'")
        if mac:
            argv += ["--mac", mac]
        started = time.monotonic()
        env = {"RIG_UART_PACING": "1"} if pacing else {}
        self.log_path = self.workdir / "twin.log"
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                        env={**os.environ, "RIG_VIRTUAL_LOG": "INFO", **env})
        super().__init__(self._await_listening(start_timeout))
        self.start_seconds = time.monotonic() - started
        log.info("virtual board on %s (pid %d)", self.port, self.process.pid)

    def _await_listening(self, timeout: float) -> str:
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        line = b""
        while time.monotonic() < deadline and self.process.poll() is None:
            line = self.process.stdout.readline()
            if line:
                break
        match = re.search(rb"listening on (\S+)", line)
        if not match:
            self.close()
            raise BoardError(f"the virtual ESP32 did not start (see {self.log_path}): {line.decode(errors='replace').strip()}")
        return match.group(1).decode()

    @property
    def wired(self) -> bool:
        return self.transport == "pty"

    def wire(self, *commands: str) -> None:
        """Move the wired pins (`EN 0`, `IO0 1`, ...); each returns once the twin applied it."""
        assert self.process.stdin is not None and self.process.stdout is not None
        for command in commands:
            try:
                self.process.stdin.write(command.encode() + b"\n")
                self.process.stdin.flush()
                answer = self.process.stdout.readline().decode().strip()
            except OSError as err:
                raise BoardError(f"the virtual ESP32 is gone (see {self.log_path}): {err}") from err
            if answer != "ok":
                raise BoardError(f"the virtual ESP32 refused {command!r}: {answer or 'no answer, it has exited'}")

    def enter_bootloader(self) -> None:
        if self.wired:
            self.wire("IO0 0", "EN 0")
            time.sleep(RESET_PULSE)
            self.wire("EN 1")

    def reset(self, line: serial.SerialBase, discard_pending: bool = False) -> None:
        if not self.wired:
            super().reset(line, discard_pending)
            return
        self.wire("IO0 1", "EN 0")
        time.sleep(RESET_PULSE)
        if discard_pending:
            line.reset_input_buffer()
        self.wire("EN 1")

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def close(self) -> None:
        """Stop the twin the way a user would (SIGTERM): it flushes its flash and exits."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream:
                try:
                    stream.close()
                except OSError:
                    pass
        self._log.close()


def read_until(line: serial.SerialBase, until: bytes, timeout: float, record: BinaryIO | None = None) -> bytes:
    """Read the UART until `until` shows or `timeout` passes; copy every chunk to `record`."""
    seen = b""
    deadline = time.monotonic() + timeout
    while until not in seen and time.monotonic() < deadline:
        chunk = line.read(4096)
        if record is not None and chunk:
            record.write(chunk)
            record.flush()
        seen += chunk
    return seen


def reset_and_read(board: SerialBoard, until: bytes, timeout: float = 10.0, record: BinaryIO | None = None) -> bytes:
    """Reset the board into its firmware, then read its UART until `until` shows."""
    with board.open(timeout=0.2) as line:
        board.reset(line, discard_pending=True)
        return read_until(line, until, timeout, record)
