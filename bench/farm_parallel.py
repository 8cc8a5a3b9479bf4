"""The parallel speed-up on a labgrid farm: the same scenarios on 1, 2 and 4 boards at once.

    python bench/farm_parallel.py [--workers 1,2,4] [--rounds 1] [-k "test_update or test_trust"]
                                  [--profile arduino-esp32-2.0]

Starts the farm tests/farm/lab.py starts for tests/farm (a real labgrid-coordinator and
labgrid-exporter on loopback) with max(--workers) twins over RFC2217 (VirtualBoard, DTR/RTS reset
as behind esptool's esp_rfc2217_server), one place each, all tagged board=esp32, bench=parallel.
Each configuration runs the rig once a round as a CI job would:

    pytest src/ota_rig/scenarios -k K --ota-profile P --ota-board labgrid:board=esp32,bench=parallel -n N

(the fake arduino-cli of tests/fakes, its own --ota-out and --ota-report), so N xdist workers
acquire N free places by their tags, a board each. Wall-clock is the whole pytest process, from
its start to its exit (collection, acquiring and releasing places included). The configurations
take turns in a rotated order each round; a configuration's figure is the median of its rounds,
its speed-up the -n 1 median over its own. A run in which not every selected scenario passed is
reported as such (its time still counts).

The figures are this machine's: twins, the update server and the esptool processes share its
cores with the rig, so with fewer cores than workers the speed-up flattens out long before a
farm of real boards would (each real board does its own work).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ota_rig.bench.board import VirtualBoard  # noqa: E402
from tests.farm.lab import MISSING, farm  # noqa: E402

TAGS = ("board=esp32", "bench=parallel")
FAKE_CLI = ROOT / "tests" / "fakes" / "arduino-cli"


def run_rig(address: str, folder: Path, workers: int, select: str, profile: str) -> tuple[float, int, int]:
    """One rig run on `workers` places: wall-clock seconds, scenarios passed, scenarios run."""
    argv = [sys.executable, "-m", "pytest", "src/ota_rig/scenarios", "-k", select, "--ota-profile", profile,
            "--ota-board", "labgrid:" + ",".join(TAGS), "-n", str(workers), "--ota-arduino-cli", str(FAKE_CLI),
            "--ota-host", "127.0.0.1", "--ota-out", str(folder / "out"), "--ota-report", str(folder / "report"),
            "--timeout", "900", "-p", "no:cacheprovider", "-q"]
    env = {**os.environ, "OTA_WIFI_SSID": "bench-ap", "OTA_WIFI_PASSWORD": "bench-password",
           "OTA_RIG_LOCK_DIR": str(folder / "locks"), "LG_COORDINATOR": address, "LG_USERNAME": "farm-parallel"}
    started = time.monotonic()
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    seconds = time.monotonic() - started
    (folder / "pytest.out").write_text(done.stdout + done.stderr)
    try:
        ran = json.loads((folder / "report" / "results.json").read_text())["scenarios"]
    except (OSError, ValueError, KeyError):
        ran = []
    passed = sum(scenario["verdict"] == "passed" for scenario in ran)
    if done.returncode or not ran:
        print(f"  -n {workers}: pytest exited {done.returncode}, see {folder / 'pytest.out'}", flush=True)
    return seconds, passed, len(ran)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="1,2,4", help="comma-separated -n values (default 1,2,4)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("-k", dest="select", default="test_update or test_trust")
    parser.add_argument("--profile", default="arduino-esp32-2.0")
    args = parser.parse_args()
    if MISSING:
        sys.exit(MISSING)
    counts = [int(n) for n in args.workers.split(",")]
    times: dict[int, list[float]] = {n: [] for n in counts}
    results: dict[int, list[str]] = {n: [] for n in counts}
    with tempfile.TemporaryDirectory(prefix="farm-parallel-") as tmp:
        folder = Path(tmp)
        twins = [VirtualBoard(folder / f"esp-{i}", transport="rfc2217", mac=f"24:6f:28:aa:1f:{i:02x}")
                 for i in range(max(counts))]
        try:
            with farm(folder, {f"esp-{i}": twin.port for i, twin in enumerate(twins)}, tags=TAGS) as lab:
                print(f"{len(twins)} twins as labgrid places on {lab.address}, {os.cpu_count()} cores; "
                      f"-k {args.select!r} --ota-profile {args.profile}", flush=True)
                for round_ in range(args.rounds):
                    order = counts[round_ % len(counts):] + counts[:round_ % len(counts)]
                    for n in order:
                        run = folder / f"round{round_}-n{n}"
                        run.mkdir()
                        seconds, passed, ran = run_rig(lab.address, run, n, args.select, args.profile)
                        times[n].append(seconds)
                        results[n].append(f"{passed}/{ran}")
                        print(f"  round {round_ + 1}, -n {n}: {seconds:.1f} s, {passed} of {ran} passed", flush=True)
                    held = {name: who for name, who in lab.held().items() if who}
                    if held:
                        print(f"  places still held after the round: {held}", flush=True)
        finally:
            for twin in twins:
                twin.close()
    base = statistics.median(times[counts[0]])
    print()
    print(f"| boards (-n) | wall-clock, median of {args.rounds} (s) | rounds (s) | speed-up | passed |")
    print("|---|---|---|---|---|")
    for n in counts:
        median = statistics.median(times[n])
        rounds = ", ".join(f"{t:.1f}" for t in times[n])
        print(f"| {n} | {median:.1f} | {rounds} | {base / median:.2f}x | {', '.join(results[n])} |")


if __name__ == "__main__":
    main()
