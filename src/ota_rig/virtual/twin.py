"""One virtual board inside the twin's process, from power-on to power-off: a chip, its flash
file, the port it is served on and the threads that run them.

A process runs one board at a time. Over a pty it can power its board off (`OFF`) and put a
new one in its place (`NEW`): new silicon, flash from a given file (erased when the file is
new, as a new chip's), a new pty link, a new log. That is what a fresh process gives, without
starting an interpreter and importing the TLS stack again; the rig reuses a twin process that
way from one scenario to the next (ota_rig.bench.board.TwinKeeper). Nothing of the old board
survives: its Chip (clock, UART buffers, pins, pending resets), its app and every connection
the app held end with its CPU thread, which `power_off` waits for; a CPU thread that does not
end in time makes `power_off` fail, and the rig starts a new process instead.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from ota_rig.virtual import boot
from ota_rig.virtual.chip import Chip, EFuses, Flash
from ota_rig.virtual.transport import PtyServer, Rfc2217Server, Wires

STOP_SECONDS = 2.0  # how long a power-off waits for the CPU thread (the SIGTERM path's wait too)


@dataclass(frozen=True)
class Port:
    """Where the board's UART is served: a pty symlinked at `pty`, or RFC2217 on `rfc2217`
    (0 picks a free port), `plain` relaying DTR/RTS as ser2net does."""

    pty: Path | None = None
    rfc2217: int | None = None
    plain: bool = False


class Twin:
    """A board around `flash`: `power_on()` starts its CPU and its port, `power_off()` stops
    both and closes the flash. Raises OSError when the port cannot be had (the flash is closed
    then), FileExistsError for a pty path that is no twin's link."""

    def __init__(self, flash: Flash, mac: bytes, port: Port, *, pacing: bool = False,
                 bridge_max_baud: int | None = None, io0_low: bool = False) -> None:
        self.flash = flash
        self.chip = Chip(flash, EFuses(mac), pacing=pacing)
        self.chip.uart.bridge_max_baud = bridge_max_baud
        self.chip.pins.io0_low = self.chip.download_strap = io0_low  # the ROM reads IO0 as power comes up
        try:
            if port.pty is not None:
                self.server: PtyServer | Rfc2217Server = PtyServer(self.chip, port.pty)
            else:
                assert port.rfc2217 is not None
                self.server = Rfc2217Server(self.chip, port.rfc2217, plain=port.plain)
        except BaseException:
            flash.close()
            raise
        self.wires = Wires(self.chip, self.server) if isinstance(self.server, PtyServer) else None
        self._cpu = threading.Thread(target=self.chip.run, args=(boot.power_up,), name="cpu", daemon=True)

    @property
    def url(self) -> str:
        return self.server.url

    def power_on(self) -> None:
        threading.Thread(target=self.server.serve_forever, name="transport", daemon=True).start()
        self._cpu.start()

    def power_off(self, timeout: float = STOP_SECONDS) -> bool:
        """Stop the chip and close its port; close the flash once the CPU thread has ended.
        False if it did not end within `timeout`: the flash is then left open, as the thread
        may still write it, and only ending the process ends it (its writes are in the file's
        page cache all along: Flash)."""
        self.chip.stop()
        self.server.close()
        self._cpu.join(timeout)
        if self._cpu.is_alive():
            return False
        self.flash.close()
        return True


class Bench:
    """The process's place for one pty board, driven by commands on standard input, one a line,
    each answered with one line: the wires (`EN 0`, `IO0 1`, ... ota_rig.virtual.transport.Wires)
    go to the board in place; `OFF` powers it off; `NEW {"flash": PATH, "pty": LINK, "log": PATH}`
    (JSON) puts a new board in its place, powered up booting its flash (IO0 pulled up), with the
    process's standard error, where its log goes, reopened on `log` (appended)."""

    def __init__(self, twin: Twin, mac: bytes, pacing: bool, bridge_max_baud: int | None = None) -> None:
        self.twin: Twin | None = twin
        self.mac = mac  # the process's settings, each new board's too
        self.pacing = pacing
        self.bridge_max_baud = bridge_max_baud
        self.boards = 1  # boards this process has run

    def serve(self, commands: TextIO, answers: TextIO) -> None:
        for command in commands:
            answers.write(self.apply(command) + "\n")
            answers.flush()

    def apply(self, command: str) -> str:
        word, _, rest = command.strip().partition(" ")
        if word == "OFF":
            return self.power_off()
        if word == "NEW":
            return self.new(rest)
        if self.twin is None or self.twin.wires is None:
            return "error: no board is powered (send NEW first)"
        return self.twin.wires.apply(command)

    def power_off(self) -> str:
        if self.twin is None:
            return "ok"
        if not self.twin.power_off():
            return f"error: the CPU did not stop within {STOP_SECONDS:g} s"
        self.twin = None
        return "ok"

    def new(self, spec: str) -> str:
        if self.twin is not None:
            return "error: a board is powered; send OFF first"
        try:
            paths = {key: Path(value) for key, value in json.loads(spec).items()}
            flash, link, log = paths["flash"], paths["pty"], paths["log"]
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            return f'error: NEW takes {{"flash": PATH, "pty": LINK, "log": PATH}} in JSON ({err!r})'
        try:
            descriptor = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            sys.stderr.flush()
            os.dup2(descriptor, sys.stderr.fileno())  # the log handler writes to fd 2: now this file
            os.close(descriptor)
            twin = Twin(Flash(flash), self.mac, Port(pty=link), pacing=self.pacing,
                        bridge_max_baud=self.bridge_max_baud)
        except (OSError, ValueError) as err:
            return f"error: {err}"
        twin.power_on()
        self.twin = twin
        self.boards += 1
        return "ok"
