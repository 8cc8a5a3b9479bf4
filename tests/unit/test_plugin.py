"""The options a real-board session needs are checked before any test runs: each mistake stops
pytest with one sentence (a usage error, exit code 4), and the hardware tests skip on the twin."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FAKE_CLI = ROOT / "tests" / "fakes" / "arduino-cli"


def collect(*options: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTA_")}
    argv = [
        sys.executable,
        "-m",
        "pytest",
        "tests/hardware",
        "--collect-only",
        "-q",
        "-p",
        "no:cacheprovider",
        *options,
    ]
    return subprocess.run(argv, cwd=ROOT, env={**clean, **env}, capture_output=True, text=True, timeout=60)


WIFI = {"OTA_WIFI_SSID": "bench-ap", "OTA_WIFI_PASSWORD": "secret"}
A_BOARD = ("--ota-board", "rfc2217://127.0.0.1:9", "--ota-arduino-cli", str(FAKE_CLI))


@pytest.mark.parametrize(
    ("options", "env", "sentence"),
    [
        (
            A_BOARD,
            {},
            "a real board needs Wi-Fi: set OTA_WIFI_SSID and OTA_WIFI_PASSWORD "
            "(or pass --ota-wifi-ssid and --ota-wifi-password)",
        ),
        (A_BOARD + ("-n", "2"), WIFI, "one board runs one test at a time: drop -n (pytest-xdist) with a real board"),
        (
            A_BOARD + ("--ota-board-network", "wlan0"),
            WIFI,
            "'wlan0' is neither an IP address nor a network such as 192.168.4.0/24",
        ),
        (
            ("--ota-board", "rfc2217://127.0.0.1:9", "--ota-arduino-cli", "/nonexistent/arduino-cli"),
            WIFI,
            "arduino-cli not found ('/nonexistent/arduino-cli' is not on PATH)",
        ),
        (
            ("--ota-board", "/dev/ttyUSB97", "--ota-arduino-cli", "/nonexistent/arduino-cli"),
            WIFI,
            "--ota-board /dev/ttyUSB97: no such port; plug the board in",
        ),
        (("-n", "2", "-k", "and or"), {}, "Wrong expression passed to '-k': and or: at column 1"),
        (
            ("--ota-host", "192.168.4.2"),
            {},
            "the virtual board reaches the server on its loopback: --ota-host is for real boards",
        ),
        (
            A_BOARD + ("--ota-arduino-cli-warnings", "Wall"),
            WIFI,
            "'Wall' is not an arduino-cli warning level: use none, default, more or all",
        ),
        (
            (
                "--ota-board",
                "rfc2217://127.0.0.1:9,rfc2217://127.0.0.1:10",
                "--ota-arduino-cli",
                str(FAKE_CLI),
                "-n",
                "3",
            ),
            WIFI,
            "-n 3 needs 3 boards and --ota-board names 2; list at least 3 (comma-separated), or run fewer workers",
        ),
        (
            ("--ota-board", "rfc2217://127.0.0.1:9,rfc2217://127.0.0.1:10", "--ota-arduino-cli", str(FAKE_CLI)),
            WIFI,
            "2 boards given but pytest runs one worker: pass -n 2 (pytest-xdist), or name one board",
        ),
        (
            ("--ota-board", "labgrid:a,b,c", "--ota-arduino-cli", str(FAKE_CLI), "-n", "2"),
            WIFI,
            "3 boards given but -n 2 runs 2 workers: pass -n 3 (pytest-xdist), or name 2 boards",
        ),
        (
            ("--ota-board", "rfc2217://127.0.0.1:9", "--ota-arduino-cli", str(FAKE_CLI), "--ota-board-wait", "60"),
            WIFI,
            "--ota-board-wait waits for labgrid places; drop it, or pass --ota-board labgrid:PLACE",
        ),
        (
            ("--ota-board", "rfc2217://127.0.0.1:9,/dev/ttyUSB97", "--ota-arduino-cli", str(FAKE_CLI)),
            WIFI,
            "--ota-board /dev/ttyUSB97: no such port; plug the board in",
        ),
        (
            ("--ota-board", "labgrid:esp-a", "--ota-arduino-cli", str(FAKE_CLI), "-n", "2"),
            WIFI,
            "-n 2 needs 2 boards and --ota-board labgrid:esp-a names 1; name at least 2 places, or run fewer workers",
        ),
        (
            ("--ota-board", "labgrid:esp-a,board=esp32", "--ota-arduino-cli", str(FAKE_CLI)),
            WIFI,
            "--ota-board labgrid:esp-a,board=esp32 mixes place names and tags; pass either labgrid:PLACE,... or "
            "labgrid:TAG=VALUE,...",
        ),
        (
            ("--ota-board", "labgrid:", "--ota-arduino-cli", str(FAKE_CLI)),
            WIFI,
            "--ota-board labgrid: names no place; pass labgrid:PLACE[,PLACE...] or labgrid:TAG=VALUE[,...]",
        ),
        (("--ota-baud", "fast"), {}, "'fast' is not a baud rate: pass a number such as 921600 or 115200"),
        (
            ("--ota-board", "virtual"),
            {"ESPTOOL_BAUD": "fast"},
            "ESPTOOL_BAUD='fast' is not a baud rate: set it to a number such as 921600, or unset it",
        ),
    ],
    ids=[
        "no-wifi",
        "xdist",
        "bad-network",
        "no-arduino-cli",
        "no-port",
        "bad-k-for-xdist",
        "host-for-twin",
        "bad-warnings",
        "too-few-boards",
        "a-list-without-n",
        "a-list-with-too-few-workers",
        "a-wait-without-labgrid",
        "one-of-the-list-missing",
        "too-few-places",
        "places-and-tags",
        "no-place",
        "bad-baud",
        "bad-esptool-baud",
    ],
)
def test_a_wrong_bench_stops_the_session_with_one_sentence(options, env, sentence) -> None:
    done = collect(*options, **env)
    assert done.returncode == 4 and sentence in done.stderr, done.stdout + done.stderr


def test_a_real_board_session_takes_its_profile_from_the_installed_core() -> None:
    done = collect(*A_BOARD, "--ota-host", "127.0.0.1", FAKE_ARDUINO_CLI_CORE="3.3.5", **WIFI)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[arduino-esp32-3]" in done.stdout and "[arduino-esp32-2.0]" not in done.stdout
