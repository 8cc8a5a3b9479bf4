"""The rig's hands on flash: esptool, run exactly as a user types it, on any port URL.

Every operation is one esptool command line against a port: a device path (/dev/ttyUSB0), a
pty path, or rfc2217://host:port. Running the real CLI keeps the rig honest (same code path,
same resets, same output as a user's). By default it is one `python -m esptool ...` process a
command, which also isolates esptool's global state; it runs through `python -m
ota_rig.bench.esptool_cli` (ESPTOOL), which is `python -m esptool` with pyserial's RFC2217
client fixed where it is slow (ota_rig.bench.rfc2217_fix, issue 17): the arguments and
everything esptool prints are the same. With `in_process=True` the same command lines run in
this process through esptool's documented `esptool.main(argv)` (ota_rig.bench.esptool_cli.
in_process): no interpreter start and no esptool import a command, and `session()` lets
several commands share one connection (one reset, one stub upload, one baud change).

The line: esptool syncs with the ROM at 115200 and, once its stub runs, switches both ends to
`baud` (`--baud`; esptool's `change_baud`, esptool/loader.py). The rig asks for the fastest
rate a USB bridge commonly takes, 921600 (`line_baud`), unless told otherwise. A bridge that
cannot take it fails in one of two ways, both met in esptool's issues: its driver refuses the
rate (esptool: "Failed to set baud rate ... The driver may not support this rate.", loader.py
`_set_port_baudrate`; espressif/esptool#102), or an RFC2217 server answers with the rate it
kept (pyserial's client then raises "remote rejected value for option 'baudrate'"); or the
bridge takes it and the line does not carry it, so the chip stops answering right after
"Changed." (espressif/esptool#255, #435: "Timed out waiting for packet header", "No serial data
received"). Either way the rig runs the command again at 115200, once, and says so in the
output it keeps (`fell_back`).

When esptool fails, `FlashError` says what went wrong in one sentence and keeps the whole
esptool output for the log.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from ota_rig.bench import esptool_cli
from ota_rig.errors import RigError

log = logging.getLogger(__name__)

# `python -m esptool`, with pyserial's RFC2217 client at line speed (see esptool_cli).
ESPTOOL = (sys.executable, "-m", "ota_rig.bench.esptool_cli")

ROM_BAUD = 115200  # the ROM loader's rate after a reset, esptool's ESPLoader.ESP_ROM_BAUD
FAST_BAUD = 921600  # the rig's default: CP210x, CH340 and FTDI bridges take it
# esptool's own variable: the default of its --baud (esptool/__init__.py, 5.6.0:
# `default=os.environ.get("ESPTOOL_BAUD", ESPLoader.ESP_ROM_BAUD)`); an explicit --baud wins.
BAUD_ENV = "ESPTOOL_BAUD"


def line_baud(chosen: int | None = None) -> int:
    """The rate esptool switches the line to: `chosen` (--ota-baud), else ESPTOOL_BAUD as esptool
    reads it, else 921600. RigError for an ESPTOOL_BAUD that is not a positive number."""
    if chosen is not None:
        return chosen
    text = os.environ.get(BAUD_ENV)
    if text is None:
        return FAST_BAUD
    try:
        baud = int(text)
    except ValueError:
        baud = 0
    if baud <= 0:
        raise RigError(f"{BAUD_ENV}={text!r} is not a baud rate: set it to a number such as 921600, or unset it")
    return baud


# A bridge that refused the rate, or a line that stopped carrying data once the rate changed
# (see the module's docstring for the sources).
_REFUSED_RATE = r"Failed to set baud rate|remote rejected value for option 'baudrate'"
_LOST_AT_RATE = (r"No serial data received|Timed out waiting for packet|Invalid head of packet|"
                 r"Serial data stream stopped|Packet content transfer stopped|No more data to read|"
                 r"The chip stopped responding")


def rate_failed(output: str) -> bool:
    """Whether esptool failed because the line did not take the baud rate it switched to."""
    if re.search(_REFUSED_RATE, output):
        return True
    changed = output.rfind("\nChanged.")
    return changed >= 0 and re.search(_LOST_AT_RATE, output[changed:]) is not None


def skipped_writes(output: str) -> list[int]:
    """The offsets `write-flash --skip-flashed` left alone because flash already held the file
    (esptool/cmds.py `write_flash`: "... at 0x00001000 already in flash, skipping write.")."""
    return [int(found, 16) for found in re.findall(r" at (0x[0-9a-fA-F]+) already in flash, skipping write", output)]


class FlashError(RigError, RuntimeError):
    """esptool failed; str() is one sentence, `output` is everything esptool printed."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message)
        self.output = output


