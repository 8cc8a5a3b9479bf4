"""Boards a test holds: a port URL to flash and watch, and a way to reset the chip.

Two ways to reset an ESP32, as on real benches:
- through the USB bridge's DTR/RTS and the dev board's auto-reset circuit (a local port or an
  rfc2217:// port): esptool resets the chip itself (`--before default-reset`), and a reset to
  run the firmware pulses RTS on the open port, as esptool's hard reset does;
- through wires: EN and IO0 driven directly by the host (relays, GPIOs). esptool then runs with
  `--before no-reset --after no-reset`, and the rig moves the pins itself.

`VirtualBoard` runs the twin (`python -m ota_rig.virtual`) as its own process, like a board on a
cable: over RFC2217 it resets through DTR/RTS; over a pty (the fast default in tests: no
network round trips) its EN and IO0 are wired to the process's stdin.

A board on a bench also needs what a desk gives for free: `find_by_mac` picks the right board
among several ports (device names change with plug order; a MAC does not), `PortLock` keeps a
second test session off a board in use, and `open()` waits a bounded time for a port that
vanished (a USB bridge or a chip's native USB re-enumerating after a reset, a hub port
power-cycling).
"""

from __future__ import annotations

import errno
import fcntl
import functools
import glob
import json
import logging
import os
import re
import signal
import stat
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO, Callable, Iterable

import serial
from serial.tools import list_ports

from ota_rig.bench import rfc2217_fix
from ota_rig.bench.flash import Esptool, FlashError
from ota_rig.errors import RigError

log = logging.getLogger(__name__)

BAUD = 115200
RESET_PULSE = 0.1  # seconds EN is held low through DTR/RTS (the bridge's RC circuit needs time)
WIRED_PULSE = 0.01  # a twin's wired EN acts when the command is answered: no circuit to settle
REAPPEAR_TIMEOUT = 10.0  # seconds a vanished port gets to come back (USB re-enumeration takes 1-3 s)
LOCK_DIR_ENV = "OTA_RIG_LOCK_DIR"
PACING_ENV = "RIG_UART_PACING"  # the twin's variable (ota_rig.virtual.__main__): "1", a paced UART
TwinKind = tuple[str | None, bool, int | None]  # what a twin process is started with: MAC, pacing, bridge's baud
NOT_HANDED_BACK = "the last board did not hand its twin process back"  # TwinKeeper.why_new


class BoardError(RigError, RuntimeError):
    """The board could not be started or reached; one sentence."""


