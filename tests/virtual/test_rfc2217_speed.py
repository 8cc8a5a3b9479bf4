"""RFC2217 at line speed (issue 17): the rig's esptool runs and its own ports get pyserial's
RFC2217 client fixed (ota_rig.bench.rfc2217_fix), and nothing else changes.

Evidence comes from outside the fix: the twin's RFC2217 server logs, per client, how many
SET-BAUDRATE requests it received (pyserial 3.5 sends the line settings again on every timeout
change; a fixed client sends them when it opens the port), esptool's own output, and the two
pyserials, each installed from PyPI into a folder of its own and put first on PYTHONPATH: pyserial
3.5, which esptool gets from pip and which needs the fix, and pyserial-labgrid, which needs none
(the venv itself may hold either: labgrid's extra installs pyserial-labgrid over pyserial's files).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ota_rig.bench.board import VirtualBoard
from ota_rig.bench.flash import ESPTOOL, Esptool
from ota_rig.bench.monitor import Monitor

pytestmark = [pytest.mark.virtual, pytest.mark.xdist_group("rfc2217-speed")]

PLAIN = (sys.executable, "-m", "esptool")  # esptool as a user types it, on pyserial as installed
FIXED_PYSERIAL = "pyserial-labgrid==3.5.0.2"
STOCK_PYSERIAL = "pyserial==3.5"


def requests_per_client(board: VirtualBoard, clients: int, timeout: float = 5.0) -> list[int]:
    """The SET-BAUDRATE counts twin.log holds, once it holds `clients` of them (the server logs
    one when a client disconnects)."""
    deadline = time.monotonic() + timeout
    while True:
        counts = [int(n) for n in re.findall(r"disconnected after (\d+) SET-BAUDRATE requests",
                                             board.log_path.read_text())]
        if len(counts) >= clients or time.monotonic() > deadline:
            return counts
        time.sleep(0.05)


Done = subprocess.CompletedProcess[str]


def run(command: tuple[str, ...], *args: str, env: dict[str, str] | None = None) -> tuple[Done, float]:
    started = time.monotonic()
    done = subprocess.run([*command, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=180, env=env)
    return done, time.monotonic() - started


@pytest.fixture
def twin(tmp_path: Path):
    with VirtualBoard(tmp_path / "twin", transport="rfc2217") as board:
        yield board


def installed(factory: pytest.TempPathFactory, requirement: str) -> dict[str, str]:
    """An environment whose Python finds `requirement` (installed from the package index into a
    folder of its own) before the venv's packages."""
    folder = factory.mktemp(requirement.split("==")[0])
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(folder),
                           requirement], capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        pytest.skip(f"{requirement} could not be installed from the package index: "
                    f"{(done.stderr.strip().splitlines() or ['no output'])[-1]}")
    path = [str(folder), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, path))}


