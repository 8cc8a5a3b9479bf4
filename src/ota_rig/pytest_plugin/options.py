"""The options of a real bench: how the rig finds the board, builds for it, and where the board
finds the update server. pytest takes them (ota_rig.pytest_plugin), and so does `rig run`, which passes
those it is given on to pytest: the sentences that refuse a bench name these options.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable

from ota_rig.build.arduino_cli import WARNING_LEVELS
from ota_rig.server.pki import DEFAULT_HOST

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DNS_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")


def add_bench_options(add: Callable[..., object]) -> None:
    """Declare each option through `add` (pytest's `addoption` or argparse's `add_argument`)."""
    env = os.environ.get
    add("--ota-scan-ports", default="",
        help="comma-separated ports, globs or rfc2217:// URLs that --ota-board mac: searches (default: all)")
    add("--ota-board-wait", default=0.0, type=seconds, metavar="SECONDS",
        help="with --ota-board labgrid:...: wait up to SECONDS for places others hold, through a labgrid "
        "reservation (default 0: refuse at once)")
    add("--ota-builder", default="auto", choices=("auto", "virtual", "arduino-cli"),
        help="who builds the sketch (auto: virtual for the twin, arduino-cli for a real board)")
    add("--ota-arduino-cli", default=env("ARDUINO_CLI", "arduino-cli"),
        help="the arduino-cli executable (env ARDUINO_CLI; default: arduino-cli on PATH)")
    add("--ota-fqbn", default=None, help="board to compile for (default: the builder's, an OTA partition scheme)")
    add(
        "--ota-arduino-cli-warnings",
        default=None,
        metavar="LEVEL",
        help=f"arduino-cli compile --warnings: {', '.join(WARNING_LEVELS)} "
        "(default: not passed, arduino-cli's own: none)",
    )
    add(
        "--ota-host",
        default=env("OTA_HOST"),
        help="the runner's address the board reaches the update server at (env OTA_HOST)",
    )
    add(
        "--ota-board-network",
        default=env("OTA_BOARD_NETWORK"),
        help="an address or network (192.168.4.0/24) the board is on, to choose --ota-host (env OTA_BOARD_NETWORK)",
    )
    add(
        "--ota-hostname",
        default=env("OTA_HOSTNAME", DEFAULT_HOST),
        type=hostname,
        help=f"the server's DNS name in certificates and update URLs (env OTA_HOSTNAME; default {DEFAULT_HOST})",
    )
    add(
        "--ota-baud",
        default=None,
        type=baud_rate,
        help="the rate esptool switches the board's line to once its stub runs "
        "(default: ESPTOOL_BAUD, esptool's own variable, else 921600; 115200 is the ROM's, no switch); "
        "a bridge that does not take it gets 115200",
    )
    add("--ota-wifi-ssid", default=env("OTA_WIFI_SSID"), help="Wi-Fi network a real board joins (env OTA_WIFI_SSID)")
    add("--ota-wifi-password", default=env("OTA_WIFI_PASSWORD"), help="its password (env OTA_WIFI_PASSWORD)")


def baud_rate(text: str) -> int:
    """`text` as a baud rate, a positive whole number (an argparse type)."""
    try:
        baud = int(text)
    except ValueError:
        baud = 0
    if baud <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a baud rate: pass a number such as 921600 or 115200")
    return baud


def seconds(text: str) -> float:
    """`text` as a number of seconds, 0 or more (an argparse type)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds; pass one such as 300")
    return value


def hostname(text: str) -> str:
    """`text` if it is a DNS name a certificate and a URL can carry (an argparse type)."""
    if len(text) > 253 or not _DNS_NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a DNS name: pass letters, digits, hyphens and dots, such as {DEFAULT_HOST}"
        )
    return text