class SerialBoard:
    """A board behind a serial port URL (/dev/ttyUSB0, rfc2217://host:port) with the usual
    DTR/RTS auto-reset circuit."""

    # esptool's --before and --after: after writing, the chip stays in the loader, so the new
    # firmware first runs when the rig resets it with the monitor listening (a hard reset
    # would let it talk to the update server before anyone watches).
    esptool_reset = ("default-reset", "no-reset")
    start_seconds = 0.0  # how long the board took to come up (a twin's process start)
    baud_limit: int | None = None  # the rate esptool fell back to when the line refused a faster one
    line_has_rate = True  # False: bytes cross at once at any rate (an unpaced pty twin), so esptool keeps 115200
    can_cut_power = False  # a power switch the rig drives: `power_cycle()` (a twin; a farm place's switch)
    # A real board's Wi-Fi join, NTP and TLS take seconds where the twin's loopback takes
    # milliseconds: the monitor multiplies every timeout a scenario states by this.
    time_scale = 6.0

    def __init__(self, port: str, locate: Callable[[], str] | None = None, place: str | None = None) -> None:
        self.port = port
        self.locate = locate  # where the port is now (a farm's exporter may move it), asked before a reopen
        self.place = place  # the labgrid place the board is in, if any

    def time_lapse(self, rate: float, device_seconds: float) -> float:
        """A real chip's clock runs at its own pace: the rate in force is 1."""
        return 1.0

    @functools.cached_property
    def chip(self) -> str:
        """The chip as esptool names it ("ESP32-D0WD-V3 (revision v3.0)"), asked once."""
        self.enter_bootloader()  # a wired board is put in its loader by the rig, not by esptool
        return Esptool(self.port, chip="auto", before=self.esptool_reset[0], after="no-reset").chip_info().chip

    def open(self, timeout: float = 0.1, reappear: float = REAPPEAR_TIMEOUT,
             held_in_reset: bool = False) -> serial.SerialBase:
        """The port at the ROM's and the sketch's 115200 baud, lines released (chip running).

        `held_in_reset` opens it with RTS asserted and DTR not, EN held low, for a caller that
        resets the board next: the chip then boots once, at that reset. Behind esptool's
        esp_rfc2217_server an open with both lines released resets the chip by itself (the
        server acts on the RTS-off pyserial sends as it opens; esp_rfc2217_server/
        esp_port_manager.py), so the firmware would boot at the open and again at the reset.

        A port that cannot be opened is tried again for `reappear` seconds: after a reset a
        board on native USB (or behind a hub that power-cycles) leaves the bus and comes back.
        Bytes the port already holds are kept (pyserial's open() would drop them): a monitor
        that finds a port again reads what the board said meanwhile; `reset(discard_pending=True)`
        drops them where a clean start is wanted. An rfc2217:// port gets pyserial's RFC2217
        client fixed where it is slow (ota_rig.bench.rfc2217_fix), as esptool's does."""
        if self.port.startswith("rfc2217://"):
            rfc2217_fix.apply()
        deadline = time.monotonic() + reappear
        while True:
            try:
                line = serial.serial_for_url(self.port, baudrate=BAUD, timeout=timeout, do_not_open=True)
                line.dtr = False
                line.rts = held_in_reset
                line._reset_input_buffer = lambda: None  # open() ends by flushing through it: not this once
                try:
                    line.open()
                finally:
                    del line._reset_input_buffer
                return line
            except (serial.SerialException, OSError) as err:
                if self.locate is not None:
                    self._relocate()
                if time.monotonic() >= deadline:
                    waited = f" (waited {reappear:g} s for it to come back)" if reappear else ""
                    raise BoardError(f"cannot open the board's port {self.port}{waited}: {err}") from err
                time.sleep(0.2)
            except ValueError as err:
                raise BoardError(f"cannot open the board's port {self.port}: {err}") from err

    def _relocate(self) -> None:
        """Ask the farm where the port is now (ser2net restarted on another TCP port, a USB bridge
        re-enumerated behind the exporter); keep the old URL if the farm cannot say."""
        assert self.locate is not None
        try:
            moved = self.locate()
        except BoardError as err:
            log.info("could not look the port up again: %s", err)
            return
        if moved != self.port:
            log.info("the board's port moved from %s to %s", self.port, moved)
            self.port = moved

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

    def power_cycle(self, listening: Callable[[], object] | None = None) -> bool:
        """Switch the board off and on; True when its port went away with the power (the caller
        waits for it). A board that can hold its chip in reset calls `listening` with the power
        back and boots it once that returns (the caller reads the port by then). Only a board
        that `can_cut_power` can."""
        raise BoardError(f"the board on {self.port} has no power switch the rig can drive")

    def close(self) -> None:
        """A physical board outlives the test."""

    def __enter__(self) -> "SerialBoard":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class VirtualBoard(SerialBoard):
    """A twin process. Use as a context manager, or call `close()`.

    Its network is the host's loopback, so scenarios' timeouts apply as stated (`time_scale` 1).

    `transport` is "rfc2217" (a free port on 127.0.0.1, DTR/RTS reset) or "pty" (a symlink in
    `workdir`, EN/IO0 wired to the twin's stdin). The twin's own log goes to `workdir/twin.log`.
    It powers up as a board does, IO0 pulled up, booting its flash (with `io0_low`, BOOT held: it
    waits in the ROM loader until `reset()`); `enter_bootloader()` puts it in the ROM loader for
    esptool (OtaScenario does so before each esptool run).
    `pacing` makes its UART take a real line's time at the rate in force (as RIG_UART_PACING=1 in
    the environment, which the twin inherits, does too), and
    `bridge_max_baud` gives it a USB bridge that takes no faster rate (the twin's --bridge-max-baud).
    """

    time_scale = 1.0
    can_cut_power = True
    chip = "ESP32-D0WD-V3 (revision v3.0)"  # what esptool calls the twin (tests/virtual/test_esptool.py)

    def __init__(self, workdir: Path, *, transport: str = "rfc2217", mac: str | None = None,
                 flash: Path | None = None, pacing: bool = False, bridge_max_baud: int | None = None,
                 start_timeout: float = 10.0, io0_low: bool = False, keeper: TwinKeeper | None = None) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.flash_file = Path(flash) if flash else self.workdir / "flash.bin"
        self.transport = transport
        pacing = pacing or os.environ.get(PACING_ENV) == "1"
        argv = [sys.executable, "-m", "ota_rig.virtual", "--flash", str(self.flash_file), "--owner", str(os.getpid())]
        if transport == "rfc2217":
            argv += ["--rfc2217", "0"]
        elif transport == "pty":
            argv += ["--pty", str(self.workdir / "ttyESP32")]
            self.esptool_reset = ("no-reset", "no-reset")
            # A pty moves bytes at once whatever its rate: switching it would cost esptool's
            # 50 ms settle after the change (esptool/loader.py change_baud) and buy nothing.
            self.line_has_rate = pacing or bridge_max_baud is not None
        else:
            raise ValueError(f"unknown transport {transport!r}: use 'rfc2217' or 'pty'")
        if mac:
            argv += ["--mac", mac]
        if io0_low:  # powered up with BOOT held: it waits in the ROM loader until reset with IO0 high
            argv.append("--io0-low")
        if bridge_max_baud:
            argv += ["--bridge-max-baud", str(bridge_max_baud)]
        started = time.monotonic()
        self._argv = argv
        self._env = {**os.environ, "RIG_VIRTUAL_LOG": "INFO", **({PACING_ENV: "1"} if pacing else {})}
        self._start_timeout = start_timeout
        self.log_path = self.workdir / "twin.log"
        self._log = open(self.log_path, "ab")
        # A kept twin process is reused only for what a fresh one would be: a pty twin powered
        # up with IO0 pulled up, with the MAC, pacing and bridge fixed when its process started.
        self._keeper = keeper if transport == "pty" and not io0_low else None
        self._kind: TwinKind = (mac, pacing, bridge_max_baud)
        kept = self._keeper.take(self._kind) if self._keeper else None
        port = self._renew(kept) if kept else None
        if port is None:
            why = self._keeper.why_new if self._keeper else ""
            self._note(f"new twin process{f' ({why})' if why else ''}")
            if self._keeper:
                self._keeper.why_new = NOT_HANDED_BACK  # until the board closes and says otherwise
            port = self._spawn()
        super().__init__(port)
        self.start_seconds = time.monotonic() - started
        log.info("virtual board on %s (pid %d)", self.port, self.process.pid)

    def _note(self, text: str) -> None:
        """A line of the rig's own in twin.log, before what the twin writes there."""
        self._log.write(f"rig: {text}\n".encode())
        self._log.flush()

    def _renew(self, process: subprocess.Popen) -> str | None:
        """Put a new board in a kept twin process (ota_rig.virtual.twin.Bench's NEW): its pty
        link, its flash file and this board's log. The link, or None (the process killed and
        the keeper told why) when the twin refuses."""
        self.process = process
        self._note(f"twin process {process.pid} reused: a new board in it (NEW)")
        link = self._argv[self._argv.index("--pty") + 1]
        spec = json.dumps({"flash": str(self.flash_file), "pty": link, "log": str(self.log_path)})
        try:
            self.wire(f"NEW {spec}")
        except BoardError as err:
            assert self._keeper is not None
            self._keeper.why_new = f"the kept twin process {process.pid} refused a new board: {err}"
            log.warning("%s; starting a new twin process", self._keeper.why_new)
            self._kill()
            return None
        return link

    def _spawn(self) -> str:
        """Start the twin process; its port URL once it listens."""
        self.process = subprocess.Popen(self._argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self._log, env=self._env)
        return self._await_listening(self._start_timeout)

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
            said = line.decode(errors="replace").strip()
            raise BoardError(f"the virtual ESP32 did not start (see {self.log_path}): {said}")
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
            time.sleep(WIRED_PULSE)
            self.wire("EN 1")

    def reset(self, line: serial.SerialBase, discard_pending: bool = False) -> None:
        if not self.wired:
            super().reset(line, discard_pending)
            return
        self.wire("IO0 1", "EN 0")
        time.sleep(WIRED_PULSE)
        if discard_pending:
            line.reset_input_buffer()
        self.wire("EN 1")

    def power_cycle(self, listening: Callable[[], object] | None = None, off: float = 0.05) -> bool:
        """Cut the power and restore it after `off` seconds: the twin process is killed
        (SIGKILL, mid-instruction) and started again on the same flash file, which keeps
        every byte written before the cut, as a flash chip does. It boots its flash by
        itself, as a board whose IO0 is pulled up does. A pty comes back at the same path,
        holding what the chip said until a reader opens it (`open()` keeps it), as a USB-serial
        adapter that stays on the bench would have shown it; over RFC2217 that is lost.
        True: the port went away with the power (the monitor finds it again)."""
        self.power_off()
        time.sleep(off)
        self.power_on()
        return True

    def power_off(self) -> None:
        """The first half of `power_cycle`: the process is killed, its port goes with it."""
        if self.transport == "pty":
            Path(self.port).unlink(missing_ok=True)  # no reader may open a stale /dev/pts name
        else:
            self._argv[self._argv.index("--rfc2217") + 1] = self.port.rsplit(":", 1)[1]  # same port
        self._kill()

    def power_on(self) -> None:
        """The second half of `power_cycle`: the twin starts again on its flash and port."""
        self.port = self._spawn()
        log.info("virtual board powered up, now pid %d", self.process.pid)

    def time_lapse(self, rate: float, device_seconds: float) -> float:
        """Run the twin's clock `rate` times faster for its next `device_seconds` (see
        ota_rig.virtual.chip.Clock); the rate in force, 1 when the twin has no wires."""
        if not self.wired:
            return 1.0
        self.wire(f"CLOCK {rate:g} {device_seconds:g}")
        return rate

    def unplug(self) -> None:
        """Take the pty off the host, as a pulled cable (the chip keeps running)."""
        self.wire("USB 0")

    def plug(self) -> None:
        self.wire("USB 1")

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def close(self) -> None:
        """Stop the twin the way a user would (SIGTERM): it powers its board off and exits. A
        board from a keeper is powered off instead (OFF: its CPU stopped, its flash closed, its
        pty link gone) and its process handed back; a twin that does not power off
        cleanly (a CPU thread stuck past the twin's wait) is killed, and the keeper says why
        when it starts the next one. Closing again does nothing."""
        if self._log.closed:
            return
        if self._keeper is not None and self.process.poll() is None:
            try:
                self.wire("OFF")
            except BoardError as err:
                self._keeper.why_new = f"twin process {self.process.pid} did not power off cleanly: {err}"
                log.warning("%s; it is killed", self._keeper.why_new)
                self._note(f"{self._keeper.why_new}; killed")
                self._kill()
            else:
                self._keeper.keep(self._kind, self.process)
                self._log.close()
                return
        elif self._keeper is not None:
            self._keeper.why_new = f"twin process {self.process.pid} had exited (status {self.process.returncode})"
        _stop(self.process)
        self._log.close()

    def _kill(self) -> None:
        self.process.kill()
        _stop(self.process)


