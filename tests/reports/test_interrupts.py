"""A run stopped by SIGINT or SIGTERM, as a user, a CI job or a terminal stops one: real processes,
real signals, and the records read back from the files. The scenarios under way end as
`interrupted`, the finished ones keep their verdicts, and nothing of the run is left running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from ota_rig.records.results import load

from ..process_table import processes
from .held import ONE_UPDATE

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
HELD = "test_certificate_from_another_ca_is_refused"  # held a minute by held.py, like all but ONE_UPDATE
NEVER_STARTED = "test_device_on_the_latest_version_downloads_nothing"
SELECTION = ["-k", f"{ONE_UPDATE} or {HELD} or {NEVER_STARTED}", "--ota-profile", "arduino-esp32-2.0"]


def start(*argv: str) -> subprocess.Popen[str]:
    """`argv` in a process group of its own, as a shell starts a job."""
    return subprocess.Popen([sys.executable, *argv], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def wait_for(check, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def left_behind(group: int, folder: Path) -> list[str]:
    """The live processes of the run's process group or naming its folder (a twin's flash file),
    and the pty links left in its folder."""
    found = [f"pid {p.pid}: {p.command}" for p in processes() if p.group == group or str(folder) in p.command]
    return found + [f"link {path}" for path in folder.rglob("*") if path.is_symlink()]


def check_records(folder: Path, signal_name: str) -> dict:
    """The run's records say what happened: the update passed, the held scenario was
    interrupted (an <error> in junit.xml, never a pass) with its logs kept, and the scenario
    that never started is not listed."""
    results = load(folder)[1]  # read as `rig report` reads it: checked against the schema
    verdicts = {scenario["name"].split("[")[0]: scenario for scenario in results["scenarios"]}
    assert {name: s["verdict"] for name, s in verdicts.items()} == {ONE_UPDATE: "passed", HELD: "interrupted"}
    assert verdicts[HELD]["message"] == f"interrupted by {signal_name}"
    assert results["run"]["interrupted"] == signal_name
    assert results["summary"] == {"total": 2, "passed": 1, "failed": 0, "error": 0, "skipped": 0, "interrupted": 1}
    logs = verdicts[HELD]["logs"]
    assert (folder / logs["board"]).exists() and (folder / logs["folder"] / "held").exists()
    cases = {case.get("name").split("[")[0]: case for case in ET.parse(folder / "junit.xml").getroot().iter("testcase")}
    assert [child.tag for child in cases[HELD] if child.tag != "properties" and child.tag != "system-out"] == ["error"]
    assert cases[HELD].find("error").get("type") == "interrupted"
    assert not [child for child in cases[ONE_UPDATE] if child.tag in ("error", "failure", "skipped")]
    assert ET.parse(folder / "junit.xml").getroot().find("testsuite").get("errors") == "1"
    assert "interrupted" in (folder / "report.html").read_text()
    return results


@pytest.mark.parametrize("signals, to_group", [
    pytest.param(["SIGINT"], True, id="ctrl-c"),
    pytest.param(["SIGINT", "SIGINT"], True, id="ctrl-c-twice"),
    pytest.param(["SIGTERM"], True, id="sigterm-to-the-group"),
    pytest.param(["SIGTERM"], False, id="sigterm-to-rig-alone"),
])
@pytest.mark.timeout(180)
def test_a_stopped_rig_run_writes_every_finished_verdict_and_the_interrupted_ones(
        tmp_path: Path, signals: list[str], to_group: bool) -> None:
    run = start("-m", "ota_rig.cli", "run", *SELECTION, "--jobs", "2", "--out", str(tmp_path), "--",
                "-p", "tests.reports.held")
    try:
        heading = run.stdout.readline()
        assert heading.startswith("rig run: "), heading + run.stderr.read()
        folder = Path(heading.rsplit("records in ", 1)[1].strip())
        for line in run.stdout:  # the update is the one scenario that ends by itself
            if line.startswith(f"PASS  {ONE_UPDATE}"):
                break
        wait_for(lambda: list((folder / "scenarios").glob(f"*{HELD}*/held")))
        for name in signals:
            if to_group:
                os.killpg(run.pid, getattr(signal, name))
            else:
                run.send_signal(getattr(signal, name))
            time.sleep(0.3)
        out, err = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    assert run.returncode == 130, out + err
    assert err.splitlines()[-1] == f"rig: interrupted after 1 of 3 scenarios; records in {folder}", err
    assert f"STOP  {HELD}" in out and "why: interrupted by" in out
    check_records(folder, signals[0])
    assert (tmp_path / "latest").resolve() == folder
    wait_for(lambda: not left_behind(run.pid, folder), timeout=10)


@pytest.mark.timeout(180)
def test_plain_pytest_stopped_by_ctrl_c_writes_the_records_too(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    # No pytest-xdist: the scenarios run one after the other, in the order given.
    run = start(
        "-m",
        "pytest",
        f"src/ota_rig/scenarios/test_update.py::{ONE_UPDATE}",
        f"src/ota_rig/scenarios/test_trust.py::{HELD}",
        f"src/ota_rig/scenarios/test_update.py::{NEVER_STARTED}",
        "--ota-profile",
        "arduino-esp32-2.0",
        "--ota-report",
        str(folder),
        "--ota-out",
        str(folder / "scenarios"),
        "-p",
        "tests.reports.held",
        "-p",
        "no:cacheprovider",
        "-o",
        "addopts=",
        "-q",
    )
    try:
        wait_for(lambda: list((folder / "scenarios").glob(f"*{HELD}*/held")))
        os.killpg(run.pid, signal.SIGINT)
        out, err = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    assert run.returncode == pytest.ExitCode.INTERRUPTED, out + err
    check_records(folder, "SIGINT")
    wait_for(lambda: not left_behind(run.pid, folder), timeout=10)
