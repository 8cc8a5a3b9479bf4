"""`rig run`: the OTA scenarios of tests/ota on a board, a line per scenario as it ends, and the
run's records in a folder of its own.

    rig run [--board virtual] [--profile P] [-k EXPR] [--jobs N] [--compare-to OLD/results.json]

The run's folder, out/runs/<UTC time>/ (out/runs/latest points at the newest), holds
results.json, junit.xml, report.html and scenarios/<scenario>/ with each scenario's logs. On a
terminal a status line shows what the rig is doing (build, flash, download) while a scenario
runs; each scenario then gets its verdict, the device's transitions and, if it failed, why.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import TextIO

import pytest

from .plugin import VIRTUAL_BOARDS
from .results import RunRecorder, load

SCENARIOS = Path(__file__).resolve().parents[1] / "tests" / "ota"
VERDICT_WORDS = {"passed": "PASS", "failed": "FAIL", "error": "ERROR", "skipped": "SKIP"}


def run(args: argparse.Namespace) -> int:
    """Run the scenarios as `args` says; the exit status is pytest's, or 1 for a regression
    against --compare-to."""
    from .cli import CommandError

    virtual = args.board in VIRTUAL_BOARDS
    # Twins spend most of their time waiting on ptys and sockets: 4 at a time pays even on 2 cores.
    jobs = args.jobs if args.jobs is not None else (4 if virtual else 1)
    if jobs > 1 and not virtual:
        raise CommandError("a real board runs one scenario at a time; drop --jobs")
    baseline = load(args.compare_to)[1] if args.compare_to else None
    previous = _latest(args.out)
    folder = new_run_folder(args.out)
    pytest_args = [str(SCENARIOS), "--board", args.board, "--rig-report", str(folder),
                   "--ota-out", str(folder / "scenarios"), "-o", "addopts=", "-p", "no:terminal",
                   "-p", "no:cacheprovider"]
    if jobs > 1:
        pytest_args += ["-n", str(jobs)]
    if not virtual:  # the core's own timeouts run in full on a board (docs/hardware.md)
        pytest_args += ["--timeout", "900"]
    if args.profile:
        pytest_args += ["--profile", args.profile]
    if args.keyword:
        pytest_args += ["-k", args.keyword]
    pytest_args += args.pytest_args

    # pytest captures file descriptors 1 and 2 while a test runs; the status line written from
    # inside a scenario goes to a copy of the terminal's descriptor, which capture leaves alone.
    with os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8", errors="replace") as terminal:
        printer = ScenarioPrinter(terminal, live=terminal.isatty(),
                                  heading=f"rig run: OTA scenarios on {args.board}, {jobs} at a time; records in {folder}")
        code = pytest.main(pytest_args, plugins=[printer])
    if code in (pytest.ExitCode.NO_TESTS_COLLECTED, pytest.ExitCode.USAGE_ERROR):
        drop_run_folder(folder, previous)  # nothing ran: no record to keep
        if code == pytest.ExitCode.NO_TESTS_COLLECTED:
            raise CommandError(f"no scenario matches -k {args.keyword!r}; see the names in docs/scenarios.md")
        return int(code)  # pytest has said why, in one sentence
    if not (folder / "results.json").exists():
        return int(code) or 2  # pytest broke down and has said why
    results = load(folder)[1]
    print(summary_line(results))
    for name in ("report.html", "results.json", "junit.xml"):
        print(f"{name + ':':<14}{folder / name}")
    if baseline is not None:
        from .compare import compare
        comparison = compare(baseline, results)
        print(comparison.text())
        if comparison.regressed:
            return 1
    return int(code)


def new_run_folder(out: Path) -> Path:
    """out/<UTC time>/, new, and out/latest pointing at it."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H-%M-%SZ")
    folder = (out / stamp).resolve()
    for number in range(2, 100):  # two runs within a second
        if not folder.exists():
            break
        folder = (out / f"{stamp}-{number}").resolve()
    folder.mkdir(parents=True)
    latest = out / "latest"
    if latest.is_symlink() or latest.exists():
        latest.unlink() if latest.is_symlink() else shutil.rmtree(latest)
    latest.symlink_to(folder.name)
    return folder