@dataclass(frozen=True)
class ChipInfo:
    """What esptool reports when it connects."""

    chip: str  # "ESP32-D0WD-V3 (revision v3.0)"
    features: str
    crystal: str  # "40MHz"
    mac: str  # "24:6f:28:7a:d8:84"


def connected_chip(output: str) -> ChipInfo | None:
    """The chip esptool described when it connected, from any command's output (None if it
    never got that far)."""
    fields = dict(re.findall(r"^(Chip type|Features|Crystal frequency|MAC):\s+(.+)$", output, re.M))
    if len(fields) < 4:
        return None
    return ChipInfo(fields["Chip type"], fields["Features"], fields["Crystal frequency"], fields["MAC"])


# esptool's words for the failures a rig meets, and the sentence the rig says instead.
_DIAGNOSES = [
    (
        r"No serial data received|Failed to connect to ESP32|Invalid head of packet|Wrong boot mode detected",
        "no sync: the board on {port} did not answer esptool "
        "(is it powered, on this port, and able to enter download mode?)",
    ),
    (
        r"This chip is (\S+), not (\S+)|doesn't appear to be an? (\S+)",
        "wrong chip: the board on {port} is not the {chip} esptool was told to expect",
    ),
    # pyserial's RFC2217 client waits for the server to acknowledge each DTR/RTS change; ser2net in
    # front of a device without modem lines (a pty: TIOCMSET fails) never does, and esptool then says
    # "the port is busy or doesn't exist" too (tests/farm/test_farm.py, docs/hardware.md).
    (
        r"timeout while waiting for option 'control'",
        "no line control: the RFC2217 server at {port} did not acknowledge a DTR/RTS change, so esptool cannot "
        "reset the board (ser2net in front of a port without modem lines, such as a pty, never does)",
    ),
    # esptool says "the port is busy or doesn't exist" for both: the OS error decides.
    (
        r"Connection refused|No such file or directory|Name or service not known",
        "port not found: nothing answers at {port}",
    ),
    (
        r"Could not exclusively lock port|Resource temporarily unavailable|port is busy|Device or resource busy",
        "port busy: another program holds {port}",
    ),
    (
        r"MD5 of file does not match data in flash|Verification failed",
        "verify failed: flash on {port} does not hold what was written",
    ),
    (r"will not fit in", "too large: the image does not fit the flash on {port}"),
]


