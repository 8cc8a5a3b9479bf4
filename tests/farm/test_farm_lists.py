"""A list of boards (local twins by their rfc2217:// ports, or labgrid places) without pytest-xdist's
-n: plain pytest refuses it before it locks or acquires anything; `rig run` runs a worker a board.
Against the twins and the real coordinator of conftest.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.farm.lab import MISSING, Farm
from tests.farm.test_farm import FAKE_CLI, NOBODY, ROOT, rig_argv, rig_env

if MISSING:
    pytest.skip(MISSING, allow_module_level=True)

pytestmark = [pytest.mark.virtual, pytest.mark.slow]

ANY_BOARD = "def test_on_a_board(ota_real_board):\n    pass\n"


def board_list(farm: Farm, kind: str) -> str:
    return ",".join(twin.port for twin in farm.twins.values()) if kind == "twins" else "labgrid:esp-a,esp-b"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["twins", "places"])
def test_pytest_refuses_a_list_of_boards_without_n_before_holding_any(farm: Farm, tmp_path: Path, kind: str) -> None:
    (tmp_path / "test_it.py").write_text(ANY_BOARD)
    done = subprocess.run(rig_argv(tmp_path, board_list(farm, kind), str(tmp_path / "test_it.py"),
                                   "--rootdir", str(tmp_path)),
                          cwd=ROOT, env=rig_env(farm, tmp_path), capture_output=True, text=True, timeout=100)
    assert done.returncode == 4, done.stdout + done.stderr
    assert "2 boards given but pytest runs one worker: pass -n 2 (pytest-xdist), or name one board" in done.stderr
    assert farm.held() == NOBODY
    assert not (tmp_path / "locks").exists()  # no port was locked
    assert not (tmp_path / "report").exists()


@pytest.mark.timeout(600)
@pytest.mark.parametrize("kind", ["twins", "places"])
def test_rig_run_tests_on_every_board_of_a_list(farm: Farm, tmp_path: Path, kind: str) -> None:
    """No --jobs: one worker a board, each scenario's record naming the board it ran on."""
    done = subprocess.run(
        [sys.executable, "-m", "ota_rig.cli", "run", "--ota-board", board_list(farm, kind),
         "-k", "test_device_on_the_latest_version or test_the_request_carries_exactly_the_cores_headers",
         "--ota-profile", "arduino-esp32-2.0", "--out", str(tmp_path / "runs"), "--ota-arduino-cli", str(FAKE_CLI),
         "--ota-host", "127.0.0.1"],
        cwd=ROOT, env=rig_env(farm, tmp_path), capture_output=True, text=True, timeout=540)
    assert done.returncode == 0 and "2 of 2 scenarios passed" in done.stdout, done.stdout + done.stderr
    assert ", 2 at a time; records in" in done.stdout
    ran = json.loads((tmp_path / "runs" / "latest" / "results.json").read_text())["scenarios"]
    assert {scenario["board"]["port"] for scenario in ran} == {twin.port for twin in farm.twins.values()}, ran
    if kind == "places":
        assert {scenario["board"]["place"] for scenario in ran} == {"esp-a", "esp-b"}
    assert farm.held() == NOBODY
