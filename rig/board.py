"""Boards a test holds: for now the virtual ESP32, started as its own process.

`VirtualBoard` runs `python -m rig.virtual` like a board on a cable: it outlives a crashed
test, keeps its flash in a file, and is reached through a port URL (rfc2217:// by default, so
DTR/RTS resets travel as through a USB bridge, or a pty path).
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


class BoardError(RuntimeError):
    """The board could not be started or reached; one sentence."""


class VirtualBoard:
    """A twin process. Use as a context manager, or call `close()`.

    `transport` is "rfc2217" (a free port on 127.0.0.1) or "pty" (a symlink in `workdir`).
    The twin's own log goes to `workdir/twin.log`.
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
        else:
            raise ValueError(f"unknown transport {transport!r}: use 'rfc2217' or 'pty'")
        if mac:
            argv += ["--mac", mac]
        env = {"RIG_UART_PACING": "1"} if pacing else {}
        self.log_path = self.workdir / "twin.log"
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self._log,
                                        env={**os.environ, "RIG_VIRTUAL_LOG": "INFO", **env})
        self.port = self._await_listening(start_timeout)
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
        if self.process.stdout:
            self.process.stdout.close()
        self._log.close()

    def __enter__(self) -> "VirtualBoard":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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


def reset_and_read(port: str, until: bytes, timeout: float = 10.0, record: BinaryIO | None = None) -> bytes:
    """Pulse EN through RTS as esptool's hard reset does (DTR low, so IO0 stays high and the
    chip boots from flash), then read its UART until `until` shows."""
    with serial.serial_for_url(port, baudrate=115200, timeout=0.2) as line:
        line.dtr = False
        line.rts = True  # EN low: chip in reset
        time.sleep(0.1)
        line.reset_input_buffer()  # what the chip said before this reset is not this boot
        line.rts = False  # EN released with IO0 high: boot from flash
        return read_until(line, until, timeout, record)
