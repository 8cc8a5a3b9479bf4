"""The plugin's hooks: its options, markers, the session's bench and records folder, and the run's records.

The plugin acts only in a session that asks for the rig: one given an --ota- option, one that
collects the shipped scenarios (ota_rig/scenarios, also as `--pyargs ota_rig.scenarios`), or
one whose ini sets `ota_rig = true` (this repository's pytest.ini). Any other session sees
its options and markers and nothing else: no signal handler, no records folder, no bench.

Which board:
  --ota-board virtual           a fresh virtual ESP32 per test, EN/IO0 wired (pty; the default)
  --ota-board virtual-rfc2217   the same twin reset through DTR/RTS over RFC2217 (slow: esptool)
  --ota-board /dev/ttyUSB0      a board on a serial port, reset through DTR/RTS
  --ota-board mac:24:6f:28:..   the board with that factory MAC, found among the serial ports
                                (--ota-scan-ports narrows the search: paths, globs, rfc2217:// URLs)
  --ota-board rfc2217://h:p     a board exported by ser2net or labgrid (or a twin started by hand)
  --ota-board B1,B2,...         several boards (ports, mac:, rfc2217://): with -n N each xdist worker
                                gets one of its own; N is the number of boards (refused otherwise)
  --ota-board labgrid:P1,P2     places on the labgrid coordinator at LG_COORDINATOR, acquired for the
  --ota-board labgrid:TAG=V,..  session (all or none; by tags: any free places, one per worker) and
                                released when it ends, however it ends (ota_rig.bench.labgrid_places);
                                the places held are in <report or out folder>/labgrid-places.json
  --ota-board-wait SECONDS      wait that long for places others hold (a labgrid reservation)

A real board (any --ota-board but the two virtual ones: a port that is there, a MAC, an
rfc2217:// URL) is locked for the session, built with arduino-cli (--ota-arduino-cli,
--ota-fqbn, --ota-arduino-cli-warnings: ota_rig.pytest_plugin.options, which `rig run` shares;
the device profile follows the installed core) and joins the Wi-Fi network named by
--ota-wifi-ssid/--ota-wifi-password (OTA_WIFI_SSID, OTA_WIFI_PASSWORD). It reaches the update
server at --ota-host (OTA_HOST; by default the runner's address on the route toward
--ota-board-network, or the default route), under the name --ota-hostname for certificates
that name a host (default ota.local: make it resolve to --ota-host on the board's network).
Tests marked `hardware` run only on a real board.

Other options:
  --ota-builder auto|virtual|arduino-cli   who builds the sketch (auto: virtual for the twin)
  --ota-profile NAME        the device profile (core line); by default tests marked
                            `each_profile` run once per profile the builder can make
  --ota-out DIR             where each test's folder goes (default out/tests)
  --ota-report DIR          write the run's results.json, junit.xml and report.html there
                            (ota_rig.records; `rig run` passes it), also when SIGINT or SIGTERM
                            stops the session (ota_rig.pytest_plugin.interrupt)

Relative folders are taken from where pytest was started.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import BinaryIO

import pytest
from _pytest.mark import _parse_expression  # pytest's own -k parser (the same in pytest 8 and 9)

from ota_rig.bench import labgrid_places, network
from ota_rig.bench.board import (
    BoardError,
    ClaimHeld,
    claim,
)
from ota_rig.build.arduino_cli import BuildError
from ota_rig.device import profiles
from ota_rig.pytest_plugin.interrupt import Interrupt
from ota_rig.pytest_plugin.options import add_bench_options
from ota_rig.pytest_plugin.settings import ACTIVE, BENCH, OFF, REAL_BOARD_HINT, Bench, settle_bench, workers_of
from ota_rig.records.recorder import RunRecorder

SESSION_CLAIM = ".session.lock"  # in --ota-out: held by the session writing there
OWNER_POLL = 0.5  # seconds between an xdist worker's checks that its session is still there
OUT_CLAIM = pytest.StashKey[BinaryIO]()
OUT_NOTICE = pytest.StashKey[str]()
OUT_INPUT = "rig_ota_out"  # xdist workerinput key: the records folder the session claimed
ACTIVE_INPUT = "ota_rig_active"  # xdist workerinput key: whether the session asked for the rig
BOARD_INPUT = "ota_rig_board"  # xdist workerinput key: [board, labgrid place or None, coordinator or None]


MARKERS = (
    "each_profile: the verdict depends on the device profile; run it for each",
    "hardware: needs a real ESP32 board attached (skipped on the twin)",
    "long: takes several times as long as a typical scenario; pytest-xdist workers start it first",
)
PACKAGE = Path(__file__).resolve().parents[1]



def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("ota_rig", type="bool", default=False,
                  help="use the OTA rig in every session of this project (ota_rig's fixtures, records folder)")
    group = parser.getgroup("ota", "OTA rig (esp32-ota-rig)")
    group.addoption("--ota-board", default="virtual",
                    help="virtual (default), virtual-rfc2217, a serial device path, mac:<MAC>, rfc2217://host:port "
                         "(comma-separated: a board per -n worker) or labgrid:PLACE[,...] / labgrid:TAG=VALUE[,...]")
    add_bench_options(group.addoption)
    group.addoption("--ota-profile", default=None, choices=sorted(profiles.PROFILES),
                    help="device profile to build for (default: each_profile tests run for every profile)")
    group.addoption("--ota-fresh-twin", action="store_true",
                    help="start a twin process for each test (default: each worker keeps one and puts a new "
                         "board in it for each test; for debugging the twin itself)")
    group.addoption("--ota-out", default="out/tests", help="folder for each test's records (default out/tests)")
    group.addoption("--ota-report", default=None, metavar="DIR",
                    help="write the run's results.json, junit.xml and report.html into DIR")


def asks_for_the_rig(config: pytest.Config) -> bool:
    """Whether this session uses the rig: an --ota- option, the shipped scenarios, or the ini."""
    args = [str(arg) for arg in config.invocation_params.args]
    if any(arg.startswith("--ota-") for arg in args) or config.getini("ota_rig"):
        return True
    for arg in config.args:
        path = Path(arg.split("::")[0])
        if arg.startswith("ota_rig") or (config.invocation_params.dir / path).resolve().is_relative_to(PACKAGE):
            return True
    return False


def pytest_configure(config: pytest.Config) -> None:
    for line in MARKERS:
        config.addinivalue_line("markers", line)
    worker = getattr(config, "workerinput", None)
    config.stash[ACTIVE] = active = worker[ACTIVE_INPUT] if worker else asks_for_the_rig(config)
    if not active:
        return
    if hasattr(config, "workerinput"):
        end_with_the_session(os.getppid())
        config.option.ota_out = config.workerinput.get(OUT_INPUT, config.option.ota_out)
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
    # Once the options are accepted: a session refused for its bench leaves no records folder behind.
    if not hasattr(config, "workerinput") and not config.option.collectonly:
        claim_out_folder(config)
    if worker and BOARD_INPUT in worker:  # this worker's own board of the session's list or places
        board, place, coordinator = worker[BOARD_INPUT]
        config.stash[BENCH] = bench = dataclasses.replace(bench, board=board, place=place, coordinator=coordinator)
    elif not worker and bench.farm is not None and not config.option.collectonly:
        config.stash[BENCH] = bench = acquire_places(config, bench, stop)
    report = config.getoption("--ota-report")
    if report and not hasattr(config, "workerinput"):  # the controller gathers; xdist workers test
        cores = {profile: bench.arduino_cli.core_version() for profile in bench.profiles} if bench.arduino_cli else {}
        config.pluginmanager.register(RunRecorder(
            config.invocation_params.dir / report, config.invocation_params.dir / config.getoption("--ota-out"),
            config.getoption("--ota-board"), cores, stop),
            "rig-results")


def pytest_unconfigure(config: pytest.Config) -> None:
    held = config.stash.get(OUT_CLAIM, None)
    if held is not None:
        held.close()


def acquire_places(config: pytest.Config, bench: Bench, stop: Interrupt) -> Bench:
    """Acquire the labgrid places --ota-board asks for, one per xdist worker (all or none), waiting
    up to --ota-board-wait seconds for them (a signal ends the wait: `stop`), have them released
    when the session ends however it ends (pytest runs a config's cleanups on a normal end, a
    failure, Ctrl-C, SIGTERM turned into an interrupt, and a session start that fails after this
    point), and write what is held into the run's folder for a CI step that must release them
    after a SIGKILL (docs/hardware.md)."""
    assert bench.farm is not None
    try:
        held = labgrid_places.acquire(bench.farm, max(1, workers_of(config)), wait=config.getoption("--ota-board-wait"),
                                      stopped=lambda: stop.signal)
    except labgrid_places.WaitStopped as err:
        pytest.exit(str(err), returncode=pytest.ExitCode.INTERRUPTED)
    except labgrid_places.FarmError as err:
        raise pytest.UsageError(str(err)) from None
    record = config.invocation_params.dir / (config.getoption("--ota-report") or config.getoption("--ota-out"))

    def release() -> None:
        try:
            labgrid_places.release(held)
        except labgrid_places.FarmError as err:
            print(f"rig: the labgrid places {', '.join(held.places)} may still be held by {held.holder} ({err}); "
                  f"release them with labgrid-client -p PLACE release-from {held.holder}", file=sys.stderr)

    config.add_cleanup(release)
    try:
        record.mkdir(parents=True, exist_ok=True)
        held.write(record / labgrid_places.RECORD)
    except OSError as err:  # the places are released by the cleanup above
        raise pytest.UsageError(f"cannot write {labgrid_places.RECORD} into {record} ({err.strerror}); pass "
                                "--ota-report a folder this user can write") from None
    return dataclasses.replace(bench, board=held.ports[0], boards=held.ports, places=held.places,
                               place=held.places[0], coordinator=held.coordinator)


def claim_out_folder(config: pytest.Config) -> None:
    """Claim the folder this session's tests write their records into (--ota-out). Two
    sessions writing the same out/tests/<test> would wreck each other's records and ports, so
    when another session holds it, this one writes into a folder of its own beside it,
    <folder>-<pid>, and says so; its xdist workers are told (pytest_configure_node)."""
    folder = config.invocation_params.dir / config.getoption("--ota-out")
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
    """xdist: each worker uses the rig if its session does, and writes where its session's
    claim says (see claim_out_folder)."""
    node.workerinput[ACTIVE_INPUT] = node.config.stash[ACTIVE]
    node.workerinput[OUT_INPUT] = node.config.option.ota_out
    bench = node.config.stash.get(BENCH, None) if node.config.stash[ACTIVE] else None
    if bench is not None and not bench.virtual and bench.boards:
        # gw0, gw1, ...: settle_bench made sure there are at least as many boards as workers
        index = int(node.gateway.id.removeprefix("gw") or 0) % len(bench.boards)
        place = bench.places[index] if bench.places else None
        node.workerinput[BOARD_INPUT] = [bench.boards[index], place, bench.coordinator]


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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.stash[ACTIVE]:
        return
    if hasattr(config, "workerinput"):
        # pytest-xdist hands the workers the tests in this order (every worker sorts alike): a
        # long test started last would keep the run waiting on one worker after the others end.
        items.sort(key=lambda item: item.get_closest_marker("long") is None)
    if not config.stash[BENCH].virtual:
        return
    skip = pytest.mark.skip(reason=f"needs a real board: {REAL_BOARD_HINT}")
    for item in items:
        if item.get_closest_marker("hardware"):
            item.add_marker(skip)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "ota_profile" not in metafunc.fixturenames:
        return
    if not metafunc.config.stash[ACTIVE]:
        raise pytest.UsageError(OFF)
    chosen = metafunc.config.stash[BENCH].profiles
    names = chosen if metafunc.definition.get_closest_marker("each_profile") else chosen[:1]
    metafunc.parametrize("ota_profile", names, scope="function")