class Esptool:
    """esptool bound to one port, with the reset strategy that port needs.

    `before`/`after` are esptool's --before/--after; a pty cannot carry DTR/RTS, so use
    before="no-reset" there (and after="no-reset" to keep the board in the loader).
    `baud` is esptool's --baud (None: not passed, esptool's own default). If the line does not
    take it, the command runs again at 115200 after `reconnect()` (which must put the board back
    in its loader where esptool's --before cannot), and `baud` stays 115200 for later commands.
    `output` keeps everything esptool printed through this object, in order.
    """

    def __init__(
        self,
        port: str,
        *,
        chip: str = "esp32",
        baud: int | None = None,
        before: str = "default-reset",
        after: str = "hard-reset",
        timeout: float = 300.0,
        connect_attempts: int | None = None,
        in_process: bool = False,
        reconnect: Callable[[], None] | None = None,
    ) -> None:
        self.port = port
        self.chip = chip
        self.baud = baud
        self.before = before
        self.after = after
        self.timeout = timeout  # a process's; in this process esptool's own timeouts bound a command
        self.connect_attempts = connect_attempts  # esptool's default (7) unless set
        self.in_process = in_process
        self.reconnect = reconnect
        self.fell_back: int | None = None  # the rate the line did not take, once the rig fell back from it
        self.last_output = ""  # everything the last command printed
        self.output: list[str] = []
        self._esp: Any = None  # the connection a session() shares

    def _argv(self, command: tuple[str, ...], after: str, stub: bool) -> list[str]:
        argv = ["--chip", self.chip, "--port", self.port, "--before", self.before, "--after", after]
        if self.baud:
            argv += ["--baud", str(self.baud)]
        if self.connect_attempts is not None:
            argv += ["--connect-attempts", str(self.connect_attempts)]
        if not stub:
            argv.append("--no-stub")
        return argv + list(command)

    def _retry_slower(self, output: str, what: str) -> bool:
        """Whether to try `what` again at 115200: the line did not take the rate (once)."""
        if self.fell_back or not (self.baud and self.baud > ROM_BAUD and rate_failed(output)):
            return False
        self.fell_back, self.baud = self.baud, ROM_BAUD
        note = f"[rig] the line on {self.port} did not take {self.fell_back} baud: esptool {what} again at {ROM_BAUD}"
        log.warning("%s", note)
        self.output.append(f"\n{note}\n\n")
        if self.reconnect is not None:
            self.reconnect()
        return True

    def run(self, *command: str, after: str | None = None, stub: bool = True) -> str:
        """Run one esptool command; return its output or raise FlashError. A line that does
        not take the baud rate gets the command again at 115200."""
        while True:
            argv = self._argv(command, after or self.after, stub)
            log.info("esptool %s", " ".join(argv))
            if self.in_process or self._esp is not None:
                status, output = esptool_cli.in_process(argv, esp=self._esp)
            else:
                status, output = self._process(argv, command[0])
            self.last_output = output
            self.output.append(output)
            log.debug("esptool output:\n%s", output)
            if status == 0:
                return output
            if self._esp is None and self._retry_slower(output, command[0]):
                continue
            raise FlashError(self._diagnose(output, command[0]), "".join(self.output))

    def _call(self, command: str, call: Callable[[Any, Any], object]) -> str:
        """In a session: `call(esptool.cmds, esp)`, one of esptool's public API functions on the
        session's connection, for the command line `command` would be; its output or FlashError."""
        import esptool.cmds

        log.info("esptool %s (in the session on %s)", command, self.port)
        status, output = esptool_cli.captured(lambda: call(esptool.cmds, self._esp))
        self.last_output = output
        self.output.append(output)
        if status != 0:
            raise FlashError(self._diagnose(output, command), "".join(self.output))
        return output

    def _process(self, argv: list[str], command: str) -> tuple[int, str]:
        try:
            done = subprocess.run([*ESPTOOL, *argv], capture_output=True, text=True, timeout=self.timeout)
        except subprocess.TimeoutExpired as exc:
            output = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout or ""
            self.output.append(output)
            raise FlashError(
                f"timeout: esptool {command} on {self.port} did not finish in {self.timeout:.0f} s", output
            ) from None
        return done.returncode, done.stdout + done.stderr

    @contextmanager
    def session(self) -> Iterator["Esptool"]:
        """The commands run inside share one connection (in this process): esptool connects,
        uploads its stub, changes the baud rate and attaches the flash once, as its CLI does
        before a command (esptool/__init__.py `prepare_esp_object`, through the public
        `connect_esp`, `run_stub`, `change_baud` and `attach_flash`). Then `read` and `holds` call
        esptool's public API on that connection (`esptool.cmds.read_flash`, `verify_flash`:
        what the command lines `read-flash` and `verify-flash` run, without the chip
        description, stub check and baud change the CLI repeats for each command), and `run`
        passes a command line to `esptool.main(argv, esp)`, which skips connecting and finds
        the stub running (the state esptool is in when its sync finds a stub: "Stub flasher is
        already running. No upload is necessary."). `after` applies when the session ends.
        Outside `in_process` each command is a process of its own."""
        if not self.in_process:
            yield self
            return
        import esptool

        after, self.after = self.after, "no-reset-stub"  # "no-reset" would leave the stub (cmds.reset_chip)
        try:
            self._esp = self._connect(esptool)
            yield self
        finally:
            esp, self._esp, self.after = self._esp, None, after
            if esp is not None:
                def leave() -> None:
                    try:
                        esptool.reset_chip(esp, after)
                    finally:
                        esp._port.close()

                self.output.append(esptool_cli.captured(leave)[1])

    def _connect(self, esptool: Any) -> Any:
        while True:
            connected: list[Any] = []
            status, output = esptool_cli.captured(functools.partial(self._connect_once, esptool, connected))
            self.last_output = output
            self.output.append(output)
            if status == 0:
                return connected[-1]
            if not self._retry_slower(output, "connect"):
                raise FlashError(self._diagnose(output, "connect"), "".join(self.output))

    def _connect_once(self, esptool: Any, connected: list[Any]) -> None:
        attempts = {} if self.connect_attempts is None else {"connect_attempts": self.connect_attempts}
        esp = esptool.connect_esp(port=self.port, chip=self.chip, initial_baud=ROM_BAUD, before=self.before, **attempts)
        esp = esptool.run_stub(esp)
        if self.baud and self.baud > ROM_BAUD:
            esp.change_baud(self.baud)
        esp.sync_stub_detected = True
        connected.append(esp)
        esptool.attach_flash(esp)

    def _diagnose(self, output: str, command: str) -> str:
        for pattern, sentence in _DIAGNOSES:
            if re.search(pattern, output):
                return sentence.format(port=self.port, chip=self.chip.upper())
        fatal = re.findall(r"A fatal error occurred: (.+)", output)
        detail = fatal[-1].strip() if fatal else (output.strip().splitlines() or ["no output"])[-1]
        return f"esptool {command} on {self.port} failed: {detail}"

    # --- what the rig does with a board -------------------------------------------------
    def chip_info(self) -> ChipInfo:
        output = self.run("chip-id")
        info = connected_chip(output)
        if info is None:
            raise FlashError(f"esptool chip-id on {self.port} did not describe the chip", output)
        return info

    def read_mac(self) -> str:
        return re.findall(r"^MAC:\s+([0-9a-f:]{17})$", self.run("read-mac"), re.M)[-1]

    def write(self, files: Iterable[tuple[int, Path]], *, compress: bool = True, stub: bool = True,
              skip_flashed: bool = False) -> str:
        """Write each file at its offset, as `esptool write-flash` does, and verify its hash.

        With `skip_flashed`, esptool first asks the chip for the MD5 of each region and leaves
        alone those that already hold their file (`write-flash --skip-flashed`, esptool 5.x:
        "... already in flash, skipping write."; `skipped_writes` lists them)."""
        args = ["write-flash", "--compress" if compress else "--no-compress"]
        if skip_flashed:
            args.append("--skip-flashed")
        for offset, path in files:
            args += [f"0x{offset:x}", str(path)]
        return self.run(*args, stub=stub)

    def read(self, offset: int, size: int, *, stub: bool = True) -> bytes:
        with tempfile.TemporaryDirectory(prefix="rig-read-") as tmp:
            out = Path(tmp) / "flash.bin"
            if self._esp is not None:
                self._call("read-flash", lambda cmds, esp: cmds.read_flash(esp, offset, size, str(out)))
            else:
                self.run("read-flash", f"0x{offset:x}", f"0x{size:x}", str(out), stub=stub)
            return out.read_bytes()

    def holds(self, offset: int, path: Path) -> bool:
        """Whether flash at `offset` holds the file, by `esptool verify-flash`: the chip (its stub)
        hashes the region and esptool compares the MD5 with the file's ("Verification successful
        (digest matched)."), so nothing is read back over the line (esptool/cmds.py `verify_flash`).
        The file is padded to 4 bytes with 0xFF, as esptool pads it."""
        try:
            if self._esp is not None:
                self._call("verify-flash", lambda cmds, esp: cmds.verify_flash(esp, [(offset, str(path))]))
            else:
                self.run("verify-flash", f"0x{offset:x}", str(path))
        except FlashError as err:
            if "Verification failed (digest mismatch)." in self.last_output:
                return False
            raise err
        return True

    def erase_region(self, offset: int, size: int) -> str:
        return self.run("erase-region", f"0x{offset:x}", f"0x{size:x}")

    def erase_all(self) -> str:
        return self.run("erase-flash")
