"""The rig's main job on the virtual ESP32: the OTA scenarios of tests/ota, each printed with
the transitions its device went through and where its logs are.

    python -m rig.demo [--out DIR] [-k EXPRESSION]

Each scenario gets a fresh virtual ESP32, real certificates, a real HTTPS server and the real
esptool; the transitions shown are read back from the scenario's serial.log afterwards.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pytest

from . import protocol
from .plugin import folder_name

SCENARIOS = Path(__file__).resolve().parents[1] / "tests" / "ota"

# How each kind of line reads in a transition list.
LABELS = {
    "firmware_version": "Firmware version {version}",
    "update_ok": "HTTP_UPDATE_OK",
    "no_updates": "HTTP_UPDATE_NO_UPDATES",
    "update_failed": "HTTP_UPDATE_FAILD ({code})",
    "tls_error": "TLS error {code}",
    "reset": "reset {reason}",
    "cert_expired": "certificate expired",
    "cert_not_yet_valid": "certificate not yet valid",
    "date_check_off": "date check off",
}


def transitions(serial_log: Path) -> list[str]:
    """The device's transitions, in order, as its UART showed them."""
    if not serial_log.exists():
        return []
    steps = []
    for text in serial_log.read_text(errors="replace").splitlines():
        found = protocol.classify(text)
        if found and found[0].name in LABELS:
            steps.append(LABELS[found[0].name].format(**found[1]))
    return steps


class ScenarioPrinter:
    """A pytest plugin that prints one block per scenario instead of pytest's own output."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.verdicts: dict[str, str] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call" or (report.when == "setup" and not report.passed):
            verdict = "PASS" if report.passed else "SKIP" if report.skipped else "FAIL"
            self.verdicts[report.nodeid] = verdict
            name = report.nodeid.split("::", 1)[1]
            folder = self.out / folder_name(report.nodeid)
            print(f"{verdict}  {name}  ({report.duration:.1f} s)")
            print(f"      {' → '.join(transitions(folder / 'serial.log')) or 'no serial output'}")
            if not report.passed and report.longrepr:
                print(f"      why: {str(report.longrepr).strip().splitlines()[-1]}")
            print(f"      logs: {folder}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rig.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("out/demo"), help="folder for every log (default out/demo)")
    parser.add_argument("-k", dest="keyword", help="only the scenarios matching this pytest expression")
    args = parser.parse_args(argv)
    out: Path = args.out.resolve()
    printer = ScenarioPrinter(out)
    pytest_args = [str(SCENARIOS), "-o", "addopts=", "-p", "no:terminal", "-p", "no:cacheprovider", "--ota-out", str(out)]
    if args.keyword:
        pytest_args += ["-k", args.keyword]
    print(f"OTA scenarios on the virtual ESP32 ({SCENARIOS.relative_to(Path.cwd()) if SCENARIOS.is_relative_to(Path.cwd()) else SCENARIOS})")
    started = time.monotonic()
    code = pytest.main(pytest_args, plugins=[printer])
    failed = sum(verdict == "FAIL" for verdict in printer.verdicts.values())
    print(f"{len(printer.verdicts) - failed} of {len(printer.verdicts)} scenarios passed in {time.monotonic() - started:.1f} s")
    print(f"logs: {out} (one folder per scenario: serial.log, server.jsonl, esptool.log, board/twin.log)")
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
