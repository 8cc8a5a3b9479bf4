"""Command line of the virtual ESP32.

    python -m rig.virtual --flash PATH (--rfc2217 PORT | --pty LINK) [--mac XX:XX:XX:XX:XX:XX]

It prints one line saying where it listens, then runs until SIGTERM or SIGINT, when it flushes
the flash to its file and exits 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from . import boot
from .chip import DEFAULT_MAC, Chip, EFuses, Flash, parse_mac
from .transport import PtyServer, Rfc2217Server, Wires

PACING_ENV = "RIG_UART_PACING"

EPILOG = f"""\
With --rfc2217 the port carries DTR/RTS, so esptool's resets work as on a USB bridge (PORT 0
picks a free port). A pty carries no modem lines: the twin starts in download mode, and its EN
and IO0 pins are wired to standard input (lines `EN 0`, `EN 1`, `IO0 0`, `IO0 1`; `USB 0` and
`USB 1` take the port off the host and back, as a pulled cable; `NOISE <hex bytes>` puts bytes
on the line as a flaky cable would; `CLOCK <rate> <seconds>` runs the chip's clock faster for
that many device seconds; each is answered `ok` on standard output).
Set {PACING_ENV}=1 to make the UART take the time a real line takes at its baud rate.
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m rig.virtual", description="A virtual ESP32-D0WD-V3.", epilog=EPILOG)
    parser.add_argument("--flash", required=True, type=Path, help="file holding the 4 MB flash (created erased)")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--rfc2217", type=int, metavar="PORT", help="serve RFC2217 on 127.0.0.1:PORT")
    where.add_argument("--pty", type=Path, metavar="LINK", help="serve a pty, symlinked at LINK")
    parser.add_argument("--mac", default=DEFAULT_MAC, help=f"factory MAC in eFuse (default {DEFAULT_MAC})")
    args = parser.parse_args(argv)
    if args.rfc2217 is not None and not 0 <= args.rfc2217 <= 65535:
        parser.error(f"argument --rfc2217: {args.rfc2217} is not a TCP port (0 to 65535; 0 picks a free one)")
    try:
        args.mac = parse_mac(args.mac)
    except ValueError as err:
        parser.error(str(err))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=os.environ.get("RIG_VIRTUAL_LOG", "WARNING"), format="twin %(name)s: %(message)s")
    try:
        flash = Flash(args.flash)
    except (OSError, ValueError) as err:
        print(f"error: cannot use {args.flash} as flash: {err}", file=sys.stderr)
        return 2
    chip = Chip(flash, EFuses(args.mac), pacing=os.environ.get(PACING_ENV) == "1")
    try:
        if args.rfc2217 is not None:
            server: Rfc2217Server | PtyServer = Rfc2217Server(chip, args.rfc2217)
        else:
            server = PtyServer(chip, args.pty)
            # No modem lines: IO0 starts low, so the board waits in the loader; EN and IO0
            # are wired to standard input instead.
            chip.pins.io0_low = chip.download_strap = True
            threading.Thread(target=Wires(chip, server, sys.stdin, sys.stdout).serve_forever, name="wires", daemon=True).start()
    except OSError as err:
        print(f"error: cannot listen: {err}", file=sys.stderr)
        flash.close()
        return 2

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    cpu = threading.Thread(target=chip.run, args=(boot.power_up,), name="cpu", daemon=True)
    threading.Thread(target=server.serve_forever, name="transport", daemon=True).start()
    cpu.start()
    mac = ":".join(f"{b:02x}" for b in args.mac)
    print(f"virtual ESP32 {mac} listening on {server.url}", flush=True)
    while not stop.wait(0.2):  # a bare wait() can sleep through the signal handler
        pass
    chip.stop()
    server.close()
    cpu.join(timeout=2)
    flash.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