class TwinKeeper:
    """One twin process kept for a test session (each xdist worker has its own) and handed
    from board to board: a VirtualBoard given the keeper puts a new board into the kept process
    (ota_rig.virtual.twin: new silicon, its own flash file, pty and log) instead of starting
    one, about 0.2 s of interpreter start and imports saved a scenario, and powers it off when
    it closes. A board gets exactly what a fresh process would give it: its flash file
    (erased when new), a POWERON_RESET boot, its own twin.log; nothing of the last board
    survives. Should the kept twin fail to power off or refuse a new board, it is killed and
    the next board starts a new process, with the reason as the first line of its twin.log
    (`why_new`). `close()` stops the kept process."""

    def __init__(self) -> None:
        self._kept: tuple[TwinKind, subprocess.Popen] | None = None
        self.why_new = "the first board of this keeper"  # why the next board needs a new process

    def take(self, kind: TwinKind) -> subprocess.Popen | None:
        """The kept process if it suits a board of `kind` (MAC, pacing, bridge) and still runs; None
        when the board must start one (`why_new` says why)."""
        kept, self._kept = self._kept, None
        if kept is None:
            return None
        if kept[0] != kind or kept[1].poll() is not None:
            exited = kept[1].poll() is not None
            self.why_new = (f"twin process {kept[1].pid} had exited (status {kept[1].returncode})" if exited
                            else "the kept twin process has another MAC, pacing or bridge")
            _stop(kept[1])
            return None
        self.why_new = NOT_HANDED_BACK  # until the board closes and says otherwise
        return kept[1]

    def keep(self, kind: TwinKind, process: subprocess.Popen) -> None:
        if self._kept is not None:
            _stop(self._kept[1])
        self._kept = (kind, process)

    def close(self) -> None:
        if self._kept is not None:
            _stop(self._kept[1])
            self._kept = None


