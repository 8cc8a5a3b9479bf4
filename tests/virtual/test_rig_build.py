"""`rig build` for a server started by `rig serve`, flashed by `rig build --flash` into a twin
from `rig virtual`, all real processes, as a user at a terminal does it without Python: the
twin boots, updates from the server and runs the new version. Evidence: the server's record,
the serial port, esptool's own output."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from pathlib import Path

import serial

from ota_rig.cli import main
from tests.virtual.test_manual_session import RIG, ROOT, Output


def rig(*argv: str) -> str:
    done = subprocess.run([*RIG, *argv], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_rig_build_flashes_a_twin_that_updates_from_rig_serve(tmp_path: Path) -> None:
    builds, serve = tmp_path / "builds", tmp_path / "serve"
    # The release asks the same server once it runs, so the server's port is chosen first.
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    rig("certs", "--out", str(serve))
    release = rig("build", "--url", f"https://ota.local:{port}/update", "--ca", str(serve / "ca.pem"),
                  "--version", "0.2", "--out", str(builds))
    new_app = Path(re.search(r"^0x10000 +(\S+)$", release, re.M)[1])
    server = subprocess.Popen([*RIG, "serve", "--folder", str(serve), "--host", "127.0.0.1", "--port", str(port),
                               "--firmware", str(new_app), "--firmware-version", "0.2"],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    link = tmp_path / "ttyESP32"
    twin = subprocess.Popen([*RIG, "virtual", "--flash", str(tmp_path / "flash.bin"), "--pty", str(link), "--io0-low"],
                            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        output = Output(server.stdout)
        url = output.until(r"^https://")[-1]
        assert url == f"https://ota.local:{port}/update"
        output.until("^Ctrl-C stops it")
        assert twin.stdout.readline().startswith("virtual ESP32 ")

        flashed = rig("build", "--url", url, "--ca", str(serve / "ca.pem"), "--version", "0.1", "--out", str(builds),
                      "--flash", str(link))
        assert re.search(r"^flashed \S+ \(ESP32-D0WD-V3 \(revision v3\.0\), MAC 24:6f:28:7a:d8:84\)$", flashed, re.M)
        offsets = re.findall(r"^(0x[0-9a-f]+) +\S+$", flashed, re.M)
        assert offsets == ["0x1000", "0x8000", "0xe000", "0x10000"]

        with serial.Serial(str(link), 115200, timeout=0.1) as port:
            for wire in re.findall(r"`([^`]+)`", flashed.split("boot it: ", 1)[1]):
                twin.stdin.write(wire + "\n")
                twin.stdin.flush()
                assert twin.stdout.readline().strip() == "ok"
            uart, deadline = b"", time.monotonic() + 30
            while b"HTTP_UPDATE_NO_UPDATES" not in uart and time.monotonic() < deadline:
                uart += port.read(4096)
        text = uart.decode(errors="replace")
        order = [text.find(line) for line in ("Firmware version 0.1", f"Update: checking {url}", "HTTP_UPDATE_OK",
                                              "Firmware version 0.2", "HTTP_UPDATE_NO_UPDATES")]
        assert -1 not in order and order == sorted(order), text
        output.until(r"127\.0\.0\.1 TLS ok \S+ GET /update 304 0 bytes")
    finally:
        twin.terminate()
        twin.wait(timeout=10)
        server.terminate()
        assert server.wait(timeout=10) == 0
    record = [json.loads(line) for line in (serve / "server.jsonl").read_text().splitlines()]
    answers = [(r["status"], r["bytes_sent"], dict(r["headers"])["x-ESP32-version"])
               for c in record for r in c["requests"]]
    assert answers == [(200, new_app.stat().st_size, "0.1"), (304, 0, "0.2")]


def test_rig_build_refuses_what_the_sketch_cannot_use(tmp_path: Path, capsys) -> None:
    not_pem = tmp_path / "ca.txt"
    not_pem.write_text("not a certificate\n")
    for argv, sentence in (
        (["--url", "http://ota.local/update", "--ca", str(not_pem)], "is not an https:// URL with a host"),
        (["--url", "https://ota.local/update", "--ca", str(not_pem)], "holds no PEM certificate"),
        (["--url", "https://ota.local/update", "--ca", str(tmp_path / "none.pem")], "none.pem: no such file"),
    ):
        assert main(["build", *argv, "--version", "0.1", "--out", str(tmp_path / "out")]) == 2
        assert sentence in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


