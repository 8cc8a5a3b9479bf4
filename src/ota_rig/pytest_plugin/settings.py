"""The bench a session runs on, settled once from the options and the environment.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from dataclasses import dataclass

import pytest

from ota_rig.bench import labgrid_places, network
from ota_rig.bench.flash import line_baud
from ota_rig.build.arduino_cli import ArduinoCliBuilder
from ota_rig.device import profiles
from ota_rig.errors import RigError
from ota_rig.server.pki import DEFAULT_IP

VIRTUAL_BOARDS = {"virtual": "pty", "virtual-rfc2217": "rfc2217"}
REAL_BOARD_HINT = ("pass --ota-board /dev/ttyUSB0, --ota-board mac:<MAC>, --ota-board rfc2217://host:port "
                   "or --ota-board labgrid:PLACE")
MAC = re.compile(r"[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2}){5}")


@dataclass(frozen=True)
class Bench:
    """What this session runs on, settled once from the options and the environment."""

    board: str  # the board this process tests on: the --ota-board value, or one board of its list
    arduino_cli: ArduinoCliBuilder | None  # None: the rig's virtual builds
    profiles: tuple[str, ...]  # what `each_profile` tests run for; the first is the default
    ota_host: str  # the address the board reaches the update server at
    hostname: str  # the server's DNS name in certificates and URLs
    wifi: tuple[str, str] | None  # (SSID, password) for a real board
    boards: tuple[str, ...] = ()  # the run's boards, one per xdist worker (a list, or a farm's places' ports)
    places: tuple[str, ...] = ()  # the labgrid places the run holds, one per board of `boards`
    place: str | None = None  # the labgrid place `board` is in
    coordinator: str | None = None  # the labgrid coordinator that holds `place`
    farm: labgrid_places.Request | None = None  # what --ota-board labgrid:... asks for (the controller acquires it)
    baud: int | None = None  # esptool's line rate (--ota-baud, ESPTOOL_BAUD, 921600)

    @property
    def virtual(self) -> bool:
        return self.board in VIRTUAL_BOARDS


BENCH = pytest.StashKey[Bench]()
ACTIVE = pytest.StashKey[bool]()  # the session asked for the rig (ota_rig.pytest_plugin.hooks)
OFF = ("the OTA rig is off in this session: pass an --ota- option (--ota-board virtual), "
       "or set ota_rig = true in the pytest ini")


def settle_bench(config: pytest.Config) -> Bench:
    """Check the options against each other and fill in what they leave to the rig."""
    option = config.getoption
    try:
        baud = line_baud(option("--ota-baud"))
    except RigError as err:
        raise pytest.UsageError(str(err)) from None
    board = option("--ota-board")
    boards = split_boards(board)
    for one in boards:
        check_board(one)
    farm = None
    if board.startswith(labgrid_places.PREFIX):
        try:
            farm = labgrid_places.parse(board)
        except labgrid_places.FarmError as err:
            raise pytest.UsageError(str(err)) from None
    if option("--ota-board-wait") and farm is None:
        raise pytest.UsageError(
            "--ota-board-wait waits for labgrid places; drop it, or pass --ota-board labgrid:PLACE"
        )
    if option("--ota-scan-ports") and not board.startswith("mac:"):
        raise pytest.UsageError(
            "--ota-scan-ports narrows the search for --ota-board mac:<MAC>; drop it, or pass the MAC"
        )
    virtual = board in VIRTUAL_BOARDS
    kind = option("--ota-builder")
    if kind == "auto":
        kind = "virtual" if virtual else "arduino-cli"
    builder = None
    if kind == "virtual":
        chosen = [option("--ota-profile")] if option("--ota-profile") else list(profiles.PROFILES)
    else:
        fqbn = {"fqbn": option("--ota-fqbn")} if option("--ota-fqbn") else {}
        builder = ArduinoCliBuilder(
            config.invocation_params.dir / "out" / "builds" / "arduino-cli",
            cli=option("--ota-arduino-cli"),
            warnings=option("--ota-arduino-cli-warnings"),
            **fqbn,
        )
        # An installed core builds for one profile only.
        chosen = [option("--ota-profile") or builder.profile]
    if virtual:
        if option("--ota-host"):
            raise pytest.UsageError(
                "the virtual board reaches the server on its loopback: --ota-host is for real boards"
            )
        return Bench(board, builder, tuple(chosen), DEFAULT_IP, option("--ota-hostname"), None, baud=baud)
    if not (option("--ota-wifi-ssid") and option("--ota-wifi-password") is not None):
        raise pytest.UsageError(
            "a real board needs Wi-Fi: set OTA_WIFI_SSID and OTA_WIFI_PASSWORD "
            "(or pass --ota-wifi-ssid and --ota-wifi-password)"
        )
    workers = workers_of(config)
    if farm is not None:
        if farm.places and len(farm.places) < workers:
            raise pytest.UsageError(
                f"-n {workers} needs {workers} boards and --ota-board {board} names "
                f"{len(farm.places)}; name at least {workers} places, or run fewer workers"
            )
    elif workers > len(boards):
        if len(boards) == 1:
            raise pytest.UsageError("one board runs one test at a time: drop -n (pytest-xdist) with a real board")
        raise pytest.UsageError(
            f"-n {workers} needs {workers} boards and --ota-board names {len(boards)}; "
            f"list at least {workers} (comma-separated), or run fewer workers"
        )
    if not hasattr(config, "workerinput"):  # an xdist worker tests on the one board its session gave it
        check_every_board_used(len(farm.places) if farm else len(boards), workers)
    ota_host = option("--ota-host") or network.host_address(option("--ota-board-network"))
    return Bench(
        boards[0],
        builder,
        tuple(chosen),
        ota_host,
        option("--ota-hostname"),
        (option("--ota-wifi-ssid"), option("--ota-wifi-password")),
        boards=tuple(boards),
        farm=farm,
        baud=baud,
    )


def check_every_board_used(boards: int, workers: int) -> None:
    """UsageError, before anything is acquired or locked, for a list of boards (or labgrid places)
    that the session's workers would not all use: a worker tests on one board, so N boards need
    `-n N`. Refused rather than quietly testing on the first: a user who lists boards means them to
    be used, and a farm's place acquired for nobody is one another job waits for."""
    if boards > 1 and max(workers, 1) < boards:
        runs = "pytest runs one worker" if not workers else f"-n {workers} runs {workers} workers"
        raise pytest.UsageError(
            f"{boards} boards given but {runs}: pass -n {boards} (pytest-xdist), or name "
            f"{f'{workers} boards' if workers > 1 else 'one board'}"
        )


