"""How fast the real esptool writes a 1.3 MB app to the virtual ESP32.

    python bench/flash_speed.py [--baud 921600] [--size 1300000] [--transports pty rfc2217]

For each transport, once free-running and once with the twin pacing its UART at the baud
rate (RIG_UART_PACING=1, 10 bits a byte, as on a wire), it writes the app at 0x10000 with
`esptool write-flash` (stub, compressed: the defaults) and prints the wall time of the
esptool run, esptool's own write time, and the app's size over each.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ota_rig.bench.board import VirtualBoard
from ota_rig.build.virtual_builder import VirtualBuilder
from ota_rig.device.sketch_config import SketchConfig


def write_once(transport: str, pacing: bool, app: Path, baud: int, workdir: Path) -> tuple[float, float]:
    """(wall seconds of the esptool run, seconds esptool reports for the write itself)."""
    resets = ["--before", "no-reset", "--after", "no-reset"] if transport == "pty" else []
    with VirtualBoard(workdir, transport=transport, pacing=pacing) as board:
        board.enter_bootloader()
        argv = [sys.executable, "-m", "esptool", "--port", board.port, "--baud", str(baud), *resets,
                "write-flash", "0x10000", str(app)]
        started = time.monotonic()
        done = subprocess.run(argv, capture_output=True, text=True)
        wall = time.monotonic() - started
    if done.returncode != 0 or "Hash of data verified." not in done.stdout:
        raise SystemExit(f"esptool failed on {transport}:\n{done.stdout}{done.stderr}")
    write = float(re.search(r"at 0x00010000 in ([\d.]+) seconds", done.stdout).group(1))
    return wall, write


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baud", type=int, default=921600)
    parser.add_argument("--size", type=int, default=1_300_000, help="app image size in bytes")
    parser.add_argument("--transports", nargs="+", default=["pty", "rfc2217"], choices=["pty", "rfc2217"])
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="rig-bench-") as tmp:
        app = VirtualBuilder(Path(tmp) / "fw").build(SketchConfig.without_server("1.0"), size=args.size).app
        size_kb = app.stat().st_size / 1024
        print(f"app: {app.stat().st_size} bytes; esptool write-flash --baud {args.baud} (stub, compressed)")
        print(f"{'transport':<10} {'line':<14} {'wall s':>7} {'KB/s':>7} {'write s':>8} {'KB/s':>7}")
        for transport in args.transports:
            for pacing in (False, True):
                wall, write = write_once(transport, pacing, app, args.baud, Path(tmp) / f"{transport}-{pacing}")
                line = f"paced {args.baud}" if pacing else "free-running"
                print(
                    f"{transport:<10} {line:<14} {wall:7.2f} {size_kb / wall:7.0f} {write:8.2f} {size_kb / write:7.0f}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
