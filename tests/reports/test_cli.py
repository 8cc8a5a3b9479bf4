"""The `rig` command as a user runs it: a process, its output, its exit status and its files."""

from __future__ import annotations

import copy
import json
import os
import pty
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ONE_UPDATE = "test_older_device_updates_reboots_and_runs_the_new_version"
RIG = [sys.executable, "-m", "ota_rig.cli"]


def rig(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RIG, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_rig_run_prints_each_scenario_a_summary_and_where_the_report_is(tmp_path: Path) -> None:
    done = rig("run", "-k", ONE_UPDATE, "--ota-profile", "arduino-esp32-2.0", "--out", str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[1].startswith(f"PASS  {ONE_UPDATE}[arduino-esp32-2.0]")
    assert "Firmware version 0.1 → HTTP_UPDATE_OK → reset SW_CPU_RESET → Firmware version 0.2" in lines[2]
    assert any(line.startswith("1 of 1 scenarios passed in ") for line in lines)
    report = Path(next(line for line in lines if line.startswith("report.html:")).split(maxsplit=1)[1])
    assert report.parent == (tmp_path / "latest").resolve()
    assert {path.name for path in report.parent.iterdir()} == {"report.html", "results.json", "junit.xml", "scenarios"}
    results = json.loads((report.parent / "results.json").read_text())
    assert [s["verdict"] for s in results["scenarios"]] == ["passed"]
    assert results["run"]["command"].startswith("python -m ota_rig.cli run -k")
    serial = (report.parent / results["scenarios"][0]["logs"]["serial"]).read_text()
    assert "HTTP_UPDATE_OK" in serial


def test_on_a_terminal_rig_run_shows_the_build_flash_and_download_under_way(tmp_path: Path) -> None:
    controller, terminal = pty.openpty()
    process = subprocess.Popen([*RIG, "run", "-k", ONE_UPDATE, "--ota-profile", "arduino-esp32-2.0", "--jobs", "1",
                                "--out", str(tmp_path)], cwd=ROOT, stdout=terminal, stderr=terminal)
    os.close(terminal)
    shown = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            data = os.read(controller, 65536)
        except OSError:  # the process ended and closed its side
            break
        if not data:
            break
        shown += data
    assert process.wait(timeout=30) == 0
    os.close(controller)
    text = shown.decode()
    for step in ("build 0.1", "flash 0.1", "download /update: 90192 of 90192 bytes", "read-back"):
        assert f"… {step}" in text, text
    assert "\x1b[K" in text and f"PASS  {ONE_UPDATE}" in text


def test_rig_run_compared_with_an_earlier_run_says_what_got_worse_and_fails(tmp_path: Path, twin_run) -> None:
    _, results = twin_run
    earlier = copy.deepcopy(results)
    # The earlier run passed a scenario this run does not have: what it proved is proved no more.
    gone = copy.deepcopy(next(s for s in earlier["scenarios"] if s["name"].startswith(ONE_UPDATE)))
    gone["id"] = gone["id"].replace(ONE_UPDATE, "test_a_scenario_since_removed")
    earlier["scenarios"].append(gone)
    baseline = tmp_path / "earlier" / "results.json"
    baseline.parent.mkdir()
    baseline.write_text(json.dumps(earlier))
    done = rig("run", "-k", ONE_UPDATE, "--ota-profile", "arduino-esp32-2.0", "--out", str(tmp_path / "runs"),
               "--compare-to", str(baseline))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "REGRESSED" in done.stdout and "test_a_scenario_since_removed" in done.stdout


@pytest.mark.parametrize(
    "args, sentence",
    [
        (["run", "-k", "no_such_scenario"], "rig: no scenario matches -k 'no_such_scenario'"),
        (
            ["run", "--ota-board", "/dev/ttyUSB9", "--jobs", "2"],
            "rig: a real board runs one scenario at a time; drop --jobs",
        ),
        (["report", "/no/such/run"], "rig: /no/such/run: no such file; pass a results.json or the run folder"),
        (["compare", str(ROOT / "pytest.ini"), str(ROOT / "pytest.ini")], "is not JSON"),
    ],
)
def test_a_mistake_is_one_sentence_with_the_fix_and_no_traceback(
    args: list[str], sentence: str, tmp_path: Path
) -> None:
    done = rig(*args, *(["--out", str(tmp_path)] if args[0] == "run" else []))
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1 and sentence in done.stderr
    assert "Traceback" not in done.stderr
    assert not any(tmp_path.iterdir())  # a run that did not happen leaves no folder


def test_debug_shows_the_traceback_too() -> None:
    done = rig("--debug", "report", "/no/such/run")
    assert done.returncode == 2
    assert "Traceback (most recent call last)" in done.stderr
    assert done.stderr.splitlines()[-1].startswith("rig: /no/such/run: no such file")


def test_rig_virtual_starts_a_twin_that_esptool_reads(tmp_path: Path) -> None:
    link = tmp_path / "ttyESP32"
    twin = subprocess.Popen(
        [
            *RIG,
            "virtual",
            "--flash",
            str(tmp_path / "flash.bin"),
            "--pty",
            str(link),
            "--io0-low",
            "--mac",
            "24:6f:28:01:02:03",
        ],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert twin.stdout.readline().startswith("virtual ESP32 24:6f:28:01:02:03 listening on")
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "esptool",
                "--port",
                str(link),
                "--before",
                "no-reset",
                "--after",
                "no-reset",
                "read-mac",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert "MAC:                24:6f:28:01:02:03" in done.stdout, done.stdout + done.stderr
    finally:
        twin.terminate()
        assert twin.wait(timeout=10) == 0
