"""The real-board paths, with a twin started by hand standing in for the board: what a CI
runner does with `--ota-board rfc2217://...` or `--ota-board mac:...`, built by arduino-cli (the fake
that replays recorded arduino-cli outputs, tests/fakes/arduino-cli), flashed and reset through
DTR/RTS over RFC2217. Slow: esptool over RFC2217 is."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

pytestmark = [pytest.mark.virtual, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
FAKE_CLI = ROOT / "tests" / "fakes" / "arduino-cli"


@contextmanager
def twin_by_hand(folder: Path, mac: str):
    """`python -m ota_rig.virtual --rfc2217 0`, as a user starts it: the rig does not own it."""
    folder.mkdir(parents=True)
    process = subprocess.Popen([sys.executable, "-m", "ota_rig.virtual", "--flash", str(folder / "flash.bin"),
                                "--rfc2217", "0", "--mac", mac], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        url = re.search(r"listening on (\S+)", process.stdout.readline()).group(1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def run_rig(
    tmp_path: Path, board: str, *selection: str, extra: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """pytest on a 'real' board, as docs/hardware.md runs it."""
    env = {
        **os.environ,
        "OTA_WIFI_SSID": "bench-ap",
        "OTA_WIFI_PASSWORD": "bench-password",
        "FAKE_ARDUINO_CLI_LOG": str(tmp_path / "arduino-cli.jsonl"),
        "OTA_RIG_LOCK_DIR": str(tmp_path / "locks"),
    }
    argv = [
        sys.executable,
        "-m",
        "pytest",
        *selection,
        "--ota-board",
        board,
        "--ota-arduino-cli",
        str(FAKE_CLI),
        "--ota-host",
        "127.0.0.1",
        "--ota-out",
        str(tmp_path / "out"),
        "--timeout",
        "600",
        "-p",
        "no:cacheprovider",
        "-q",
        "-rA",
        *extra,
    ]
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.timeout(600)
def test_a_twin_on_rfc2217_stands_in_for_a_board_in_the_bench_checks_and_a_scenario(tmp_path: Path) -> None:
    with twin_by_hand(tmp_path / "twin", "24:6f:28:aa:00:01") as url:
        done = run_rig(
            tmp_path,
            url,
            "tests/hardware/test_bench.py",
            "src/ota_rig/scenarios/test_update.py::test_device_on_the_latest_version_downloads_nothing",
        )
    assert re.search(r"\b3 passed\b", done.stdout), done.stdout + done.stderr
    scenario = next((tmp_path / "out").glob("test_update.*"))
    esptool_log = (scenario / "esptool.log").read_text()
    assert f"Connected to ESP32 on {url}" in esptool_log and "Hard resetting" not in esptool_log
    calls = [json.loads(line) for line in (tmp_path / "arduino-cli.jsonl").read_text().splitlines()]
    compiles = [argv for argv in calls if argv[:1] == ["compile"]]
    # 0.1 and 0.3 for the bench checks, 0.2 for the scenario: the listener kept its port
    # across tests, so no version was compiled twice.
    assert len(compiles) == 3 and all(
        "esp32:esp32:esp32:PartitionScheme=default" in " ".join(argv) for argv in compiles
    )
    served = [json.loads(line) for line in (scenario / "server.jsonl").read_text().splitlines()]
    assert [request["status"] for connection in served for request in connection["requests"]] == [304]
    assert "Firmware version 0.2" in (scenario / "serial.log").read_text()


@pytest.mark.timeout(300)
def test_a_twin_is_found_by_its_mac_among_several_ports(tmp_path: Path) -> None:
    with (
        twin_by_hand(tmp_path / "a", "24:6f:28:aa:00:0a") as first,
        twin_by_hand(tmp_path / "b", "24:6f:28:aa:00:0b") as second,
    ):
        done = run_rig(
            tmp_path,
            "mac:24:6F:28:AA:00:0B",
            "tests/hardware/test_bench.py",
            "-k",
            "answers",
            extra=("--ota-scan-ports", f"{first},{second}", "--log-level", "INFO"),
        )
    assert re.search(r"\b1 passed\b", done.stdout), done.stdout + done.stderr
    assert f"MAC scan: {second} -> 24:6f:28:aa:00:0b" in done.stdout
    assert f"MAC scan: {first} -> 24:6f:28:aa:00:0a" in done.stdout


@pytest.mark.timeout(600)
def test_rig_run_passes_the_real_board_options_on_to_pytest(tmp_path: Path) -> None:
    """The options rig's own sentences name (--ota-arduino-cli, --ota-fqbn, --ota-wifi-ssid, --ota-host, ...)
    are `rig run`'s too: each reaches the session, as the fake arduino-cli's log, the device's
    serial log and the server's record show. Nothing comes from the environment."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(("OTA_", "ARDUINO_CLI"))}
    env.update(FAKE_ARDUINO_CLI_LOG=str(tmp_path / "arduino-cli.jsonl"), OTA_RIG_LOCK_DIR=str(tmp_path / "locks"))
    with twin_by_hand(tmp_path / "twin", "24:6f:28:aa:00:0c") as url:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "ota_rig.cli",
                "run",
                "--ota-board",
                "mac:24:6f:28:aa:00:0c",
                "--ota-scan-ports",
                url,
                "-k",
                "test_device_on_the_latest_version",
                "--out",
                str(tmp_path / "runs"),
                "--ota-arduino-cli",
                FAKE_CLI,
                "--ota-fqbn",
                "esp32:esp32:esp32",
                "--ota-arduino-cli-warnings",
                "more",
                "--ota-host",
                "127.0.0.1",
                "--ota-hostname",
                "updates.bench.test",
                "--ota-wifi-ssid",
                "bench-lab",
                "--ota-wifi-password",
                "lab-password",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=540,
        )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 of 1 scenarios passed" in done.stdout
    compiles = [
        argv
        for argv in map(json.loads, (tmp_path / "arduino-cli.jsonl").read_text().splitlines())
        if argv[:1] == ["compile"]
    ]
    assert compiles and all(
        argv[argv.index("--fqbn") + 1].startswith("esp32:esp32:esp32:DebugLevel=")
        and argv[argv.index("--warnings") + 1] == "more"
        for argv in compiles
    ), compiles
    scenario = next((tmp_path / "runs" / "latest" / "scenarios").glob("test_update.*"))
    assert "WiFi: connecting to bench-lab" in (scenario / "serial.log").read_text()
    served = [json.loads(line) for line in (scenario / "server.jsonl").read_text().splitlines()]
    hosts = {
        value
        for connection in served
        for request in connection["requests"]
        for name, value in request["headers"]
        if name == "Host"
    }
    assert hosts and all(host.startswith("updates.bench.test:") for host in hosts), hosts
