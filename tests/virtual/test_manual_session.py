"""Manual work with a board, as docs and `rig serve` describe it, with `rig virtual` as the board:
the server prints its URL, CA and the sketch's lines; a sketch built from exactly those lines
and flashed with the esptool CLI updates itself from that server."""

from __future__ import annotations

import json
import queue
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import serial

from ota_rig.build.virtual_builder import VirtualBuilder
from ota_rig.device.sketch_config import SketchConfig

ROOT = Path(__file__).resolve().parents[2]
RIG = [sys.executable, "-m", "ota_rig.cli"]


def c_string(literal: str) -> str:
    """The text of a C string literal as SketchConfig.header() writes it."""
    return re.sub(r'\\(.)', lambda m: "\n" if m.group(1) == "n" else m.group(1), literal[1:-1])


class Output:
    """A process's text output, read line by line in the background, to wait on with a timeout."""

    def __init__(self, stream) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [self.lines.put(line.rstrip("\n")) for line in stream], daemon=True).start()

    def until(self, pattern: str, timeout: float = 10) -> list[str]:
        """The lines up to the first that matches `pattern`."""
        seen, deadline = [], time.monotonic() + timeout
        while not seen or not re.search(pattern, seen[-1]):
            try:
                seen.append(self.lines.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r} in {seen}") from None
        return seen


def test_a_board_built_from_rig_serves_lines_updates_from_it(tmp_path: Path) -> None:
    builder = VirtualBuilder(tmp_path / "builds")
    new = builder.build(SketchConfig.without_server("0.2"))
    server = subprocess.Popen([*RIG, "serve", "--folder", str(tmp_path / "serve"), "--host", "127.0.0.1",
                               "--port", "0", "--firmware", str(new.app), "--firmware-version", "0.2"],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    twin = None
    try:
        output = Output(server.stdout)
        banner = output.until("^Ctrl-C stops it")
        defines = dict(re.findall(r'^#define (OTA_\w+) (".*")$', "\n".join(banner), re.M))
        old = builder.build(SketchConfig(version="0.1", update_url=c_string(defines["OTA_UPDATE_URL"]),
                                         ca_bundle=c_string(defines["OTA_CA_BUNDLE"])))

        link = tmp_path / "ttyESP32"
        # Powered up with BOOT held, as a user at a desk does for esptool's first write.
        twin = subprocess.Popen([*RIG, "virtual", "--flash", str(tmp_path / "flash.bin"), "--pty", str(link),
                                 "--io0-low"], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert twin.stdout.readline().startswith("virtual ESP32 ")
        files = [str(part) for offset, path in old.flash_files() for part in (hex(offset), path)]
        flashed = subprocess.run([sys.executable, "-m", "esptool", "--port", str(link), "--before", "no-reset",
                                  "--after", "no-reset", "write-flash", *files], capture_output=True, text=True,
                                 timeout=60)
        assert flashed.returncode == 0, flashed.stdout + flashed.stderr

        with serial.Serial(str(link), 115200, timeout=0.1) as port:
            for wire in ("IO0 1", "EN 0", "EN 1"):  # reset into the app, as a user's relay would
                twin.stdin.write(wire + "\n")
                twin.stdin.flush()
                assert twin.stdout.readline().strip() == "ok"
            uart = b""
            deadline = time.monotonic() + 15
            while b"Firmware version 0.2" not in uart and time.monotonic() < deadline:
                uart += port.read(4096)
        text = uart.decode(errors="replace")
        assert "Firmware version 0.1" in text and "HTTP_UPDATE_OK" in text and "Firmware version 0.2" in text, text

        output.until(r"127\.0\.0\.1 TLS ok \S+ GET /update 200 \d+ bytes")
    finally:
        if twin is not None:
            twin.terminate()
            twin.wait(timeout=10)
        server.terminate()
        assert server.wait(timeout=10) == 0
    record = [json.loads(line) for line in (tmp_path / "serve" / "server.jsonl").read_text().splitlines()]
    sent = [r for c in record for r in c["requests"] if r["status"] == 200]
    assert [r["bytes_sent"] for r in sent] == [new.app.stat().st_size]
