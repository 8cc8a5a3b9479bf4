"""The bench a session runs on, settled once from the options and the environment.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from dataclasses import dataclass

import pytest

from ota_rig.bench import network
from ota_rig.build.arduino_cli import ArduinoCliBuilder
from ota_rig.device import profiles
from ota_rig.server.pki import DEFAULT_IP

VIRTUAL_BOARDS = {"virtual": "pty", "virtual-rfc2217": "rfc2217"}
REAL_BOARD_HINT = "pass --ota-board /dev/ttyUSB0, --ota-board mac:<MAC> or --ota-board rfc2217://host:port"
MAC = re.compile(r"[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2}){5}")


@dataclass(frozen=True)
class Bench:
    """What this session runs on, settled once from the options and the environment."""

    board: str  # the --ota-board value
    arduino_cli: ArduinoCliBuilder | None  # None: the rig's virtual builds
    profiles: tuple[str, ...]  # what `each_profile` tests run for; the first is the default
    ota_host: str  # the address the board reaches the update server at
    hostname: str  # the server's DNS name in certificates and URLs
    wifi: tuple[str, str] | None  # (SSID, password) for a real board

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
    board = option("--ota-board")
    check_board(board)
    if option("--ota-scan-ports") and not board.startswith("mac:"):
        raise pytest.UsageError("--ota-scan-ports narrows the search for --ota-board mac:<MAC>; drop it, or pass the MAC")
    virtual = board in VIRTUAL_BOARDS
    kind = option("--ota-builder")
    if kind == "auto":
        kind = "virtual" if virtual else "arduino-cli"
    builder = None
    if kind == "virtual":
        chosen = [option("--ota-profile")] if option("--ota-profile") else list(profiles.PROFILES)
    else:
        fqbn = {"fqbn": option("--ota-fqbn")} if option("--ota-fqbn") else {}
        builder = ArduinoCliBuilder(config.invocation_params.dir / "out" / "builds" / "arduino-cli", cli=option("--ota-arduino-cli"),
                                    warnings=option("--ota-arduino-cli-warnings"), **fqbn)
        # An installed core builds for one profile only.
        chosen = [option("--ota-profile") or builder.profile]
    if virtual:
        if option("--ota-host"):
            raise pytest.UsageError("the virtual board reaches the server on its loopback: --ota-host is for real boards")
        return Bench(board, builder, tuple(chosen), DEFAULT_IP, option("--ota-hostname"), None)
    if not (option("--ota-wifi-ssid") and option("--ota-wifi-password") is not None):
        raise pytest.UsageError("a real board needs Wi-Fi: set OTA_WIFI_SSID and OTA_WIFI_PASSWORD "
                                "(or pass --ota-wifi-ssid and --ota-wifi-password)")
    if (getattr(config.option, "numprocesses", None) or 0) > 0:
        raise pytest.UsageError("one board runs one test at a time: drop -n (pytest-xdist) with a real board")
    ota_host = option("--ota-host") or network.host_address(option("--ota-board-network"))
    return Bench(board, builder, tuple(chosen), ota_host, option("--ota-hostname"),
                 (option("--ota-wifi-ssid"), option("--ota-wifi-password")))


def check_board(board: str) -> None:
    """UsageError for a --ota-board that names no board: a path not there, a malformed MAC or URL."""
    if board in VIRTUAL_BOARDS:
        return
    if board.startswith("mac:"):
        if not MAC.fullmatch(board[4:]):
            raise pytest.UsageError(f"--ota-board {board}: {board[4:]!r} is not a MAC; pass one such as mac:24:6f:28:aa:bb:cc")
    elif board.startswith("rfc2217://"):
        try:
            port = urllib.parse.urlsplit(board).port
        except ValueError:
            port = None
        if port is None or not urllib.parse.urlsplit(board).hostname:
            raise pytest.UsageError(f"--ota-board {board} is not rfc2217://<host>:<port>; pass one such as "
                                    "rfc2217://192.168.1.9:4000")
    elif "://" not in board and not os.path.exists(board):
        raise pytest.UsageError(f"--ota-board {board}: no such port; plug the board in, or {REAL_BOARD_HINT} "
                                "(or virtual)")