def _stop(process: subprocess.Popen) -> None:
    """End a twin process (SIGTERM: it powers its board off), killed if it does not within 5 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for stream in (process.stdin, process.stdout):
        if stream:
            try:
                stream.close()
            except OSError:
                pass


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
    with board.open(timeout=0.2, held_in_reset=True) as line:
        board.reset(line, discard_pending=True)
        return read_until(line, until, timeout, record)


class PortLock:
    """An exclusive claim on a board's port for one test session, so two sessions (two CI jobs
    on one runner, an engineer and a job) never flash the same board.

    The claim is an flock on a file named after the port's real path (so /dev/ttyUSB0 and its
    /dev/serial/by-id/... link are one board) in `OTA_RIG_LOCK_DIR` (default: a folder of the
    user's in the system temp dir, made with mode 0700). The kernel drops it when the process
    dies, so a killed session leaves no stale lock. The file names the holder, for the message
    the next session gets. It is opened without following links, and the default folder must be
    the user's alone: a link planted there cannot make the rig overwrite another file.
    """

    def __init__(self, port: str, folder: Path | None = None) -> None:
        self.port = port
        chosen = folder or os.environ.get(LOCK_DIR_ENV)
        folder = Path(chosen or Path(tempfile.gettempdir()) / f"ota-rig-locks-{os.getuid()}")
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        if chosen is None:
            _check_private(folder)
        self.path = folder / (re.sub(r"[^\w.\-]+", "_", port_identity(port)).strip("_") + ".lock")
        self._file: BinaryIO | None = None

    def acquire(self) -> "PortLock":
        try:
            self._file = claim(self.path)
        except ClaimHeld as held:
            raise BoardError(f"the board on {self.port} is in use by another test session ({held})") from None
        return self

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing drops the flock; the file stays, as lock files do
            self._file = None

    def __enter__(self) -> "PortLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class ClaimHeld(Exception):
    """Another process holds the claim; str() names it as its holder wrote."""


def claim(path: Path) -> BinaryIO:
    """An exclusive flock on `path` (created 0600, never through a symbolic link), with this
    process named in it for whoever finds it held; the open file, which holds the claim until
    it is closed (or the process dies). ClaimHeld names the holder; BoardError a planted link."""
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise BoardError(
                f"the lock file {path} is a symbolic link, which the rig never follows; "
                f"remove it (or set {LOCK_DIR_ENV} to a folder only you can write)"
            ) from None
        raise
    handle = os.fdopen(descriptor, "r+b")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = handle.read().decode(errors="replace").strip() or "unknown"
        handle.close()
        raise ClaimHeld(holder) from None
    handle.truncate()
    handle.write(f"pid {os.getpid()}: {' '.join(sys.argv)[:200]}".encode())
    handle.flush()
    return handle


def _check_private(folder: Path) -> None:
    """BoardError unless `folder` is a real folder of this user's that nobody else can write."""
    info = os.lstat(folder)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
        raise BoardError(
            f"the lock folder {folder} is not a folder only you can write; remove it "
            f"(the rig makes it again) or set {LOCK_DIR_ENV} to one"
        )


def port_identity(port: str) -> str:
    """What makes two port names one board: a device's real path, or a URL as given."""
    return port if "://" in port else os.path.realpath(port)


def scan_ports(patterns: Iterable[str] = ()) -> list[str]:
    """The ports `find_by_mac` tries: each pattern a device path, a glob or a URL; with no
    patterns, every serial port the OS lists (USB bridges, native USB, built-in UARTs)."""
    patterns = list(patterns)
    if not patterns:
        return sorted(port.device for port in list_ports.comports())
    found: list[str] = []
    for pattern in patterns:
        found += [pattern] if "://" in pattern else sorted(glob.glob(pattern))
    unique = {port_identity(port): port for port in found}
    return list(unique.values())


def find_by_mac(mac: str, ports: Iterable[str], connect_attempts: int = 2) -> str:
    """The port whose chip has factory MAC `mac`, asked of every port at once with esptool
    `read-mac` (esptool resets each board into its loader through DTR/RTS, as it always does;
    a port another session has locked is left alone).
    BoardError, listing what each port answered, when none or more than one match."""
    wanted = mac.strip().lower().replace("-", ":")
    ports = list(ports)
    if not ports:
        raise BoardError(f"no serial ports to search for the board with MAC {wanted}")

    def ask(port: str) -> str:
        try:
            # A board another session holds is not touched: esptool would reset it.
            with PortLock(port):
                return Esptool(
                    port, chip="auto", after="hard-reset", timeout=60, connect_attempts=connect_attempts
                ).read_mac()
        except BoardError:
            return "not asked (in use by another test session)"
        except FlashError as err:
            return f"no answer ({err})"

    with ThreadPoolExecutor(max_workers=min(8, len(ports))) as pool:
        answers = dict(zip(ports, pool.map(ask, ports), strict=True))
    for port, answer in answers.items():
        log.info("MAC scan: %s -> %s", port, answer)
    matches = [port for port, answer in answers.items() if answer == wanted]
    if len(matches) == 1:
        return matches[0]
    seen = "; ".join(f"{port}: {answer}" for port, answer in answers.items())
    if not matches:
        raise BoardError(f"no board with MAC {wanted} on the scanned ports ({seen})")
    raise BoardError(f"more than one port answers with MAC {wanted} ({seen})")
