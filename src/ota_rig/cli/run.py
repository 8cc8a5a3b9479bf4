"""`rig run`: the OTA scenarios of ota_rig/scenarios on a board, a line per scenario as it ends, and the
run's records in a folder of its own.

    rig run [--ota-board virtual] [--ota-profile P] [-k EXPR] [--jobs N] [--compare-to OLD/results.json]

The run's folder, out/runs/<UTC time>/ (ota_rig.records.run_folder; out/runs/latest points at the newest run
that wrote records), holds results.json, junit.xml, report.html and scenarios/<scenario>/ with
each scenario's logs. On a terminal a status line shows what the rig is doing (build, flash,
download) while a scenario runs; each scenario then gets its verdict, the device's transitions
and, if it failed, why. SIGINT or SIGTERM stops the run (ota_rig.pytest_plugin.interrupt): the scenarios under
way end as `interrupted`, the records are written, and `rig run` exits 130.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import TextIO

import pytest

from ota_rig.errors import CommandError
from ota_rig.pytest_plugin.interrupt import Interrupt
from ota_rig.pytest_plugin.settings import VIRTUAL_BOARDS, board_count
from ota_rig.records import run_folder
from ota_rig.records.recorder import RunRecorder
from ota_rig.records.results import load

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"  # shipped in the package
VERDICT_WORDS = {"passed": "PASS", "failed": "FAIL", "error": "ERROR", "skipped": "SKIP", "interrupted": "STOP"}


def run(args: argparse.Namespace) -> int:
    """Run the scenarios as `args` says; the exit status is pytest's, 1 for a regression against
    --compare-to, or 130 when a signal stopped the run."""

    virtual = args.board in VIRTUAL_BOARDS
    boards = board_count(args.board)  # None: a farm gives as many as asked for
    # Twins spend most of their time waiting on ptys and sockets: 4 at a time pays even on 2 cores.
    # Real boards: one scenario at a time on each board listed.
    jobs = args.jobs if args.jobs is not None else (4 if virtual else boards or 1)
    if jobs > 1 and not virtual and boards is not None and boards < jobs:
        if boards == 1:
            raise CommandError("a real board runs one scenario at a time; drop --jobs")
        raise CommandError(f"--jobs {jobs} needs {jobs} boards and --ota-board names {boards}; "
                           "name more boards, or lower --jobs")
    if not virtual and boards is not None and jobs < boards:
        raise CommandError(f"--jobs {jobs} tests on {jobs} of the {boards} boards --ota-board names; "
                           f"drop --jobs (one worker a board), or name {jobs} {'board' if jobs == 1 else 'boards'}")
    baseline = load(args.compare_to)[1] if args.compare_to else None
    stop = Interrupt()
    stop.install()  # from here to the end a signal stops the run, and its records are still written
    try:
        return _run(args, jobs, virtual, baseline, stop)
    finally:
        stop.uninstall()


def _run(args: argparse.Namespace, jobs: int, virtual: bool, baseline: dict | None, stop: Interrupt) -> int:

    folder = run_folder.new(args.out)
    try:
        # pytest captures file descriptors 1 and 2 while a test runs; the status line written from
        # inside a scenario goes to a copy of the terminal's descriptor, which capture leaves alone.
        with os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8", errors="replace") as terminal:
            printer = ScenarioPrinter(
                terminal,
                live=terminal.isatty(),
                heading=f"rig run: OTA scenarios on {args.board}, {jobs} at a time; records in {folder}",
            )
            code = pytest.main(arguments_for_pytest(args, folder, jobs, virtual), plugins=[printer, stop, Refusals()])
    except CommandError:
        run_folder.discard(folder)  # refused before anything ran
        raise
    if code == pytest.ExitCode.NO_TESTS_COLLECTED:
        run_folder.discard(folder)  # nothing ran: no record to keep
        raise CommandError(f"no scenario matches -k {args.keyword!r}; see the names in docs/scenarios.md")
    if not (folder / "results.json").exists():
        if stop.signal:  # stopped before the session began (waiting for a farm's places): nothing ran
            run_folder.discard(folder)
            return 130
        return int(code) or 2  # pytest broke down and has said why
    results = load(folder)[1]
    run_folder.publish(args.out)
    if results["run"]["interrupted"]:
        finished = sum(scenario["verdict"] != "interrupted" for scenario in results["scenarios"])
        print(
            f"rig: interrupted after {finished} of {printer.selected} scenarios; records in {folder}", file=sys.stderr
        )
        return 130
    print(summary_line(results))
    for name in ("report.html", "results.json", "junit.xml"):
        print(f"{name + ':':<14}{folder / name}")
    if baseline is not None:
        from ota_rig.reporting.compare import compare

        comparison = compare(baseline, results)
        print(comparison.text())
        if comparison.regressed:
            return 1
    return int(code)


def arguments_for_pytest(args: argparse.Namespace, folder: Path, jobs: int, virtual: bool) -> list[str]:
    """pytest's arguments for the run `args` asks for, its records going to `folder`."""
    # The scenarios' own ini, whatever the folder's: the same settings in any project, node ids
    # relative to the package (scenarios/test_update.py::...), records where `rig run` was started.
    argv = [
        str(SCENARIOS),
        "-c",
        str(SCENARIOS / "pytest.ini"),
        "--rootdir",
        str(SCENARIOS.parent),
        "--ota-board",
        args.board,
        "--ota-report",
        str(folder),
        "--ota-out",
        str(folder / "scenarios"),
        "-p",
        "no:terminal",
        "-p",
        "no:cacheprovider",
    ]
    # labgrid's own pytest plugin (loaded wherever labgrid is installed) reads pytest's terminal
    # options, which `rig run` turns off: "ValueError: no option named 'verbose'". Off unless asked for.
    if not _asks_for_plugin(args.pytest_args, "labgrid"):
        argv += ["-p", "no:labgrid"]
    if jobs > 1:
        argv += ["-n", str(jobs)]
    if not virtual:  # the core's own timeouts run in full on a board (docs/hardware.md)
        argv += ["--timeout", "900"]
    if args.profile:
        argv += ["--ota-profile", args.profile]
    if args.keyword:
        argv += ["-k", args.keyword]
    for flag in args.forwarded:  # the bench options given (ota_rig.pytest_plugin.options)
        value = getattr(args, flag.removeprefix("--").replace("-", "_"), None)
        if value is not None:
            argv += [flag, str(value)]
    return argv + args.pytest_args


