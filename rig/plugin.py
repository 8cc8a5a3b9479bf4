"""The rig as a pytest plugin (loaded by the top-level conftest.py): options, markers, fixtures.

Which board:
  --board virtual           a fresh virtual ESP32 per test, EN/IO0 wired (pty; the default)
  --board virtual-rfc2217   the same twin reset through DTR/RTS over RFC2217 (slow: esptool)
  --board /dev/ttyUSB0      a board on a serial port, reset through DTR/RTS
  --board mac:24:6f:28:..   the board with that factory MAC, found among the serial ports
                            (--scan-ports narrows the search: paths, globs, rfc2217:// URLs)
  --board rfc2217://h:p     a board exported by ser2net or labgrid (or a twin started by hand)

A real board (any --board but the two virtual ones: a port that is there, a MAC, an rfc2217://
URL) is locked for the session, built with arduino-cli (--arduino-cli, --fqbn,
--arduino-cli-warnings; rig.options, which `rig run` shares; the device profile follows the
installed core) and joins the Wi-Fi network named by --wifi-ssid/--wifi-password
(OTA_WIFI_SSID, OTA_WIFI_PASSWORD). It reaches the update server at --ota-host (OTA_HOST; by
default the runner's address on the route toward --board-network, or the default route),
under the name --ota-hostname for certificates that name a host (default ota.local: make it
resolve to --ota-host on the board's network). Tests marked `hardware` run only on a real
board.

Other options:
  --builder auto|virtual|arduino-cli   who builds the sketch (auto: virtual for the twin)
  --profile NAME            the device profile (core line); by default tests marked
                            `each_profile` run once per profile the builder can make
  --ota-out DIR             where each test's folder goes (default out/tests)
  --rig-report DIR          write the run's results.json, junit.xml and report.html there
                            (rig.results; `rig run` passes it), also when SIGINT or SIGTERM
                            stops the session (rig.interrupt)

Fixtures: `pki` (the session's certificates), `builder`, `profile`, `board` and `ota` (an
`OtaScenario` writing serial.log, server.jsonl and esptool.log into the test's own folder).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pytest
from _pytest.mark import _parse_expression  # pytest's own -k parser (the same in pytest 8 and 9)

from . import network
from .board import BoardError, ClaimHeld, PortLock, SerialBoard, VirtualBoard, claim, find_by_mac, scan_ports
from .build import ArduinoCliBuilder, BuildError, VirtualBuilder
from .certs import DEFAULT_IP, Pki
from .interrupt import Interrupt
from .options import add_bench_options
from .ota import OtaScenario
from .results import RunRecorder
from .virtual import profiles

SESSION_CLAIM = ".session.lock"  # in --ota-out: held by the session writing there
OWNER_POLL = 0.5  # seconds between an xdist worker's checks that its session is still there

VIRTUAL_BOARDS = {"virtual": "pty", "virtual-rfc2217": "rfc2217"}
REAL_BOARD_HINT = "pass --board /dev/ttyUSB0, --board mac:<MAC> or --board rfc2217://host:port"
MAC = re.compile(r"[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2}){5}")


@dataclass(frozen=True)
class Bench:
    """What this session runs on, settled once from the options and the environment."""

    board: str  # the --board value
    arduino_cli: ArduinoCliBuilder | None  # None: the rig's virtual builds
    profiles: tuple[str, ...]  # what `each_profile` tests run for; the first is the default
    ota_host: str  # the address the board reaches the update server at
    hostname: str  # the server's DNS name in certificates and URLs
    wifi: tuple[str, str] | None  # (SSID, password) for a real board

    @property
    def virtual(self) -> bool:
        return self.board in VIRTUAL_BOARDS


BENCH = pytest.StashKey[Bench]()
OUT_CLAIM = pytest.StashKey[BinaryIO]()
OUT_NOTICE = pytest.StashKey[str]()
OUT_INPUT = "rig_ota_out"  # xdist workerinput key: the records folder the session claimed


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ota", "OTA rig")
    group.addoption("--board", default="virtual",
                    help="virtual (default), virtual-rfc2217, a serial device path, mac:<MAC> or rfc2217://host:port")
    add_bench_options(group.addoption)
    group.addoption("--profile", default=None, choices=sorted(profiles.PROFILES),
                    help="device profile to build for (default: each_profile tests run for every profile)")
    group.addoption("--ota-out", default="out/tests", help="folder for each test's records (default out/tests)")
    group.addoption("--rig-report", default=None, metavar="DIR",
                    help="write the run's results.json, junit.xml and report.html into DIR")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "each_profile: the verdict depends on the device profile; run it for each")
    if hasattr(config, "workerinput"):
        end_with_the_session(os.getppid())
        config.option.ota_out = config.workerinput.get(OUT_INPUT, config.option.ota_out)
    elif not config.option.collectonly:
        claim_out_folder(config)
    stop = next((plugin for plugin in config.pluginmanager.get_plugins() if isinstance(plugin, Interrupt)), None)
    if stop is None:  # `rig run` brings its own
        stop = Interrupt()
        config.pluginmanager.register(stop, "rig-interrupt")
    if config.getoption("keyword"):  # before pytest-xdist's workers each stumble on it
        try:
            _parse_expression(config.getoption("keyword"), "Wrong expression passed to '-k'")
        except pytest.UsageError as err:
            raise pytest.UsageError(f"{err}; join test names with and, or, not and parentheses") from None
    try:
        config.stash[BENCH] = bench = settle_bench(config)
    except (BuildError, network.NetworkError) as err:
        raise pytest.UsageError(str(err)) from err
    report = config.getoption("--rig-report")
    if report and not hasattr(config, "workerinput"):  # the controller gathers; xdist workers test
        cores = {profile: bench.arduino_cli.core_version() for profile in bench.profiles} if bench.arduino_cli else {}
        config.pluginmanager.register(RunRecorder(
            config.rootpath / report, config.rootpath / config.getoption("--ota-out"), bench.board, cores, stop),
            "rig-results")


def pytest_unconfigure(config: pytest.Config) -> None:
    held = config.stash.get(OUT_CLAIM, None)
    if held is not None:
        held.close()


def claim_out_folder(config: pytest.Config) -> None:
    """Claim the folder this session's tests write their records into (--ota-out). Two
    sessions writing the same out/tests/<test> would wreck each other's records and ports, so
    when another session holds it, this one writes into a folder of its own beside it,
    <folder>-<pid>, and says so; its xdist workers are told (pytest_configure_node)."""
    folder = config.rootpath / config.getoption("--ota-out")
    try:
        config.stash[OUT_CLAIM] = _claim_folder(folder)
    except ClaimHeld as held:
        own = folder.with_name(f"{folder.name}-{os.getpid()}")
        config.stash[OUT_CLAIM] = _claim_folder(own)
        config.option.ota_out = str(own)
        config.stash[OUT_NOTICE] = f"rig: {folder} is in use by another test session ({held}); this one writes to {own}"


def _claim_folder(folder: Path) -> BinaryIO:
    folder.mkdir(parents=True, exist_ok=True)
    try:
        return claim(folder / SESSION_CLAIM)
    except BoardError as err:  # a planted link
        raise pytest.UsageError(str(err)) from None


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:
    """xdist: each worker writes where its session's claim says (see claim_out_folder)."""
    node.workerinput[OUT_INPUT] = node.config.option.ota_out


