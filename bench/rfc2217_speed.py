"""What pyserial's RFC2217 client costs esptool, and what the rig's fix saves (issue 17).

    python bench/rfc2217_speed.py [--runs 1] [--write-size 1048576] [--read-size 65536]

Starts a twin on RFC2217 (a free port on 127.0.0.1, as a farm's ser2net would export a board)
and runs three esptool commands on it, each with the plain `python -m esptool` and with the
rig's `python -m ota_rig.bench.esptool_cli` (the same esptool after ota_rig.bench.rfc2217_fix),
side by side: `chip-id`; `write-flash` of random bytes (incompressible) at 0x300000;
`read-flash` of the start of that region. It prints each run's wall time (the best of
`--runs`) and the SET-BAUDRATE requests the twin's RFC2217 server received from it (one per
line negotiation; twin.log's "disconnected after N SET-BAUDRATE requests").
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ota_rig.bench.board import VirtualBoard
from ota_rig.bench.rfc2217_fix import needed

PLAIN = ("esptool", [sys.executable, "-m", "esptool"])
FIXED = ("rig (fix)", [sys.executable, "-m", "ota_rig.bench.esptool_cli"])
SCRATCH = 0x300000  # the spiffs partition's region on the twin's 4 MB flash: free for test data


def timed(board: VirtualBoard, command: list[str], args: list[str]) -> tuple[float, int]:
    """(wall seconds, SET-BAUDRATE requests) of one esptool run; SystemExit if esptool failed."""
    before = len(re.findall(r"disconnected after", board.log_path.read_text()))
    started = time.monotonic()
    done = subprocess.run([*command, "--port", board.port, *args], capture_output=True, text=True, timeout=600)
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        counts = re.findall(r"disconnected after (\d+) SET-BAUDRATE requests", board.log_path.read_text())
        if len(counts) > before:
            return wall, int(counts[-1])
        time.sleep(0.05)
    return wall, -1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1, help="runs of each command and client; the best counts")
    parser.add_argument("--write-size", type=int, default=1 << 20)
    parser.add_argument("--read-size", type=int, default=64 << 10)
    args = parser.parse_args()
    print(f"pyserial needs: {', '.join(needed()) or 'nothing (already fixed)'}", flush=True)
    with tempfile.TemporaryDirectory(prefix="rfc2217-speed-") as tmp:
        data = Path(tmp) / "random.bin"
        data.write_bytes(os.urandom(args.write_size))
        commands = [
            ("chip-id", ["chip-id"]),
            (f"write-flash {args.write_size // 1024} KB", ["write-flash", f"0x{SCRATCH:x}", str(data)]),
            (f"read-flash {args.read_size // 1024} KB", ["read-flash", f"0x{SCRATCH:x}", f"0x{args.read_size:x}",
                                                          str(Path(tmp) / "read.bin")]),
        ]
        with VirtualBoard(Path(tmp) / "twin", transport="rfc2217") as board:
            print(f"twin on {board.port}\n", flush=True)
            print(f"{'command':<20} {PLAIN[0] + ' s':>10} {'requests':>9} {FIXED[0] + ' s':>12} {'requests':>9} "
                  f"{'speed-up':>9}", flush=True)
            for name, command_args in commands:
                results = {}
                for label, command in (PLAIN, FIXED):
                    runs = [timed(board, command, command_args) for _ in range(args.runs)]
                    results[label] = min(runs)
                (plain_s, plain_n), (fixed_s, fixed_n) = results[PLAIN[0]], results[FIXED[0]]
                print(f"{name:<20} {plain_s:10.2f} {plain_n:9d} {fixed_s:12.2f} {fixed_n:9d} {plain_s / fixed_s:8.1f}x",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