def _asks_for_plugin(pytest_args: list[str], name: str) -> bool:
    return (
        any(arg == "-p" and value == name for arg, value in zip(pytest_args, pytest_args[1:], strict=False))
        or f"-p{name}" in pytest_args
    )


class Refusals:
    """A pytest plugin turning pytest's refusal of what `rig run` passed on (UsageError: an
    option's value, a bench the rig plugin cannot use) into the CommandError `rig` prints as
    one sentence."""

    @pytest.hookimpl(wrapper=True)
    def pytest_cmdline_parse(self):
        return (yield from self._refused())

    @pytest.hookimpl(wrapper=True)
    def pytest_cmdline_main(self):
        return (yield from self._refused())

    @staticmethod
    def _refused():
        try:
            return (yield)
        except pytest.UsageError as error:
            # pytest's argparse says its usage, "pytest.main(): error: <complaint>", then where
            # its settings came from; the rig plugin says one sentence
            lines = str(error).strip().splitlines()
            argparse_says = next((line.split(" error: ", 1)[1] for line in lines if " error: " in line), None)
            if argparse_says is None:
                raise CommandError(lines[0]) from None
            raise CommandError(f"pytest: {argparse_says}; see `pytest --help` for what goes after --") from None


def summary_line(results: dict) -> str:
    summary = results["summary"]
    parts = [f"{summary[word]} {word}" for word in ("failed", "error", "skipped", "interrupted") if summary[word]]
    return (
        f"{summary['passed']} of {summary['total']} scenarios passed"
        f"{' (' + ', '.join(parts) + ')' if parts else ''} in {results['run']['seconds']:.1f} s"
    )


class ScenarioPrinter:
    """A pytest plugin printing each scenario as it ends, from its record in the run's
    RunRecorder (ota_rig.records), and, with `live`, a status line of what the rig is doing in the
    scenario under way (from the `ota_rig.progress` log; with scenarios running in pytest-xdist
    workers, only which one started last)."""

    def __init__(self, out: TextIO, live: bool, heading: str) -> None:
        self.heading = heading  # printed once pytest has accepted the options
        self.out = out
        self.live = live
        self.recorder: RunRecorder | None = None
        self.selected = 0  # the scenarios the run was to run, once it has ended
        self.current = ""
        self._handler = _StatusHandler(self)

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self.recorder = session.config.pluginmanager.get_plugin("rig-results")
        self.out.write(self.heading + "\n")
        self.out.flush()
        if self.live:
            progress = logging.getLogger("ota_rig.progress")
            progress.setLevel(logging.INFO)
            progress.propagate = False  # not into each test's captured log
            progress.addHandler(self._handler)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        self.selected = session.testscollected
        logging.getLogger("ota_rig.progress").removeHandler(self._handler)
        self.status("")

    def pytest_runtest_logstart(self, nodeid: str) -> None:
        self.current = nodeid.split("::", 1)[1]
        self.status("starting")

    @pytest.hookimpl(trylast=True)  # after RunRecorder has the teardown in its record
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "teardown" and self.recorder is not None:
            self.print_scenario(self.recorder.tests[report.nodeid], self.recorder.folder)

    def print_scenario(self, test: dict, run_folder: Path) -> None:
        """Print a finished scenario's lines; its logs' folder is relative to `run_folder`."""
        verdict, why = test["verdict"], test["message"]
        self.status("")
        lines = [f"{VERDICT_WORDS[verdict]:<5} {test['name']}  ({test['durations']['total']:.1f} s)"]
        if "observed" in test:
            steps = [event["transition"] for event in test["observed"] if event["transition"]]
            lines.append(f"      {' → '.join(steps) or 'no serial output'}")
        lines += [f"      finding: {finding['text']}" for finding in test.get("findings", ())]
        if why and verdict != "passed":
            lines.append(f"      {'why' if verdict != 'skipped' else 'skipped'}: {why}")
        if "folder" in test.get("logs", {}):
            lines.append(f"      logs: {(run_folder / test['logs']['folder']).resolve()}")
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
    """Turns `ota_rig.progress` records (build 0.2, flash 0.1, download /update: 45056 of 90192
    bytes) into the printer's status line."""

    def __init__(self, printer: ScenarioPrinter) -> None:
        super().__init__(logging.INFO)
        self.printer = printer

    def emit(self, record: logging.LogRecord) -> None:
        self.printer.status(record.getMessage())