def pytest_sessionstart(session: pytest.Session) -> None:
    notice = session.config.stash.get(OUT_NOTICE, None)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if notice and reporter is not None:
        reporter.write_line(notice)  # also under -q, where the header is not shown


def end_with_the_session(controller: int) -> None:
    """Make this xdist worker end once the session that started it (`controller`, its parent)
    is gone, killed by SIGKILL too: it gets SIGTERM, so no worker runs scenarios for nobody,
    and its twins, whose owner it is, stop with it."""
    def watch() -> None:
        while os.getppid() == controller:
            time.sleep(OWNER_POLL)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="rig-session-watch", daemon=True).start()


def settle_bench(config: pytest.Config) -> Bench:
    """Check the options against each other and fill in what they leave to the rig."""
    option = config.getoption
    board = option("--board")
    check_board(board)
    if option("--scan-ports") and not board.startswith("mac:"):
        raise pytest.UsageError("--scan-ports narrows the search for --board mac:<MAC>; drop it, or pass the MAC")
    virtual = board in VIRTUAL_BOARDS
    kind = option("--builder")
    if kind == "auto":
        kind = "virtual" if virtual else "arduino-cli"
    builder = None
    if kind == "virtual":
        chosen = [option("--profile")] if option("--profile") else list(profiles.PROFILES)
    else:
        fqbn = {"fqbn": option("--fqbn")} if option("--fqbn") else {}
        builder = ArduinoCliBuilder(config.rootpath / "out" / "builds" / "arduino-cli", cli=option("--arduino-cli"),
                                    warnings=option("--arduino-cli-warnings"), **fqbn)
        # An installed core builds for one profile only.
        chosen = [option("--profile") or builder.profile]
    if virtual:
        if option("--ota-host"):
            raise pytest.UsageError("the virtual board reaches the server on its loopback: --ota-host is for real boards")
        return Bench(board, builder, tuple(chosen), DEFAULT_IP, option("--ota-hostname"), None)
    if not (option("--wifi-ssid") and option("--wifi-password") is not None):
        raise pytest.UsageError("a real board needs Wi-Fi: set OTA_WIFI_SSID and OTA_WIFI_PASSWORD "
                                "(or pass --wifi-ssid and --wifi-password)")
    if (getattr(config.option, "numprocesses", None) or 0) > 0:
        raise pytest.UsageError("one board runs one test at a time: drop -n (pytest-xdist) with a real board")
    ota_host = option("--ota-host") or network.host_address(option("--board-network"))
    return Bench(board, builder, tuple(chosen), ota_host, option("--ota-hostname"),
                 (option("--wifi-ssid"), option("--wifi-password")))


