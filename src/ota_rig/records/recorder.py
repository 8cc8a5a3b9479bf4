"""`RunRecorder`, the pytest plugin that makes a run's records: each test's verdict from pytest's
reports, joined with the scenario.json its folder holds; at the end, results.json, junit.xml and
report.html.
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path
from typing import Any, Protocol

import pytest

from ota_rig.records.results import run_record, write_reports


class SignalWatch(Protocol):
    """What stops a run (ota_rig.pytest_plugin.interrupt.Interrupt): the first signal's name."""

    signal: str | None


def interrupted_by(report: pytest.TestReport) -> str | None:
    """The signal ("SIGINT", "SIGTERM") that cut the phase of `report` short, or None: the
    interrupt plugin sets it on the report as `interrupted`, which travels to an xdist controller."""
    return getattr(report, "interrupted", None)


class RunRecorder:
    """A pytest plugin on the session's controller: each test's verdict and time from pytest's
    reports, joined with the scenario.json its folder under `scenarios` holds; at the end,
    results.json, junit.xml and report.html in `folder`."""

    def __init__(self, folder: Path, scenarios: Path, board: str, cores: dict[str, str],
                 stop: SignalWatch) -> None:
        self.folder = Path(folder)
        self.scenarios = Path(scenarios)
        self.board = board  # the --ota-board the run was asked for
        self.cores = cores  # profile -> the core version built with
        self.stop = stop  # this process's signal handling: which signal stopped the run, if one did
        self.started = datetime.datetime.now(datetime.timezone.utc)
        self.tests: dict[str, dict[str, Any]] = {}
        self.written: list[Path] = []
        self.signal: str | None = None  # the signal a test was interrupted by (a worker's own)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        test = self.tests.setdefault(report.nodeid, _test_record(report.nodeid))
        test["_seconds"] += report.duration
        self.signal = self.signal or interrupted_by(report)
        if report.when == "call" or report.failed or (report.skipped and test["verdict"] is None):
            verdict, message = _verdict_of(report)
            if test["verdict"] in (None, "passed"):  # a teardown error after a pass is the news
                test["verdict"], test["message"] = verdict, message
                test["details"] = None if verdict == "interrupted" else _details(report)
        if report.when == "teardown":
            self._close(report.nodeid, test)

    def _close(self, nodeid: str, test: dict[str, Any]) -> None:
        """The test is over: its scenario.json joins its record, and its time is totalled."""
        from ota_rig.records.run_folder import folder_name
        folder = self.scenarios / folder_name(nodeid)
        if (folder / "scenario.json").exists():
            test.update({key: value for key, value in _scenario_file(folder).items() if key not in test})
            logs = test.setdefault("logs", {})
            test["logs"] = {name: os.path.relpath(folder / file, self.folder) for name, file in logs.items()}
            test["logs"]["folder"] = os.path.relpath(folder, self.folder)
        test.setdefault("durations", {})["total"] = round(test.pop("_seconds"), 4)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        for nodeid, test in self.tests.items():
            if "_seconds" in test:  # no teardown report came: the run stopped while the test ran
                if test["verdict"] is None:
                    test["verdict"], test["message"] = "interrupted", "the run stopped before the test ended"
                self._close(nodeid, test)
        results = run_record(list(self.tests.values()), self.started, self.board, self.cores,
                             self.stop.signal or self.signal)
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / "results.json"
        path.write_text(json.dumps(results, indent=1))
        self.written = [path, *write_reports(results, self.folder, self.folder)]

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        for path in self.written:
            terminalreporter.write_line(f"rig: wrote {path}")


def _scenario_file(folder: Path) -> dict[str, Any]:
    """A scenario's scenario.json; one that cannot be read (a run killed as it wrote) is said
    in `record_error`, and the test keeps its verdict."""
    try:
        record = json.loads((folder / "scenario.json").read_text())
    except (OSError, ValueError) as err:
        return {"record_error": f"{folder / 'scenario.json'} is unreadable ({err})"}
    return record if isinstance(record, dict) else {"record_error": "scenario.json holds no JSON object"}


def _test_record(nodeid: str) -> dict[str, Any]:
    module, _, name = nodeid.partition("::")
    return {"id": nodeid, "module": Path(module).stem, "name": name, "verdict": None, "message": None,
            "_seconds": 0.0}


def _verdict_of(report: pytest.TestReport) -> tuple[str, str | None]:
    """pytest's word for how a phase went (a failed setup or teardown is an "error"; a phase a
    signal cut short is "interrupted") and the one line that says why."""
    signal = interrupted_by(report)
    if signal:
        return "interrupted", f"interrupted by {signal}"
    if report.passed:
        return "passed", None
    if report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        return "skipped", reason.removeprefix("Skipped: ")
    details = _details(report)
    assert details is not None  # _details is None only for passed or skipped reports, returned above
    line = next((part.strip() for part in details.splitlines() if part.strip()), "failed")
    # "...did not come within 1 s; the last 15 lines received:": the lines are in `details`
    if line.endswith(":") and "; " in line:
        line = line.rsplit("; ", 1)[0]
    return ("failed" if report.when == "call" else "error"), line


def _details(report: pytest.TestReport) -> str | None:
    """The whole failure message (an ExpectTimeout's quotes the last lines the port sent),
    without the traceback; None for a test that passed or was skipped."""
    if report.passed or report.skipped:
        return None
    crash = getattr(report.longrepr, "reprcrash", None)
    return crash.message if crash is not None else str(report.longrepr)
