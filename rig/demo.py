"""The rig's main job on the virtual ESP32, as far as it goes today.

    python -m rig.demo [--out DIR]

Builds a firmware set, starts a virtual ESP32 on RFC2217, flashes the set with the real
esptool (default reset, so DTR/RTS put the chip into download mode), resets the board as
esptool's hard reset does and shows its boot. Every log stays in DIR (default out/demo).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .board import VirtualBoard, reset_and_read
from .build import VirtualBuilder
from .flash import Esptool, FlashError

VERSION = "0.1"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rig.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("out/demo"), help="folder for every log (default out/demo)")
    args = parser.parse_args(argv)
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "flash.bin").unlink(missing_ok=True)  # a new board, with its flash erased

    started = time.monotonic()
    artifacts = VirtualBuilder(out / "firmware").build(VERSION)
    print(f"1. built firmware {VERSION}: {artifacts.app.parent}")
    with VirtualBoard(out, mac="24:6f:28:7a:d8:84") as board:
        print(f"2. virtual ESP32 listening on {board.port}")
        tool = Esptool(board.port)
        try:
            output = tool.write(artifacts.flash_files())
        except FlashError as err:
            (out / "esptool.log").write_text(err.output)
            print(f"flashing failed: {err} (esptool output in {out / 'esptool.log'})", file=sys.stderr)
            return 1
        (out / "esptool.log").write_text(output)
        print(f"3. esptool wrote {len(artifacts.flash_files())} files: {output.count('Hash of data verified.')} hashes verified")
        expected = f"Firmware version {VERSION}\r\n".encode()
        with open(out / "serial.log", "wb") as serial_log:
            boot = reset_and_read(board.port, expected, record=serial_log)
        print("4. reset through RTS; the board printed:")
        for line in boot.decode(errors="replace").splitlines():
            print(f"   | {line}")
    verdict = "PASS" if expected in boot else "FAIL"
    print(f"{verdict}: the board booted firmware {VERSION} in {time.monotonic() - started:.1f} s")
    print(f"logs: {out} (esptool.log, serial.log, twin.log, flash.bin)")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
