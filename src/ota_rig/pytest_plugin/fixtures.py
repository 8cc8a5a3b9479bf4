"""The rig's fixtures, each named ota_*: the session's bench, certificates, builder and board, and
`ota_scenario`, one OTA scenario per test writing serial.log, server.jsonl and esptool.log into
the test's own folder. `ota_profile` is a parameter the plugin gives each test that asks for it
(ota_rig.pytest_plugin.hooks.pytest_generate_tests)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from ota_rig.bench.board import (
    BoardError,
    PortLock,
    SerialBoard,
    TwinKeeper,
    VirtualBoard,
    find_by_mac,
    scan_ports,
)
from ota_rig.build.arduino_cli import ArduinoCliBuilder
from ota_rig.pytest_plugin.settings import ACTIVE, BENCH, OFF, REAL_BOARD_HINT, VIRTUAL_BOARDS, Bench
from ota_rig.records.run_folder import folder_name
from ota_rig.server.pki import Pki

if TYPE_CHECKING:  # imported where a fixture first needs them: the update server (aiohttp) and
    # the builder cost every pytest session on a machine with the rig installed 0.4 s otherwise
    from ota_rig.build.virtual_builder import VirtualBuilder
    from ota_rig.scenario import OtaScenario


@pytest.fixture(scope="session")
def ota_bench(pytestconfig: pytest.Config) -> Bench:
    """What this session runs on (ota_rig.pytest_plugin.settings.Bench)."""
    if not pytestconfig.stash.get(ACTIVE, False):
        pytest.fail(OFF, pytrace=False)
    return pytestconfig.stash[BENCH]


@pytest.fixture(scope="session")
def ota_out_dir(pytestconfig: pytest.Config, ota_bench: Bench) -> Path:
    """The folder each test's records go into (--ota-out, claimed by the session)."""
    return (pytestconfig.invocation_params.dir / pytestconfig.getoption("--ota-out")).resolve()


@pytest.fixture(scope="session")
def ota_pki(tmp_path_factory: pytest.TempPathFactory, ota_bench: Bench) -> Pki:
    """The session's certificates: CA, server certificates for the host name and the address."""
    return Pki(tmp_path_factory.mktemp("pki"), hostname=ota_bench.hostname, address=ota_bench.ota_host)


@pytest.fixture(scope="session")
def ota_builder(tmp_path_factory: pytest.TempPathFactory, ota_bench: Bench) -> VirtualBuilder | ArduinoCliBuilder:
    """Who builds the sketch: arduino-cli for a real board, the rig's virtual builds for the twin."""
    from ota_rig.build.virtual_builder import VirtualBuilder

    return ota_bench.arduino_cli or VirtualBuilder(tmp_path_factory.mktemp("builds"))


@pytest.fixture
def ota_test_dir(request: pytest.FixtureRequest, ota_out_dir: Path) -> Path:
    """This test's own folder, emptied first: its records and nothing else."""
    folder = ota_out_dir / folder_name(request.node.nodeid)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


@pytest.fixture(scope="session")
def ota_real_board(pytestconfig: pytest.Config, ota_bench: Bench) -> Iterator[SerialBoard]:
    """The session's real board: found (by MAC) and locked once, so no other session shares it."""
    if ota_bench.virtual:
        pytest.skip(f"needs a real board: {REAL_BOARD_HINT}")
    port = ota_bench.board
    try:
        if port.startswith("mac:"):
            patterns = [p.strip() for p in pytestconfig.getoption("--ota-scan-ports").split(",") if p.strip()]
            port = find_by_mac(port[len("mac:"):], scan_ports(patterns))
        if ota_bench.place and ota_bench.coordinator:  # a farm's board: no local lock, the coordinator holds it
            address, place = ota_bench.coordinator, ota_bench.place
            from ota_rig.bench import labgrid_controls

            board = labgrid_controls.place_board(port, address, place)  # its power switch and EN/IO0, if any
            try:
                yield board
            finally:
                board.controls.close()
            return
        with PortLock(port):
            yield SerialBoard(port)
    except BoardError as err:
        pytest.fail(str(err), pytrace=False)


@pytest.fixture(scope="session")
def ota_twin_keeper(pytestconfig: pytest.Config) -> Iterator[TwinKeeper | None]:
    """The twin process this session (this xdist worker) hands from test to test, or None with
    --ota-fresh-twin (a process per test)."""
    if pytestconfig.getoption("--ota-fresh-twin"):
        yield None
        return
    keeper = TwinKeeper()
    try:
        yield keeper
    finally:
        keeper.close()


@pytest.fixture
def ota_board(request: pytest.FixtureRequest, ota_bench: Bench, ota_test_dir: Path) -> Iterator[SerialBoard]:
    """The board under test: a new twin board per test (in the session's kept twin process
    unless --ota-fresh-twin), or the session's real board."""
    if ota_bench.virtual:
        keeper = request.getfixturevalue("ota_twin_keeper")
        with VirtualBoard(ota_test_dir / "board", transport=VIRTUAL_BOARDS[ota_bench.board], keeper=keeper) as twin:
            yield twin
    else:
        yield request.getfixturevalue("ota_real_board")


@pytest.fixture(scope="session")
def ota_listener_ports() -> dict[str, int]:
    """Each listener name's port, kept across the session's scenarios (see OtaScenario.listen)."""
    return {}


@pytest.fixture
def ota_scenario(request: pytest.FixtureRequest, ota_test_dir: Path, ota_board: SerialBoard, ota_pki: Pki,
                 ota_builder: VirtualBuilder | ArduinoCliBuilder, ota_bench: Bench, ota_profile: str,
                 ota_listener_ports: dict[str, int]) -> Iterator[OtaScenario]:
    """One OTA scenario: certificates, the update server, builds and the board, wired together."""
    from ota_rig.scenario import OtaScenario

    with OtaScenario(ota_test_dir, ota_board, ota_pki, ota_builder, ota_profile, wifi=ota_bench.wifi,
                     ports=ota_listener_ports, baud=ota_bench.baud) as scenario:
        scenario.timings["board"] = ota_board.start_seconds
        doc = (request.function.__doc__ or "").strip()
        scenario.about.update(board_kind=ota_bench.board if ota_bench.virtual else "serial",
                              doc=" ".join(doc.split("\n\n")[0].split()))
        yield scenario