@pytest.fixture(scope="session")
def fixed_pyserial(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """pyserial-labgrid (pyserial with the two fixes) first on the path."""
    return installed(tmp_path_factory, FIXED_PYSERIAL)


@pytest.fixture(scope="session")
def stock_pyserial(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """pyserial 3.5, as pip gives it to esptool, first on the path."""
    return installed(tmp_path_factory, STOCK_PYSERIAL)


def test_esptool_through_the_rig_negotiates_the_line_once_and_prints_the_same(
        twin: VirtualBoard, stock_pyserial: dict[str, str]) -> None:
    plain, plain_s = run(PLAIN, "--port", twin.port, "chip-id", env=stock_pyserial)
    fixed, fixed_s = run(ESPTOOL, "--port", twin.port, "chip-id", env=stock_pyserial)
    assert plain.returncode == 0 and fixed.returncode == 0, plain.stdout + fixed.stdout
    # pyserial 3.5 (what esptool gets from pip) renegotiates on every timeout change; the
    # rig's esptool process sends the settings when it opens the port (and once more, when
    # esptool's reset sets the baud rate it already has... if ever: at most 2).
    plain_n, fixed_n = requests_per_client(twin, 2)[-2:]
    assert plain_n > 20 and fixed_n <= 2, (plain_n, fixed_n)
    assert fixed_s < plain_s, (plain_s, fixed_s)
    # Everything esptool printed is esptool's, line for line.
    assert fixed.stdout == plain.stdout


@pytest.mark.parametrize("args", [("version",), ("--port", "rfc2217://127.0.0.1:9", "chip-id"), ("no-such-command",)],
                         ids=["version", "refused-port", "usage-error"])
def test_the_rig_s_esptool_command_is_esptool_s_cli(args: tuple[str, ...]) -> None:
    """Arguments, output and exit status as `python -m esptool` has them, errors included (the
    usage message names the program as esptool's own __main__ does)."""
    plain, _ = run(PLAIN, *args)
    fixed, _ = run(ESPTOOL, *args)
    assert (fixed.returncode, fixed.stdout) == (plain.returncode, plain.stdout)


def test_the_rig_s_esptool_class_runs_the_fixed_cli(twin: VirtualBoard) -> None:
    """Esptool (every flash, read-back and find_by_mac scan of the rig) goes through it."""
    tool = Esptool(twin.port, after="no-reset")
    assert tool.chip_info().chip == VirtualBoard.chip
    assert len(tool.read(0x1000, 0x1000)) == 0x1000
    assert all(n <= 2 for n in requests_per_client(twin, 2)), twin.log_path.read_text()


def test_the_monitor_over_rfc2217_reads_the_boot_with_one_negotiation(twin: VirtualBoard, tmp_path: Path) -> None:
    line = twin.open()
    try:
        for timeout in (0.05, 0.2, 1.0, 0.1):  # what a reader of the port does; RFC2217 has no such setting
            line.timeout = timeout
        twin.reset(line, discard_pending=True)
        with Monitor(line, tmp_path / "serial.log") as monitor:
            monitor.expect_raw(r"rst:0x1 \(POWERON_RESET\),boot:0x13 \(SPI_FAST_FLASH_BOOT\)", timeout=10)
    finally:
        line.close()
    assert requests_per_client(twin, 1) == [1]


def test_the_fix_is_made_once_and_leaves_purges_alone(stock_pyserial: dict[str, str]) -> None:
    """On pyserial 3.5 both fixes are needed and made; a second apply() finds nothing to do; a
    purge asked twice (reset_input_buffer) still reaches the server twice."""
    script = """
import serial, serial.rfc2217 as r
from ota_rig.bench import rfc2217_fix as fix
print(serial.__version__, fix.apply(), fix.apply(), fix.needed())
class Connection:
    logger = None
    sent = 0
    def rfc2217_send_subnegotiation(self, option, value=b""):
        Connection.sent += 1
purge = r.TelnetSubnegotiation(Connection(), "purge", r.PURGE_DATA, r.SERVER_PURGE_DATA)
purge.set(r.PURGE_RECEIVE_BUFFER)
purge.set(r.PURGE_RECEIVE_BUFFER)
print(Connection.sent)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env=stock_pyserial)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "3.5 ('timeout sent no settings', 'unchanged settings not sent again') () ()", "2"]


def test_the_fix_is_a_no_op_on_a_pyserial_that_needs_none(fixed_pyserial: dict[str, str], twin: VirtualBoard) -> None:
    env = fixed_pyserial
    script = """
import serial, serial.rfc2217 as r
before = (r.Serial.__dict__.get("timeout"), r.TelnetSubnegotiation.set)
from ota_rig.bench import rfc2217_fix as fix
after = (r.Serial.__dict__.get("timeout"), r.TelnetSubnegotiation.set)
print(serial.__version__, fix.needed(), fix.apply(), after == before)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "3.5.0.2 () () True"
    # The rig's esptool on it: as fast, as few negotiations.
    fixed, _ = run(ESPTOOL, "--port", twin.port, "chip-id", env=env)
    assert fixed.returncode == 0 and "Chip type:" in fixed.stdout, fixed.stdout
    assert requests_per_client(twin, 1)[-1] <= 2
