"""Where the wall time of the OTA scenarios goes on the twin, run one after another: the rig's own
work (esptool, twin start and stop, the update server, builds, pytest and its fixtures, the
run's records) against the device's (booting, TLS, downloads, the core's timeouts, the test
waiting on them).

    python bench/overhead.py [-k EXPRESSION] [--ota-fresh-twin] [--profile FILE]

It runs `pytest src/ota_rig/scenarios -n 0 --ota-report DIR` in this process and reads each
scenario's own timings (scenario.json `timings`: board start and stop, server, build, flash,
read-back; `seconds`: the scenario from its server's start to its records) and pytest's
setup/call/teardown durations. Per scenario:

    esptool     flash + read-back (esptool runs)
    twin        the twin's start (fixture ota_board), stop (OtaScenario.close) and the new
                process of a power cut
    server      the update server and its listeners, started and stopped
    build       the sketch's virtual builds
    pytest      setup + call + teardown that no scenario timing covers: fixtures, the
                scenario record, pytest's own bookkeeping
    device      the rest of the scenario: the twin's work and the test waiting on it

`rig` is everything but `device`; `rig-esptool` leaves esptool out too. Under the table: the
session's own time (collection, start, the report's writing) and the totals. `--profile FILE`
runs the whole session under cProfile (slower) and prints the rig's functions that took the
most time; FILE keeps the stats for `python -m pstats`. On a shared machine the CPU seconds it
prints last (this process, and the esptool runs and twins it started) are steadier than the
wall times.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import resource
import sys
import tempfile
import time
from pathlib import Path

import pytest

from ota_rig.records.run_folder import folder_name

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ("esptool", "twin", "server", "build", "pytest", "device")


class Clock:
    """A pytest plugin: each test's setup + call + teardown, and how long the session's end
    (the run's records: results.json, junit.xml, report.html) took."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.outcome: dict[str, str] = {}
        self.records = 0.0

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.wall[report.nodeid] = self.wall.get(report.nodeid, 0.0) + report.duration
        if report.when == "call" or not report.passed:
            self.outcome.setdefault(report.nodeid, report.outcome)

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_sessionfinish(self):
        started = time.monotonic()
        try:
            return (yield)
        finally:
            self.records = time.monotonic() - started


def breakdown(wall: float, record: dict) -> dict[str, float]:
    """One scenario's wall time split into COLUMNS, from its scenario.json."""
    timings = record.get("timings", {})
    esptool = timings.get("flash", 0.0) + timings.get("read-back", 0.0)
    inside = record.get("seconds", 0.0)  # from the scenario's start (after the twin's) to its record
    covered = esptool + sum(timings.get(kind, 0.0) for kind in ("board stop", "power cut", "server", "build"))
    return {
        "esptool": esptool,
        "twin": timings.get("board", 0.0) + timings.get("board stop", 0.0) + timings.get("power cut", 0.0),
        "server": timings.get("server", 0.0),
        "build": timings.get("build", 0.0),
        "pytest": max(0.0, wall - inside - timings.get("board", 0.0)),
        "device": max(0.0, inside - covered),
    }


def cpu_seconds() -> tuple[float, float]:
    """CPU time (user + system) of this process and of its children that have ended: on a
    shared machine a steadier measure than wall time."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-k", dest="keyword")
    parser.add_argument("--ota-fresh-twin", action="store_true", help="a twin process per scenario (the old way)")
    parser.add_argument("--profile", type=Path, metavar="FILE", help="run under cProfile; keep the stats in FILE")
    args = parser.parse_args()
    clock = Clock()
    with tempfile.TemporaryDirectory(prefix="rig-overhead-") as out:
        # -p no:labgrid as `rig run` passes it: labgrid's own plugin, where installed, takes a
        # second to import and is not the rig's
        pytest_args = [str(ROOT / "src" / "ota_rig" / "scenarios"), "-q", "-p", "no:cacheprovider", "-p", "no:labgrid",
                       "-n", "0", "--ota-out", f"{out}/scenarios", "--ota-report", f"{out}/run"]
        pytest_args += ["-k", args.keyword] if args.keyword else []
        pytest_args += ["--ota-fresh-twin"] if args.ota_fresh_twin else []
        profiler = cProfile.Profile() if args.profile else None
        cpu_before = cpu_seconds()
        started = time.monotonic()
        if profiler:
            profiler.enable()
        code = pytest.main(pytest_args, plugins=[clock])
        if profiler:
            profiler.disable()
        session = time.monotonic() - started
        cpu = [after - before for after, before in zip(cpu_seconds(), cpu_before, strict=True)]
        rows = {}
        for nodeid, wall in clock.wall.items():
            record = Path(out, "scenarios", folder_name(nodeid), "scenario.json")
            rows[nodeid] = (wall, breakdown(wall, json.loads(record.read_text()) if record.exists() else {}))

    width = max((len(nodeid.split("::", 1)[1]) for nodeid in rows), default=10)
    head = (f"{'scenario':<{width}} {'wall':>6} " + " ".join(f"{c:>7}" for c in COLUMNS)
            + f" {'rig':>6} {'rig-esptool':>11}")
    print("\n" + head + "\n" + "-" * len(head))
    totals = dict.fromkeys(COLUMNS, 0.0)
    for nodeid, (wall, parts) in rows.items():
        rig = wall - parts["device"]
        print(f"{nodeid.split('::', 1)[1]:<{width}} {wall:6.2f} " + " ".join(f"{parts[c]:7.2f}" for c in COLUMNS)
              + f" {rig:6.2f} {rig - parts['esptool']:11.2f}  [{clock.outcome.get(nodeid)}]")
        for column in COLUMNS:
            totals[column] += parts[column]
    count = len(rows) or 1
    wall_total = sum(wall for wall, _ in rows.values())
    rig_total = wall_total - totals["device"]
    print("-" * len(head))
    print(f"{'all ' + str(len(rows)) + ' scenarios':<{width}} {wall_total:6.1f} "
          + " ".join(f"{totals[c]:7.1f}" for c in COLUMNS) + f" {rig_total:6.1f} {rig_total - totals['esptool']:11.1f}")
    print(f"{'a scenario, on average':<{width}} {wall_total / count:6.2f} "
          + " ".join(f"{totals[c] / count:7.2f}" for c in COLUMNS)
          + f" {rig_total / count:6.2f} {(rig_total - totals['esptool']) / count:11.2f}")
    outside = session - wall_total - clock.records
    print(f"\nsession {session:.1f} s: scenarios {wall_total:.1f} s, the run's records {clock.records:.2f} s, "
          f"pytest's start and collection {outside:.1f} s")
    print(f"the rig's own overhead: {rig_total / count:.2f} s a scenario, "
          f"{(rig_total - totals['esptool']) / count:.2f} s without esptool "
          f"({100 * rig_total / max(wall_total, 1e-9):.0f} % of the scenarios' wall time)")
    print(f"CPU: {cpu[0]:.1f} s in this process (pytest, the rig, the server), {cpu[1]:.1f} s in the processes "
          f"it started and ended (esptool runs, twins): {(cpu[0] + cpu[1]) / count:.2f} s a scenario")
    if profiler and args.profile:
        profiler.dump_stats(args.profile)
        stats = pstats.Stats(str(args.profile))
        stats.sort_stats("tottime").print_stats(r"ota_rig|subprocess|_pytest|ssl|select", 25)
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
