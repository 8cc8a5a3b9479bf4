"""An update loop, found by the monitor, in every record of a real `rig run`: its printed
lines, results.json and report.html, each pointing at the serial.log line that shows it."""

from __future__ import annotations

import json
from pathlib import Path

from tests.reports.test_cli import ONE_UPDATE, rig

LOOP = "test_a_static_file_server_makes_an_update_loop"


def test_rig_run_flags_an_update_loop_in_its_output_record_and_report(tmp_path: Path) -> None:
    done = rig("run", "-k", f"{LOOP} or {ONE_UPDATE}", "--ota-profile", "arduino-esp32-2.0", "--out", str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "      finding: update loop: version 0.2 was installed over itself" in done.stdout
    run = (tmp_path / "latest").resolve()
    results = json.loads((run / "results.json").read_text())
    findings = {s["name"].split("[")[0]: s["findings"] for s in results["scenarios"]}
    assert findings[ONE_UPDATE] == []  # a good server: one update, then 304
    loop = findings[LOOP][0]
    assert loop["finding"] == "update loop" and "answers 200 to a device already on its offer" in loop["text"]
    scenario = next(s for s in results["scenarios"] if s["name"].startswith(LOOP))
    serial = (run / scenario["logs"]["serial"]).read_text().splitlines()
    assert serial[loop["line"]].endswith("Firmware version 0.2")
    before = serial[:loop["line"]]  # the boot before it ran 0.2 too, and installed an update
    last_boot = max(number for number, line in enumerate(before) if "Firmware version" in line)
    assert before[last_boot].endswith("Firmware version 0.2")
    assert any(line.endswith("HTTP_UPDATE_OK") for line in before[last_boot:])
    report = (run / "report.html").read_text()
    assert "<h3>Findings</h3>" in report and "update loop" in report
