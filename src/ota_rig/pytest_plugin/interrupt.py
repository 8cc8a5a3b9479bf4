"""Stopping a run on SIGINT or SIGTERM, and keeping its records.

At the first signal no test starts any more, and the tests under way end: `Interrupted` is
raised in their setup or body, so their fixtures close boards and servers as after any failure,
their logs stay, and their reports say which signal cut them short (`report.interrupted`; ota_rig.records
records the verdict `interrupted`). A test that is tearing down finishes its teardown. The
session then ends as pytest ends an interrupted one, and RunRecorder writes results.json,
junit.xml and report.html. Later signals change nothing: what they would cut short is the
teardowns, which take seconds, and the records.

`Interrupt` is a pytest plugin, one in each process of a run (ota_rig.pytest_plugin registers it; `rig run`
makes its own first, so that a signal during start-up counts too). A pytest-xdist controller
runs no test: it passes the signal on to its child processes, the workers (a signal may reach it
alone: `kill PID`, a CI job's timeout), each of which stops as above. A process whose run was
stopped ends, at the end of its session, any child process its tests left behind.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

SIGNALS = (signal.SIGINT, signal.SIGTERM)
GRACE = 5.0  # seconds a left-behind process gets to end after SIGTERM, before SIGKILL


class Interrupted(BaseException):
    """Raised in a test under way when the run stops: a BaseException, as KeyboardInterrupt is,
    so that no `except Exception` in a test or fixture swallows it."""


class Interrupt:
    """The signal handlers of one process of a run, and the hooks that stop its session."""

    def __init__(self) -> None:
        self.signal: str | None = None  # the first signal's name, once one came
        self._number = 0
        self._session: pytest.Session | None = None
        self._controller = False  # a pytest-xdist controller: its workers run the tests
        self._collected = False  # the session's tests are known: it can be told to stop
        self._in_test = False  # inside a test's setup or body, where Interrupted may be raised
        self._previous: dict[int, Any] = {}
        self._for_session = False  # installed by the session's configure, so undone by its unconfigure

    def install(self) -> None:
        """Take SIGINT and SIGTERM from now on (Python lets only the main thread do so)."""
        if not self._previous and threading.current_thread() is threading.main_thread():
            self._previous = {number: signal.signal(number, self._arrived) for number in SIGNALS}

    def uninstall(self) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous = {}

    def _arrived(self, number: int, frame: object) -> None:
        if self.signal is not None:
            return  # stopping already
        self.signal, self._number = signal.Signals(number).name, number
        if self._controller:
            self._forward()
        if self._collected:
            self._stop_session()
        if self._in_test:
            raise Interrupted(self.signal)

    def _forward(self) -> None:
        for pid in children(os.getpid()):
            try:
                os.kill(pid, self._number)
            except ProcessLookupError:
                pass

    def _stop_session(self) -> None:
        assert self._session is not None
        self._session.shouldstop = f"interrupted by {self.signal}"

    # --- pytest hooks ---------------------------------------------------------------------

    def pytest_configure(self) -> None:
        self._for_session = not self._previous  # `rig run` installs its own first, and undoes it
        self.install()

    def pytest_unconfigure(self) -> None:
        if self._for_session:
            self.uninstall()

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self._session = session
        self._controller = session.config.pluginmanager.has_plugin("dsession")

    def pytest_collection_finish(self) -> None:
        # Not sooner: a session told to stop while it collects ends with exit status 2, which a
        # pytest-xdist controller takes for a crashed worker and replaces.
        self._collected = True
        if self.signal and not self._controller:
            self._stop_session()

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodeready(self) -> None:
        """A pytest-xdist worker came up after the signal: it stops too."""
        if self.signal:
            self._forward()

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_protocol(self) -> bool | None:
        return True if self.signal else None  # no test starts once the run stops

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_setup(self) -> Generator[None, None, None]:
        return (yield from self._interruptible())

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_call(self) -> Generator[None, None, None]:
        return (yield from self._interruptible())

    def _interruptible(self) -> Generator[None, None, None]:
        self._in_test = True
        try:
            if self.signal:
                raise Interrupted(self.signal)
            return (yield)
        finally:
            self._in_test = False

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, call: pytest.CallInfo) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        if call.excinfo is not None and call.excinfo.errisinstance(Interrupted):
            signal = str(call.excinfo.value)
            # Not a TestReport field but an attribute of its own (read by interrupted_by), which
            # travels with the report to an xdist controller: setattr, as TestReport declares no
            # such attribute for an assignment to type-check against.
            setattr(report, "interrupted", signal)  # noqa: B010
            report.longrepr = f"interrupted by {signal}"
        return report

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self) -> None:
        """After the fixtures' teardown: end what the stopped tests left running."""
        if self.signal and not self._controller:
            end(children(os.getpid()))


def children(pid: int) -> list[int]:
    """The live processes whose parent is `pid` (from Linux's /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, parent = stat.read_text().rpartition(")")[2].split()[:2]
        except (OSError, ValueError):
            continue  # it ended meanwhile
        if int(parent) == pid and state != "Z":
            found.append(int(stat.parent.name))
    return found


def end(pids: list[int]) -> None:
    """SIGTERM to each of `pids`, this process's children, and SIGKILL to any still running
    `GRACE` seconds later."""
    for pid in pids:
        _send(pid, signal.SIGTERM)
    deadline = time.monotonic() + GRACE
    while pids and time.monotonic() < deadline:
        time.sleep(0.05)
        pids = [pid for pid in pids if not _ended(pid)]
    for pid in pids:
        _send(pid, signal.SIGKILL)
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


def _send(pid: int, number: int) -> None:
    try:
        os.kill(pid, number)
    except ProcessLookupError:
        pass


def _ended(pid: int) -> bool:
    try:
        return os.waitpid(pid, os.WNOHANG)[0] == pid
    except ChildProcessError:
        return True  # reaped elsewhere
