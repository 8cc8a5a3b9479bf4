"""Command line of the virtual ESP32.

    python -m ota_rig.virtual --flash PATH (--rfc2217 PORT | --pty LINK) [--io0-low] [--mac XX:XX:XX:XX:XX:XX]
                          [--owner PID] [--bridge-max-baud BAUD]

It prints one line saying where it listens, then runs until SIGTERM or SIGINT (or, with
--owner, until that process ends), when it powers the chip off (every flash write is in the
file already), removes its pty link and exits 0. A --pty path that exists and is not a twin's
old link is refused, never replaced. The chip powers up as a dev board does, IO0 pulled up: it
boots what its flash holds, unless --io0-low holds IO0 low (the BOOT button) for the ROM loader.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from ota_rig.virtual.chip import DEFAULT_MAC, Flash, parse_mac
from ota_rig.virtual.twin import Bench, Port, Twin

PACING_ENV = "RIG_UART_PACING"

EPILOG = f"""\
At power-on the chip boots from flash, as a board whose IO0 is pulled up does; with --io0-low
it waits in the ROM's download mode instead. With --rfc2217 the port carries DTR/RTS, so
esptool's resets work as on a USB bridge (PORT 0 picks a free port). A pty carries no modem
lines: its EN and IO0 pins are wired to standard input instead, one command a line, each
answered `ok` on standard output. `EN 0` holds the chip in reset and `EN 1` releases it, when
the ROM reads IO0: `IO0 0`, `EN 0`, `EN 1` enters the loader, `IO0 1`, `EN 0`, `EN 1` boots the
flash (IO0 held by --io0-low stays low until `IO0 1`). `USB 0` and `USB 1` take the port off
the host and back, as a pulled cable; `NOISE <hex bytes>` puts bytes on the line as a flaky
cable would; `CLOCK <rate> <seconds>` runs the chip's clock faster for that many device seconds.
`OFF` powers the board off; `NEW {{"flash": PATH, "pty": LINK, "log": PATH}}` then puts a new one
in this process, as a new process would start it (ota_rig.virtual.twin).
Set {PACING_ENV}=1 to make the UART take the time a real line takes at its baud rate.
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m ota_rig.virtual", description="A virtual ESP32-D0WD-V3.", epilog=EPILOG
    )
    parser.add_argument("--flash", required=True, type=Path, help="file holding the 4 MB flash (created erased)")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--rfc2217", type=int, metavar="PORT", help="serve RFC2217 on 127.0.0.1:PORT")
    parser.add_argument(
        "--plain-rfc2217",
        action="store_true",
        help="relay DTR/RTS one change at a time as ser2net or pyserial's rfc2217_server do, instead of "
        "running esptool's reset on this host as esp_rfc2217_server does (espressif/esptool#383)",
    )
    where.add_argument("--pty", type=Path, metavar="LINK", help="serve a pty, symlinked at LINK")
    parser.add_argument(
        "--io0-low",
        action="store_true",
        help="power up with IO0 held low, which is what holding the BOOT button at power-on "
        "does: the ROM waits in download mode for esptool (default: IO0 pulled up, the "
        "chip boots from flash)",
    )
    parser.add_argument(
        "--bridge-max-baud",
        type=int,
        metavar="BAUD",
        help="the fastest rate the USB bridge takes: over RFC2217 a faster one is refused (the server "
        "answers with the rate in force); on either port, while the chip's UART runs faster nothing "
        "crosses the line (default: any rate)",
    )
    parser.add_argument("--mac", default=DEFAULT_MAC, help=f"factory MAC in eFuse (default {DEFAULT_MAC})")
    parser.add_argument(
        "--owner",
        type=int,
        metavar="PID",
        help="the process that started the twin: when it ends, however it ends (SIGKILL "
        "too), the twin stops as on SIGTERM (default: it runs until a signal)",
    )
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
    pacing = os.environ.get(PACING_ENV) == "1"
    port = Port(pty=args.pty) if args.pty is not None else Port(rfc2217=args.rfc2217, plain=args.plain_rfc2217)
    try:
        flash = Flash(args.flash)
    except (OSError, ValueError) as err:
        print(f"error: cannot use {args.flash} as flash: {err}", file=sys.stderr)
        return 2
    try:
        twin = Twin(flash, args.mac, port, pacing=pacing, bridge_max_baud=args.bridge_max_baud, io0_low=args.io0_low)
    except FileExistsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"error: cannot listen: {err}", file=sys.stderr)
        return 2
    bench = Bench(twin, args.mac, pacing, args.bridge_max_baud)
    if args.pty is not None:  # EN, IO0 and the rest come on standard input (ota_rig.virtual.twin.Bench)
        threading.Thread(target=bench.serve, args=(sys.stdin, sys.stdout), name="wires", daemon=True).start()

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    twin.power_on()
    mac = ":".join(f"{b:02x}" for b in args.mac)
    print(f"virtual ESP32 {mac} listening on {twin.url}", flush=True)
    # A bare wait() can sleep through the signal handler. An owner that died leaves the twin
    # to another parent: it stops then, so no twin outlives the rig that started it.
    while not stop.wait(0.2) and (args.owner is None or os.getppid() == args.owner):
        pass
    bench.power_off()
    return 0


if __name__ == "__main__":
    sys.exit(main())
