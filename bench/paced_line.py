"""The OTA scenarios on a twin whose UART takes a real line's time (RIG_UART_PACING=1), with
esptool at 115200 and at 921600: the time a board's line costs, and esptool's share of it.

    python bench/paced_line.py [-k EXPRESSION] [--all] [--before REV]

Each mode is one pytest run of the same scenarios, one after another (no parallelism):
- 115200: `--ota-baud 115200`, the ROM's rate (esptool never switches the line);
- 921600: the rig's default (its fallback to 115200 is not needed on the twin);
- with `--before REV` (e.g. main), first the rig as it is at REV (`git archive`), which is what
  the rig did before issue 19: 115200, every file written, the app slot read back whole, each
  read-back an esptool process of its own. Its scenarios run with that checkout's code.
The two modes of this checkout both write with `--skip-flashed` and check the app slot by MD5:
only the line rate differs. It prints each scenario's verdict and time in each mode, esptool's
share (the scenario's "flash" and "read-back" steps from its scenario.json), the totals and the
ratios to the first mode (issue 19's goal: 921600 in at most a third of the time at 115200
before), and whether every verdict is the same. Without --all it runs a fixed subset (SUBSET)
and says so; --all runs every scenario (several minutes at 115200).
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


def run_mode(baud: int | None, keyword: str | None, out: Path,
             source: Path | None = None) -> dict[str, tuple[str, float, float]]:
    """Each scenario's (verdict, seconds, esptool seconds) with the line at `baud` (None: the
    rig at `source`, a checkout's src folder, which has no --ota-baud)."""
    report = out / "report.xml"
    root = ROOT if source is None else source.parent
    argv = [sys.executable, "-m", "pytest", str(root / "src" / "ota_rig" / "scenarios"), "-q", "-p", "no:cacheprovider",
            "-p", "no:xdist", "-c", str(ROOT / "pytest.ini"), "--rootdir", str(root), "--ota-board", "virtual",
            "--ota-out", str(out), "--junitxml", str(report)]
    if baud is not None:
        argv += ["--ota-baud", str(baud)]
    if keyword:
        argv += ["-k", keyword]
    env = {**os.environ, "RIG_UART_PACING": "1"}
    if source is not None:
        env["PYTHONPATH"] = str(source)
    subprocess.run(argv, env=env, cwd=root, stdout=subprocess.DEVNULL)
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
    parser.add_argument("--before", metavar="REV", help="first the rig as it is at REV (git archive), e.g. main")
    args = parser.parse_args()
    keyword = None if args.all else args.keyword or SUBSET
    results: dict[str, dict[str, tuple[str, float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="rig-paced-") as tmp:
        if args.before:
            old = Path(tmp) / "before"
            old.mkdir()
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.before, "src/ota_rig"],
                                     capture_output=True, check=True).stdout
            subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
            results[f"{args.before} (115200)"] = run_mode(None, keyword, Path(tmp) / "old", old / "src")
        for baud in (115200, 921600):
            results[f"now {baud}"] = run_mode(baud, keyword, Path(tmp) / str(baud))
    modes = list(results)
    names = sorted(set().union(*results.values()))
    print(f"{'scenario (twin paced, RIG_UART_PACING=1): seconds, esptool seconds':<100} "
          + " ".join(f"{mode:>24}" for mode in modes) + "  verdicts")
    for name in names:
        cells = [results[mode].get(name, ("absent", 0.0, 0.0)) for mode in modes]
        print(f"{name:<100} " + " ".join(f"{t:14.1f} {e:9.1f}" for _, t, e in cells)
              + "  " + "/".join(v for v, _, _ in cells))
    total = {mode: sum(t for _, t, _ in results[mode].values()) for mode in modes}
    esptool = {mode: sum(e for _, _, e in results[mode].values()) for mode in modes}
    same = all(len({results[mode].get(name, ("absent",))[0] for mode in modes}) == 1 for name in names)
    scope = "all scenarios" if args.all else f"a fixed subset ({len(names)} scenarios, -k {keyword!r})"
    print(f"\n{scope}, one after another, twin paced:")
    first = modes[0]
    for mode in modes:
        share = esptool[mode] / total[mode] if total[mode] else 0.0
        ratio = total[mode] / total[first] if total[first] else float("nan")
        print(f"  {mode:<16} {total[mode]:7.1f} s, esptool {esptool[mode]:6.1f} s ({share:.0%}); "
              f"{ratio:.2f}x {first}")
    print(f"  (issue 19's goal: now 921600 at most 0.33x the time at 115200 before); verdicts "
          f"{'all the same' if same else 'DIFFER'}")
    if not args.all:
        print("  (a subset: the whole set's figures are not measured here; --all measures them)")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