def _latest(out: Path) -> Path | None:
    latest = out / "latest"
    return latest.resolve() if latest.is_symlink() and latest.resolve().exists() else None


def drop_run_folder(folder: Path, previous: Path | None) -> None:
    """Remove a run's folder that holds nothing, and point out/latest back where it was."""
    shutil.rmtree(folder, ignore_errors=True)
    latest = folder.parent / "latest"
    latest.unlink(missing_ok=True)
    if previous is not None:
        latest.symlink_to(previous.name)


def summary_line(results: dict) -> str:
    summary = results["summary"]
    parts = [f"{summary[word]} {word}" for word in ("failed", "error", "skipped") if summary[word]]
    return (f"{summary['passed']} of {summary['total']} scenarios passed"
            f"{' (' + ', '.join(parts) + ')' if parts else ''} in {results['run']['seconds']:.1f} s")


class ScenarioPrinter:
    """A pytest plugin printing each scenario as it ends, from its record in the run's
    RunRecorder (rig.results), and, with `live`, a status line of what the rig is doing in the
    scenario under way (from the `rig.progress` log; with scenarios running in pytest-xdist
    workers, only which one started last)."""

    def __init__(self, out: TextIO, live: bool, heading: str) -> None:
        self.heading = heading  # printed once pytest has accepted the options
        self.out = out
        self.live = live
        self.recorder: RunRecorder | None = None
        self.current = ""
        self._handler = _StatusHandler(self)

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self.recorder = session.config.pluginmanager.get_plugin("rig-results")
        self.out.write(self.heading + "\n")
        self.out.flush()
        if self.live:
            progress = logging.getLogger("rig.progress")
            progress.setLevel(logging.INFO)
            progress.propagate = False  # not into each test's captured log
            progress.addHandler(self._handler)

    def pytest_sessionfinish(self) -> None:
        logging.getLogger("rig.progress").removeHandler(self._handler)
        self.status("")

    def pytest_runtest_logstart(self, nodeid: str) -> None:
        self.current = nodeid.split("::", 1)[1]
        self.status("starting")

    @pytest.hookimpl(trylast=True)  # after RunRecorder has the teardown in its record
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "teardown" and self.recorder is not None:
            self.print_scenario(self.recorder.tests[report.nodeid])

    def print_scenario(self, test: dict) -> None:
        verdict, why = test["verdict"], test["message"]
        self.status("")
        lines = [f"{VERDICT_WORDS[verdict]:<5} {test['name']}  ({test['durations']['total']:.1f} s)"]
        if "observed" in test:
            steps = [event["transition"] for event in test["observed"] if event["transition"]]
            lines.append(f"      {' → '.join(steps) or 'no serial output'}")
        if why and verdict != "passed":
            lines.append(f"      {'why' if verdict != 'skipped' else 'skipped'}: {why}")
        if "folder" in test.get("logs", {}):
            lines.append(f"      logs: {(self.recorder.folder / test['logs']['folder']).resolve()}")
        self.out.write("\n".join(lines) + "\n")
        self.out.flush()

    def status(self, doing: str) -> None:
        """Show (or, with "", clear) the status line: the scenario under way and its step."""
        if not self.live:
            return
        text = f"  … {doing:<40} {self.current}" if doing else ""
        width = shutil.get_terminal_size().columns - 1
        self.out.write("\r\x1b[K" + text[:width])
        self.out.flush()


class _StatusHandler(logging.Handler):
    """Turns `rig.progress` records (build 0.2, flash 0.1, download /update: 45056 of 90192
    bytes) into the printer's status line."""

    def __init__(self, printer: ScenarioPrinter) -> None:
        super().__init__(logging.INFO)
        self.printer = printer

    def emit(self, record: logging.LogRecord) -> None:
        self.printer.status(record.getMessage())
