"""A place's serial port that really moves while a session holds it: the twin behind the place's
NetworkSerialPort starts again on another TCP port (as a board that re-enumerates comes back on a
new port, and labgrid's exporter serves it anew), the exporter is restarted with the new port, and
the rig's board, opened again, asks the coordinator where the port is now and reads the chip
through it. Against the real coordinator of conftest.py and a labgrid-exporter of the test's own."""

from __future__ import annotations

import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ota_rig.bench.board import VirtualBoard
from ota_rig.bench.labgrid_places import Coordinator
from tests.farm.lab import BIN, MISSING, Farm
from tests.farm.test_farm import NOBODY, ROOT, rig_argv, rig_env
from tests.servers import stop

if MISSING:
    pytest.skip(MISSING, allow_module_level=True)

pytestmark = [pytest.mark.virtual, pytest.mark.slow]

EXPORTER = "mover"
PLACE = "esp-m"
# Run by the rig (--ota-board labgrid:esp-m): opens the board, lets the outer test move its port,
# then opens it again (SerialBoard.open looks the port up again when it cannot open the old one),
# resets the chip and reads its boot banner through the new port.
MOVING = '''import time
from pathlib import Path

FLAGS = Path({flags!r})


def test_the_port_moves_under_the_session(ota_real_board):
    first = ota_real_board.port
    with ota_real_board.open():
        pass
    (FLAGS / "first").write_text(first)
    deadline = time.monotonic() + 120
    while not (FLAGS / "moved").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    with ota_real_board.open(reappear=30) as line:
        ota_real_board.reset(line)
        seen, end = b"", time.monotonic() + 15
        while b"rst:" not in seen and time.monotonic() < end:
            seen += line.read(256)
    (FLAGS / "reopened").write_text(ota_real_board.port + "\\n" + seen.decode(errors="replace"))
    assert ota_real_board.port != first and b"rst:" in seen
'''


def published(farm: Farm) -> int | None:
    """The port of EXPORTER's NetworkSerialPort for PLACE as the coordinator has it, if available."""
    with Coordinator(farm.address) as coordinator:
        entry = coordinator.session.resources.get(EXPORTER, {}).get(PLACE, {}).get("NetworkSerialPort")
        return entry.args["port"] if entry is not None and entry.avail else None


@contextmanager
def exporter(farm: Farm, folder: Path, url: str) -> Iterator[None]:
    """labgrid-exporter EXPORTER publishing `url` as PLACE's NetworkSerialPort, until the block ends;
    it returns once the coordinator lists the resource with that port."""
    where = urllib.parse.urlsplit(url)
    config = folder / f"exporter-{where.port}.yaml"
    config.write_text(f"{PLACE}:\n  NetworkSerialPort:\n    host: {where.hostname}\n    port: {where.port}\n")
    with open(folder / "exporter.log", "ab") as log:
        process = subprocess.Popen([str(BIN / "labgrid-exporter"), "-c", farm.address, "-n", EXPORTER,
                                    "--hostname", "127.0.0.1", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while published(farm) != where.port:
            assert time.monotonic() < deadline and process.poll() is None, "the exporter did not publish the port"
            time.sleep(0.2)
        yield
    finally:
        stop(process)


@pytest.mark.timeout(300)
def test_a_port_that_moves_mid_session_is_found_again(farm: Farm, tmp_path: Path) -> None:
    flags = tmp_path / "flags"
    flags.mkdir()
    (tmp_path / "test_it.py").write_text(MOVING.format(flags=str(flags)))
    twin = VirtualBoard(tmp_path / "twin", transport="rfc2217", mac="24:6f:28:aa:0f:30")
    try:
        before = twin.port
        with exporter(farm, tmp_path, before):
            farm.client("-p", PLACE, "create")
            farm.client("-p", PLACE, "add-match", f"{EXPORTER}/{PLACE}/NetworkSerialPort")
            session = subprocess.Popen(
                rig_argv(tmp_path, f"labgrid:{PLACE}", str(tmp_path / "test_it.py"), "--rootdir", str(tmp_path)),
                cwd=ROOT, env=rig_env(farm, tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            deadline = time.monotonic() + 120
            while not (flags / "first").exists() and time.monotonic() < deadline and session.poll() is None:
                time.sleep(0.1)
            assert (flags / "first").read_text() == before, session.communicate(timeout=60)[0]
        twin.close()  # the board leaves, and comes back (the same flash) served on another port
        twin = VirtualBoard(tmp_path / "twin", transport="rfc2217", mac="24:6f:28:aa:0f:30", flash=twin.flash_file)
        assert twin.port != before
        with exporter(farm, tmp_path, twin.port):
            (flags / "moved").touch()
            out = session.communicate(timeout=120)[0]
            assert session.returncode == 0, out
            port, banner = (flags / "reopened").read_text().split("\n", 1)
            assert port == twin.port, out  # the port the coordinator has now, not the one the session began with
            assert "rst:" in banner and "boot:" in banner, banner  # the chip's ROM, read through it
            assert farm.held() == {**NOBODY, PLACE: None}
    finally:
        twin.close()
        farm.client("-p", PLACE, "delete", check=False)
