"""The OTA scenarios on a twin whose UART takes a real line's time (RIG_UART_PACING=1), with
esptool at 115200 and at 921600: the time a board's line costs, and esptool's share of it.

    python bench/paced_line.py [-k EXPRESSION] [--all]

Each mode is one pytest run of the same scenarios, one after another (no parallelism):
- 115200: `--ota-baud 115200`, the ROM's rate, what the rig ran at before issue 19 (esptool
  never switched the line);
- 921600: the rig's default (its fallback to 115200 is not needed on the twin).
Both modes write with `--skip-flashed` and check the app slot by MD5: only the line rate
differs. It prints each scenario's verdict and time in both modes, esptool's share (the
scenario's "flash" and "read-back" steps from its scenario.json), the totals and their ratio
(issue 19's goal: 921600 in at most a third of 115200's time), and whether every verdict is the
same. Without --all it runs a fixed subset (SUBSET) and says so; --all runs every scenario
(several minutes at 115200).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from ota_rig.records.run_folder import folder_name

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ROOT / "src" / "ota_rig" / "scenarios"
# An update checked by read-back, a power cut after the write, a refused image (both cores),
# a device already current: 5 scenarios.
SUBSET = ("test_older_device_updates_reboots_and_runs_the_new_version or "
          "test_a_power_cut_right_after_the_image_is_written or test_an_image_changed_after_signing or "
          "test_device_on_the_latest_version_downloads_nothing")
ESPTOOL_STEPS = ("flash", "read-back")
MODES = (115200, 921600)


def run_mode(baud: int, keyword: str | None, out: Path) -> dict[str, tuple[str, float, float]]:
    """Each scenario's (verdict, seconds, esptool seconds) with the line at `baud`."""
    report = out / "report.xml"
    argv = [sys.executable, "-m", "pytest", str(SCENARIOS), "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
            "--ota-board", "virtual", "--ota-baud", str(baud), "--ota-out", str(out), "--junitxml", str(report)]
    if keyword:
        argv += ["-k", keyword]
    subprocess.run(argv, env={**os.environ, "RIG_UART_PACING": "1"}, cwd=ROOT, stdout=subprocess.DEVNULL)
    return read_results(report, out)


def read_results(report: Path, out: Path) -> dict[str, tuple[str, float, float]]:
    import xml.etree.ElementTree as ET

    results = {}
    for case in ET.parse(report).iter("testcase"):
        name = case.get("name", "")
        module = case.get("classname", "").rsplit(".", 1)[-1]
        verdict = "failed" if case.find("failure") is not None or case.find("error") is not None else (
            "skipped" if case.find("skipped") is not None else "passed")
        record = out / folder_name(f"{module}.py::{name}") / "scenario.json"
        timings = json.loads(record.read_text())["timings"] if record.exists() else {}
        esptool = sum(timings.get(step, 0.0) for step in ESPTOOL_STEPS)
        results[f"{module}::{name}"] = (verdict, float(case.get("time", 0.0)), esptool)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-k", dest="keyword", help="pytest -k expression (default: the fixed subset)")
    parser.add_argument("--all", action="store_true", help="every scenario (long at 115200)")
    args = parser.parse_args()
    keyword = None if args.all else args.keyword or SUBSET
    results = {}
    with tempfile.TemporaryDirectory(prefix="rig-paced-") as tmp:
        for baud in MODES:
            results[baud] = run_mode(baud, keyword, Path(tmp) / str(baud))
    slow, fast = (results[baud] for baud in MODES)
    names = sorted(set(slow) | set(fast))
    print(f"{'scenario (twin paced, RIG_UART_PACING=1)':<100} {'115200 s':>9} {'esptool':>8} {'921600 s':>9} "
          f"{'esptool':>8}  verdicts")
    for name in names:
        (v1, t1, e1), (v2, t2, e2) = slow.get(name, ("absent", 0, 0)), fast.get(name, ("absent", 0, 0))
        print(f"{name:<100} {t1:9.1f} {e1:8.1f} {t2:9.1f} {e2:8.1f}  {v1}/{v2}")
    total = {baud: sum(t for _, t, _ in results[baud].values()) for baud in MODES}
    esptool = {baud: sum(e for _, _, e in results[baud].values()) for baud in MODES}
    same = all(slow.get(name, ("",))[0] == fast.get(name, ("",))[0] for name in names)
    scope = "all scenarios" if args.all else f"a fixed subset ({len(names)} scenarios, -k {keyword!r})"
    print(f"\n{scope}, one after another, twin paced:")
    for baud in MODES:
        share = esptool[baud] / total[baud] if total[baud] else 0.0
        print(f"  {baud:>6} baud: {total[baud]:7.1f} s, esptool {esptool[baud]:6.1f} s ({share:.0%})")
    ratio = total[MODES[1]] / total[MODES[0]] if total[MODES[0]] else float("nan")
    print(f"  921600 / 115200 = {ratio:.2f} (goal: at most 0.33); verdicts {'all the same' if same else 'DIFFER'}")
    if not args.all:
        print("  (a subset: the whole set's figures are not measured here; --all measures them)")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
