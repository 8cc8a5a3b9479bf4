"""A scenario killed by pytest-timeout mid-download keeps its records, and the next scenario
gets a fresh twin. Runs a real pytest session in a subprocess, as CI would."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.virtual

SCENARIOS = '''
import pytest

@pytest.mark.timeout(8)  # setup takes seconds on a loaded runner; the download takes 9 s
def test_killed_mid_download(ota_scenario, ota_pki):
    listener = ota_scenario.listen(ota_pki.dns())
    old = ota_scenario.build("0.1", listener)
    # 90 KB at 10 KB/s: 9 s, and the first byte within the core's 1 s peek
    ota_scenario.offer(ota_scenario.build("0.2", listener), rate=10_000)
    ota_scenario.start(old).expect("update_ok", timeout=60)

def test_next_scenario(ota_scenario, ota_pki):
    listener = ota_scenario.listen(ota_pki.dns())
    current = ota_scenario.build("0.2", listener)
    ota_scenario.offer(current)
    ota_scenario.start(current).expect("no_updates", timeout=10)
'''


def test_a_scenario_killed_mid_download_keeps_its_logs_and_the_next_gets_a_fresh_twin(tmp_path: Path) -> None:
    (tmp_path / "test_scenarios.py").write_text(textwrap.dedent(SCENARIOS))
    out = tmp_path / "out"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "--ota-board",
            "virtual",
            "-o",
            "timeout_method=signal",
            "--rootdir",
            str(tmp_path),
            "--ota-out",
            str(out),
            "-rA",
            str(tmp_path / "test_scenarios.py"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "FAILED test_scenarios.py::test_killed_mid_download[arduino-esp32-2.0]" in done.stdout, done.stdout
    assert "Timeout (>8.0s) from pytest-timeout" in done.stdout, done.stdout
    assert "PASSED test_scenarios.py::test_next_scenario[arduino-esp32-2.0]" in done.stdout, done.stdout

    killed = out / "test_scenarios.test_killed_mid_download[arduino-esp32-2.0]"
    serial_log = (killed / "serial.log").read_text()
    assert serial_log.endswith("\n"), "the last line the board sent is complete in the log"
    assert "Firmware version 0.1" in serial_log and "Certificate: valid" in serial_log
    assert "HTTP_UPDATE_OK" not in serial_log

    (record,) = [json.loads(line) for line in (killed / "server.jsonl").read_text().splitlines()]
    (request,) = record["requests"]
    assert record["ended"] == "closed"  # the teardown stops the board first: the device's end went away
    assert request["status"] == 200 and not request["complete"]
    assert 0 < request["bytes_sent"] < request["content_length"]

    fresh = out / "test_scenarios.test_next_scenario[arduino-esp32-2.0]"
    assert (fresh / "serial.log").read_text().count("rst:0x1 (POWERON_RESET)") == 1
    assert "HTTP_UPDATE_NO_UPDATES" in (fresh / "serial.log").read_text()
    assert (fresh / "board" / "twin.log").exists() and (fresh / "board") != (killed / "board")
