"""The rig's hands on flash: esptool, run exactly as a user types it, on any port URL.

Every operation is one `python -m esptool ...` subprocess against a port: a device path
(/dev/ttyUSB0), a pty path, or rfc2217://host:port. Running the real CLI keeps the rig honest
(same code path, same resets, same output as a user's) and isolates esptool's global state.
It runs through `python -m ota_rig.bench.esptool_cli` (ESPTOOL), which is `python -m esptool`
with pyserial's RFC2217 client fixed where it is slow (ota_rig.bench.rfc2217_fix, issue 17):
the arguments and everything esptool prints are the same.
When esptool fails, `FlashError` says what went wrong in one sentence and keeps the whole
esptool output for the log.
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from ota_rig.errors import RigError

log = logging.getLogger(__name__)

# `python -m esptool`, with pyserial's RFC2217 client at line speed (see esptool_cli).
ESPTOOL = (sys.executable, "-m", "ota_rig.bench.esptool_cli")


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
    ) -> None:
        self.port = port
        self.chip = chip
        self.baud = baud
        self.before = before
        self.after = after
        self.timeout = timeout
        self.connect_attempts = connect_attempts  # esptool's default (7) unless set
        self.last_output = ""  # everything the last command printed

    def run(self, *command: str, after: str | None = None, stub: bool = True) -> str:
        """Run one esptool command; return its output or raise FlashError."""
        argv = [
            *ESPTOOL,
            "--chip",
            self.chip,
            "--port",
            self.port,
            "--before",
            self.before,
            "--after",
            after or self.after,
        ]
        if self.baud:
            argv += ["--baud", str(self.baud)]
        if self.connect_attempts is not None:
            argv += ["--connect-attempts", str(self.connect_attempts)]
        if not stub:
            argv.append("--no-stub")
        argv += command
        log.info("esptool %s", " ".join(argv[3:]))
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=self.timeout)
        except subprocess.TimeoutExpired as exc:
            output = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout or ""
            raise FlashError(
                f"timeout: esptool {command[0]} on {self.port} did not finish in {self.timeout:.0f} s", output
            ) from None
        output = done.stdout + done.stderr
        self.last_output = output
        log.debug("esptool output:\n%s", output)
        if done.returncode != 0:
            raise FlashError(self._diagnose(output, command[0]), output)
        return output

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

    def write(self, files: Iterable[tuple[int, Path]], *, compress: bool = True, stub: bool = True) -> str:
        """Write each file at its offset, as `esptool write-flash` does, and verify its hash."""
        args = ["write-flash", "--compress" if compress else "--no-compress"]
        for offset, path in files:
            args += [f"0x{offset:x}", str(path)]
        return self.run(*args, stub=stub)

    def read(self, offset: int, size: int, *, stub: bool = True) -> bytes:
        with tempfile.TemporaryDirectory(prefix="rig-read-") as tmp:
            out = Path(tmp) / "flash.bin"
            self.run("read-flash", f"0x{offset:x}", f"0x{size:x}", str(out), stub=stub)
            return out.read_bytes()

    def erase_region(self, offset: int, size: int) -> str:
        return self.run("erase-region", f"0x{offset:x}", f"0x{size:x}")

    def erase_all(self) -> str:
        return self.run("erase-flash")
