"""`--ota-board B1,B2 -n 2`: each pytest-xdist worker tests on a board of its own, locked by it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ota_rig.bench.board import VirtualBoard

pytestmark = [pytest.mark.virtual]

ROOT = Path(__file__).resolve().parents[2]
FAKE_CLI = ROOT / "tests" / "fakes" / "arduino-cli"
PROBE = """import os, time
def test_{n}(ota_real_board, ota_bench):
    open(os.path.join({folder!r}, os.environ["PYTEST_XDIST_WORKER"] + "-{n}"), "w").write(ota_real_board.port)
    time.sleep(1)
"""


@pytest.mark.timeout(180)
def test_two_workers_get_a_board_each(tmp_path: Path) -> None:
    seen = tmp_path / "seen"
    seen.mkdir()
    (tmp_path / "test_probe.py").write_text("".join(PROBE.format(n=n, folder=str(seen)) for n in range(4)))
    with VirtualBoard(tmp_path / "a", transport="rfc2217") as a, VirtualBoard(tmp_path / "b", transport="rfc2217") as b:
        env = {**os.environ, "OTA_WIFI_SSID": "bench-ap", "OTA_WIFI_PASSWORD": "x",
               "OTA_RIG_LOCK_DIR": str(tmp_path / "locks")}
        done = subprocess.run(
            [sys.executable, "-m", "pytest", str(tmp_path / "test_probe.py"), "--rootdir", str(tmp_path),
             "--ota-board", f"{a.port},{b.port}", "--ota-arduino-cli", str(FAKE_CLI), "--ota-host", "127.0.0.1",
             "--ota-out", str(tmp_path / "out"), "-n", "2", "-p", "no:cacheprovider", "-q"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=170)
        ports = {a.port, b.port}
    assert done.returncode == 0, done.stdout + done.stderr
    by_worker: dict[str, set[str]] = {}
    for record in seen.iterdir():
        by_worker.setdefault(record.name.split("-")[0], set()).add(record.read_text())
    assert sorted(by_worker) == ["gw0", "gw1"], by_worker
    assert {port for used in by_worker.values() for port in used} == ports
    assert all(len(used) == 1 for used in by_worker.values()), by_worker  # a worker keeps its board
    assert len(list((tmp_path / "locks").glob("*.lock"))) == 2  # each worker locked its own port
