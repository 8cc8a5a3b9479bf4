"""The rig as a pytest plugin (loaded by the top-level conftest.py): options, markers, fixtures.

Options:
  --board virtual           a fresh virtual ESP32 per test, EN/IO0 wired (pty; the default)
  --board virtual-rfc2217   the same twin reset through DTR/RTS over RFC2217 (slow: esptool)
  --board /dev/ttyUSB0      a board on a serial port, reset through DTR/RTS
  --board rfc2217://h:p     a board exported by ser2net or labgrid (or a twin started by hand)
  --profile NAME            the device profile (core line) to build for; by default tests marked
                            `each_profile` run once per profile, the others on arduino-esp32-2.0
  --ota-out DIR             where each test's folder goes (default out/tests)

Fixtures: `pki` (the session's certificates), `builder`, `profile`, `board` and `ota` (an
`OtaScenario` writing serial.log, server.jsonl and esptool.log into the test's own folder).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from .board import SerialBoard, VirtualBoard
from .build import VirtualBuilder
from .certs import Pki
from .ota import OtaScenario
from .virtual import profiles

VIRTUAL_BOARDS = {"virtual": "pty", "virtual-rfc2217": "rfc2217"}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ota", "OTA rig")
    group.addoption("--board", default="virtual",
                    help="virtual (default), virtual-rfc2217, a serial device path or an rfc2217:// URL")
    group.addoption("--profile", default=None, choices=sorted(profiles.PROFILES),
                    help="device profile to build for (default: each_profile tests run for every profile)")
    group.addoption("--ota-out", default="out/tests", help="folder for each test's records (default out/tests)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "each_profile: the verdict depends on the device profile; run it for each")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "profile" not in metafunc.fixturenames:
        return
    chosen = metafunc.config.getoption("--profile")
    if chosen:
        names = [chosen]
    elif metafunc.definition.get_closest_marker("each_profile"):
        names = list(profiles.PROFILES)
    else:
        names = [profiles.DEFAULT]
    metafunc.parametrize("profile", names, scope="function")


@pytest.fixture(scope="session")
def out_dir(pytestconfig: pytest.Config) -> Path:
    return (pytestconfig.rootpath / pytestconfig.getoption("--ota-out")).resolve()


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def builder(tmp_path_factory: pytest.TempPathFactory) -> VirtualBuilder:
    return VirtualBuilder(tmp_path_factory.mktemp("builds"))


def folder_name(nodeid: str) -> str:
    """A test's folder name: `<module>.<test>[<params>]`, safe on any file system."""
    module, _, name = nodeid.partition("::")
    return re.sub(r"[^\w.\-\[\]]+", "_", f"{Path(module).stem}.{name}")


@pytest.fixture
def test_dir(request: pytest.FixtureRequest, out_dir: Path) -> Path:
    """This test's own folder, emptied first: its records and nothing else."""
    folder = out_dir / folder_name(request.node.nodeid)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


@pytest.fixture
def board(pytestconfig: pytest.Config, test_dir: Path):
    spec = pytestconfig.getoption("--board")
    if spec in VIRTUAL_BOARDS:
        with VirtualBoard(test_dir / "board", transport=VIRTUAL_BOARDS[spec]) as twin:
            yield twin
    else:
        yield SerialBoard(spec)


@pytest.fixture
def ota(test_dir: Path, board: SerialBoard, pki: Pki, builder: VirtualBuilder, profile: str):
    with OtaScenario(test_dir, board, pki, builder, profile) as scenario:
        scenario.timings["board"] = board.start_seconds
        yield scenario
