"""What one scenario's esptool work costs the rig on the twin (unpaced pty), the way it ran before
issue 19 and the way it runs now, side by side in one run.

    python bench/esptool_calls.py [--rounds 5]

Each round, on one twin, interleaved:
- before: one `python -m esptool` process a command at 115200: write the four files, then read
  otadata and read the app slot's bytes back (two processes);
- CLI now: the same processes at 921600 with `write-flash --skip-flashed` and the slot checked by
  `verify-flash` (the chip's MD5) instead of read;
- in-process now: the same command lines through `esptool.main` in this process, both read-backs
  in one esptool session.
The flash already holds the build (as between consecutive scenarios, where the bootloader and the
partition table rarely change), so --skip-flashed writes nothing. Prints the medians and ratios.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from ota_rig.bench.board import VirtualBoard
from ota_rig.bench.flash import Esptool
from ota_rig.build.virtual_builder import VirtualBuilder
from ota_rig.device import firmware
from ota_rig.device.sketch_config import SketchConfig

OTADATA = 0xE000


def before(twin: VirtualBoard, files, app: Path) -> None:
    tool = Esptool(twin.port, before="no-reset", after="no-reset")
    twin.enter_bootloader()
    tool.write(files)
    twin.enter_bootloader()
    tool.read(OTADATA, 2 * firmware.OTADATA_SECTOR)
    twin.enter_bootloader()
    assert tool.read(firmware.APP_OFFSET, app.stat().st_size) == app.read_bytes()


def now(twin: VirtualBoard, files, app: Path, in_process: bool) -> None:
    tool = Esptool(twin.port, before="no-reset", after="no-reset", baud=921600, in_process=in_process)
    twin.enter_bootloader()
    tool.write(files, skip_flashed=True)
    twin.enter_bootloader()
    with tool.session():
        tool.read(OTADATA, 2 * firmware.OTADATA_SECTOR)
        assert tool.holds(firmware.APP_OFFSET, app)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    ways = {
        "before (CLI, 115200, write all, 2 reads)": lambda t, f, a: before(t, f, a),
        "now, CLI (921600, skip-flashed, read + MD5)": lambda t, f, a: now(t, f, a, in_process=False),
        "now, in-process (one session for both)": lambda t, f, a: now(t, f, a, in_process=True),
    }
    times: dict[str, list[float]] = {name: [] for name in ways}
    with tempfile.TemporaryDirectory(prefix="rig-esptool-calls-") as tmp:
        artifacts = VirtualBuilder(Path(tmp) / "builds").build(SketchConfig.without_server("0.1"))
        files = artifacts.flash_files()
        with VirtualBoard(Path(tmp) / "twin", transport="pty") as twin:
            before(twin, files, artifacts.app)  # the build in flash, as after an earlier scenario
            for _ in range(args.rounds):
                for name, way in ways.items():
                    started = time.monotonic()
                    way(twin, files, artifacts.app)
                    times[name].append(time.monotonic() - started)
    base = statistics.median(times[next(iter(ways))])
    print(f"one scenario's esptool work (write + 2 read-backs), unpaced pty twin, {args.rounds} interleaved rounds:")
    for name, seconds in times.items():
        median = statistics.median(seconds)
        print(f"  {name:<46} median {median:5.2f} s  ({median / base:.2f}x before)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
