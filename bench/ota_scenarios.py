"""How long each OTA scenario of src/ota_rig/scenarios takes on the virtual ESP32, and how much of that is
the rig's own work.

    python bench/ota_scenarios.py [--ota-board virtual] [-k EXPRESSION]

Runs the scenarios one after another (no parallelism) and prints, per scenario, the wall time
pytest measured (setup + call + teardown) and the rig's own steps as the scenario recorded them
in scenario.json's timings: starting the board, the server and its listeners, builds, esptool writing and
reading back flash. What is left is the device's time: booting, Wi-Fi, TLS, download, reboot,
plus the monitor's reaction time.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import pytest

from ota_rig.records.run_folder import folder_name

ROOT = Path(__file__).resolve().parents[1]

STEPS = ("board", "server", "build", "flash", "read-back")


class Durations:
    """Collects each test's setup + call + teardown time."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.outcome: dict[str, str] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.wall[report.nodeid] = self.wall.get(report.nodeid, 0.0) + report.duration
        if report.when == "call" or not report.passed:
            self.outcome.setdefault(report.nodeid, report.outcome)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ota-board", default="virtual")
    parser.add_argument("-k", dest="keyword")
    args = parser.parse_args()
    durations = Durations()
    with tempfile.TemporaryDirectory(prefix="rig-bench-") as out:
        pytest_args = [str(ROOT / "src" / "ota_rig" / "scenarios"), "-q", "-p", "no:cacheprovider", "--ota-out", out,
                       "--ota-board", args.board]
        if args.keyword:
            pytest_args += ["-k", args.keyword]
        code = pytest.main(pytest_args, plugins=[durations])
        print(f"\n{'scenario':<95} {'wall s':>7} {'rig s':>6} {'device s':>8}  rig steps (s)")
        total = rig_total = 0.0
        for nodeid, wall in durations.wall.items():
            record = Path(out) / folder_name(nodeid) / "scenario.json"
            timings = json.loads(record.read_text())["timings"] if record.exists() else {}
            rig = sum(timings.get(step, 0.0) for step in STEPS)
            steps = " ".join(f"{step} {timings.get(step, 0.0):.2f}" for step in STEPS)
            name = nodeid.split("::", 1)[1]
            print(f"{name:<95} {wall:7.2f} {rig:6.2f} {wall - rig:8.2f}  {steps}  [{durations.outcome.get(nodeid)}]")
            total, rig_total = total + wall, rig_total + rig
        print(
            f"{'all ' + str(len(durations.wall)) + ' scenarios':<95} "
            f"{total:7.2f} {rig_total:6.2f} {total - rig_total:8.2f}"
        )
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
