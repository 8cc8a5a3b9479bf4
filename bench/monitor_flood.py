"""How much memory the serial monitor holds, and how fast it reads, under a serial flood.

    python bench/monitor_flood.py [--mb 50]

Real pyserial reads the slave end of a pty (os.openpty) while a thread writes the flood into
the master end: plain log lines, core log lines (protocol lines: each becomes an event), random
bytes, one line of a fifth of the flood without a newline, then the device line
`HTTP_UPDATE_OK`, which an `expect` waiting from the start must find. Run twice: first for
throughput and the rise in the process's peak RSS, then under tracemalloc (which slows the
reading) for the peak of the allocations made while the flood is read.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import resource
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Iterator

import serial

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ota_rig.bench.monitor import Monitor

DEVICE_LINE = b"HTTP_UPDATE_OK\r\n"
BLOCK = 1 << 16


def flood(size: int) -> Iterator[bytes]:
    """`size` bytes in blocks of BLOCK: 30% plain lines, 20% core log lines, 30% random bytes
    (a newline every 256 bytes on average), 20% one line without a newline; the line is then
    ended, so that the device line after it is a line of its own."""
    plain = b"".join(b"noise %06d: the quick brown fox jumps over the lazy dog\r\n" % n for n in range(1200))
    core = b"".join(b"[%7d][D][HTTPClient.cpp:%d] handleHeaderResponse(): RX: 'x-flood: %d'\r\n" % (n, n % 999, n)
                    for n in range(800))
    noisy = random.Random(14).randbytes(BLOCK)
    long_line = b"L" * BLOCK
    for share, block in ((0.3, plain), (0.2, core), (0.3, noisy), (0.2, long_line)):
        left = int(size * share)
        while left > 0:
            yield block[:left]
            left -= len(block)
    yield b"\r\n"


def run(size: int, log_path: Path, traced: bool) -> tuple[float, int]:
    """Flood a monitor with `size` bytes; (seconds until it matched the device line, peak
    bytes tracemalloc saw allocated while it read, 0 when not traced)."""
    master, slave = os.openpty()
    port = serial.Serial(os.ttyname(slave), 115200, timeout=0.05)
    os.close(slave)

    def write() -> None:
        for block in itertools.chain(flood(size), [DEVICE_LINE]):
            view = memoryview(block)
            while view:
                view = view[os.write(master, view):]

    try:
        with Monitor(port, log_path) as monitor:
            if traced:
                tracemalloc.start()
            started = time.monotonic()
            writer = threading.Thread(target=write, daemon=True)
            writer.start()
            monitor.expect("update_ok", timeout=600)
            seconds = time.monotonic() - started
            peak = 0
            if traced:
                peak = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
            writer.join()
            if monitor.bytes_read != size + 2 + len(DEVICE_LINE):
                raise SystemExit(f"the monitor read {monitor.bytes_read} bytes of {size + 2 + len(DEVICE_LINE)}")
    finally:
        port.close()
        os.close(master)
    return seconds, peak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=50, help="size of the flood in MB (10^6 bytes)")
    args = parser.parse_args()
    size = int(args.mb * 1_000_000)
    print(f"monitor: {sys.modules['ota_rig.bench.monitor'].__file__}")
    with tempfile.TemporaryDirectory(prefix="rig-bench-") as tmp:
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        seconds, _ = run(size, Path(tmp) / "plain.log", traced=False)
        rss_rise = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before
        print(f"flood: {size / 1e6:.1f} MB in {seconds:.2f} s ({size / 1e6 / seconds:.1f} MB/s); "
              f"peak RSS rose by {rss_rise / 1e6:.1f} MB")
        traced_seconds, peak = run(size, Path(tmp) / "traced.log", traced=True)
        print(f"under tracemalloc: {traced_seconds:.2f} s; peak of allocations {peak / 1e6:.1f} MB "
              f"({peak / size:.2f} times the flood)")
        print(f"serial.log: {(Path(tmp) / 'plain.log').stat().st_size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