def check_board(board: str) -> None:
    """UsageError for a --board that names no board: a path not there, a malformed MAC or URL."""
    if board in VIRTUAL_BOARDS:
        return
    if board.startswith("mac:"):
        if not MAC.fullmatch(board[4:]):
            raise pytest.UsageError(f"--board {board}: {board[4:]!r} is not a MAC; pass one such as mac:24:6f:28:aa:bb:cc")
    elif board.startswith("rfc2217://"):
        try:
            port = urllib.parse.urlsplit(board).port
        except ValueError:
            port = None
        if port is None or not urllib.parse.urlsplit(board).hostname:
            raise pytest.UsageError(f"--board {board} is not rfc2217://<host>:<port>; pass one such as "
                                    "rfc2217://192.168.1.9:4000")
    elif "://" not in board and not os.path.exists(board):
        raise pytest.UsageError(f"--board {board}: no such port; plug the board in, or {REAL_BOARD_HINT} "
                                "(or virtual)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.stash[BENCH].virtual:
        return
    skip = pytest.mark.skip(reason=f"needs a real board: {REAL_BOARD_HINT}")
    for item in items:
        if item.get_closest_marker("hardware"):
            item.add_marker(skip)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "profile" not in metafunc.fixturenames:
        return
    chosen = metafunc.config.stash[BENCH].profiles
    names = chosen if metafunc.definition.get_closest_marker("each_profile") else chosen[:1]
    metafunc.parametrize("profile", names, scope="function")


@pytest.fixture(scope="session")
def bench(pytestconfig: pytest.Config) -> Bench:
    return pytestconfig.stash[BENCH]


@pytest.fixture(scope="session")
def out_dir(pytestconfig: pytest.Config) -> Path:
    return (pytestconfig.rootpath / pytestconfig.getoption("--ota-out")).resolve()


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory, bench: Bench) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"), hostname=bench.hostname, address=bench.ota_host)


@pytest.fixture(scope="session")
def builder(tmp_path_factory: pytest.TempPathFactory, bench: Bench) -> VirtualBuilder | ArduinoCliBuilder:
    return bench.arduino_cli or VirtualBuilder(tmp_path_factory.mktemp("builds"))


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


@pytest.fixture(scope="session")
def real_board(pytestconfig: pytest.Config, bench: Bench):
    """The session's real board: found (by MAC) and locked once, so no other session shares it."""
    if bench.virtual:
        pytest.skip(f"needs a real board: {REAL_BOARD_HINT}")
    port = bench.board
    try:
        if port.startswith("mac:"):
            patterns = [p.strip() for p in pytestconfig.getoption("--scan-ports").split(",") if p.strip()]
            port = find_by_mac(port[len("mac:"):], scan_ports(patterns))
        with PortLock(port):
            yield SerialBoard(port)
    except BoardError as err:
        pytest.fail(str(err), pytrace=False)


@pytest.fixture
def board(request: pytest.FixtureRequest, bench: Bench, test_dir: Path):
    if bench.virtual:
        with VirtualBoard(test_dir / "board", transport=VIRTUAL_BOARDS[bench.board]) as twin:
            yield twin
    else:
        yield request.getfixturevalue("real_board")


@pytest.fixture(scope="session")
def listener_ports() -> dict[str, int]:
    """Each listener name's port, kept across the session's scenarios (see OtaScenario.listen)."""
    return {}


@pytest.fixture
def ota(request: pytest.FixtureRequest, test_dir: Path, board: SerialBoard, pki: Pki, builder, bench: Bench,
        profile: str, listener_ports: dict[str, int]):
    with OtaScenario(test_dir, board, pki, builder, profile, wifi=bench.wifi, ports=listener_ports) as scenario:
        scenario.timings["board"] = board.start_seconds
        doc = (request.function.__doc__ or "").strip()
        scenario.about.update(board_kind=bench.board if bench.virtual else "serial",
                              doc=" ".join(doc.split("\n\n")[0].split()))
        yield scenario