def workers_of(config: pytest.Config) -> int:
    """How many pytest-xdist workers the session starts (0: none, the tests run in this process)."""
    return int(getattr(config.option, "numprocesses", None) or 0)


def split_boards(board: str) -> list[str]:
    """The boards --ota-board names: a comma-separated list of ports, MACs or URLs (one a
    worker with -n), or one labgrid request (whose boards the coordinator gives out)."""
    if board in VIRTUAL_BOARDS or board.startswith(labgrid_places.PREFIX):
        return [board]
    boards = [one.strip() for one in board.split(",") if one.strip()]
    if not boards:
        raise pytest.UsageError(f"--ota-board {board!r} names no board; {REAL_BOARD_HINT}")
    if any(one in VIRTUAL_BOARDS for one in boards) and len(boards) > 1:
        raise pytest.UsageError(
            f"--ota-board {board}: the virtual board is not one of a list; pass it alone "
            "(each test gets a twin of its own)"
        )
    return boards


def board_count(board: str) -> int | None:
    """How many boards --ota-board names; None when the farm gives as many as asked for (tags)."""
    if board.startswith(labgrid_places.PREFIX):
        request = labgrid_places.parse(board)  # FarmError (one sentence) for a request that names nothing
        return len(request.places) if request.places else None
    return len([one for one in board.split(",") if one.strip()])


def check_board(board: str) -> None:
    """UsageError for a --ota-board that names no board: a path not there, a malformed MAC or URL."""
    if board in VIRTUAL_BOARDS or board.startswith(labgrid_places.PREFIX):
        return
    if board.startswith("mac:"):
        if not MAC.fullmatch(board[4:]):
            raise pytest.UsageError(
                f"--ota-board {board}: {board[4:]!r} is not a MAC; pass one such as mac:24:6f:28:aa:bb:cc"
            )
    elif board.startswith("rfc2217://"):
        try:
            port = urllib.parse.urlsplit(board).port
        except ValueError:
            port = None
        if port is None or not urllib.parse.urlsplit(board).hostname:
            raise pytest.UsageError(
                f"--ota-board {board} is not rfc2217://<host>:<port>; pass one such as rfc2217://192.168.1.9:4000"
            )
    elif "://" not in board and not os.path.exists(board):
        raise pytest.UsageError(
            f"--ota-board {board}: no such port; plug the board in, or {REAL_BOARD_HINT} (or virtual)"
        )
