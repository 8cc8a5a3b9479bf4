"""Every option of every `rig` command, given a value it cannot take: one sentence that names the
option or the file and says what to pass, exit status 2, no traceback, and no run folder left."""

from __future__ import annotations

import copy
import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ota_rig.cli import main
from ota_rig.records.results import run_record

ROOT = Path(__file__).resolve().parents[2]
FAKE_CLI = str(ROOT / "tests" / "fakes" / "arduino-cli")
REAL = ["--ota-board", "/dev/null", "--ota-arduino-cli", FAKE_CLI]  # a path that exists stands in for a port
WIFI = ["--ota-wifi-ssid", "bench-ap", "--ota-wifi-password", "secret"]
RESULTS = "{tmp}/good.json"

# (arguments, a part of the one sentence); {tmp} is the folder the command runs in, which holds
# `a-file` (a file), good.json (the records of an empty run) and bad-<field>.json (below).
REFUSALS = [
    (["run", "-k", "and or"], "Wrong expression passed to '-k': and or: at column 1"),
    (
        ["run", "-k", "no_such_scenario"],
        "no scenario matches -k 'no_such_scenario'; see the names in docs/scenarios.md",
    ),
    (["run", "--ota-profile", "nonsense"], "argument --ota-profile/--profile: invalid choice: 'nonsense'"),
    (["run", "--ota-board", "/dev/does-not-exist"], "--ota-board /dev/does-not-exist: no such port; plug the board in"),
    (["run", "--ota-board", "mac:zz"], "--ota-board mac:zz: 'zz' is not a MAC"),
    (["run", "--ota-board", "rfc2217://localhost"], "--ota-board rfc2217://localhost is not rfc2217://<host>:<port>"),
    (["run", "--ota-board", "/dev/null", "--jobs", "2"], "a real board runs one scenario at a time; drop --jobs"),
    (["run", "--ota-board", "/dev/null,/dev/zero", "--jobs", "3"],
     "--jobs 3 needs 3 boards and --ota-board names 2; name more boards, or lower --jobs"),
    (["run", "--ota-board", "/dev/null,/dev/zero", "--jobs", "1"],
     "--jobs 1 tests on 1 of the 2 boards --ota-board names; drop --jobs (one worker a board), or name 1 board"),
    (["run", "--ota-board-wait", "soon"], "argument --ota-board-wait: 'soon' is not a number of seconds"),
    (["run", "--ota-board", "labgrid:esp-a,board=esp32"],
     "--ota-board labgrid:esp-a,board=esp32 mixes place names and tags"),
    (["run", "--jobs", "0"], "argument --jobs/-j: '0' is not a count; pass 1 or more"),
    (["run", "--jobs", "four"], "argument --jobs/-j: 'four' is not a count"),
    (["run", "--out", "{tmp}/a-file"], "argument --out: {tmp}/a-file is a file; pass a folder"),
    (["run", "--compare-to", "{tmp}/nowhere"], "{tmp}/nowhere: no such file; pass a results.json"),
    (["run", "--compare-to", "{tmp}/bad-verdict.json"], 'scenarios[0].verdict is "great", not one of'),
    (["run", "--ota-scan-ports", "/dev/ttyUSB*"], "--ota-scan-ports narrows the search for --ota-board mac:<MAC>"),
    (["run", "--ota-builder", "gcc"], "argument --ota-builder: invalid choice: 'gcc'"),
    (
        ["run", *REAL[:2], "--ota-arduino-cli", "/nonexistent/arduino-cli"],
        "arduino-cli not found ('/nonexistent/arduino-cli'",
    ),
    (
        ["run", *REAL, "--ota-fqbn", "esp32:esp32", *WIFI],
        "FQBN 'esp32:esp32' is not vendor:arch:board[:menu=option,...]",
    ),
    (
        ["run", "--ota-builder", "arduino-cli", "--ota-arduino-cli", FAKE_CLI, "--ota-arduino-cli-warnings", "Wall"],
        "'Wall' is not an arduino-cli warning level: use none, default, more or all",
    ),
    (
        ["run", "--ota-host", "192.168.4.2"],
        "the virtual board reaches the server on its loopback: --ota-host is for real boards",
    ),
    (["run", *REAL, *WIFI, "--ota-board-network", "wlan0"], "'wlan0' is neither an IP address nor a network"),
    (["run", "--ota-hostname", "ota server"], "argument --ota-hostname: 'ota server' is not a DNS name"),
    (["run", "--ota-baud", "0"], "argument --ota-baud: '0' is not a baud rate: pass a number such as 921600"),
    (["run", *REAL], "a real board needs Wi-Fi: set OTA_WIFI_SSID and OTA_WIFI_PASSWORD (or pass --ota-wifi-ssid"),
    (["run", *REAL, "--ota-wifi-ssid", "bench-ap"], "a real board needs Wi-Fi"),
    (
        ["run", "--", "--no-such-pytest-option"],
        "pytest: unrecognized arguments: --no-such-pytest-option; see `pytest --help`",
    ),
    (["serve", "--folder", "{tmp}/a-file"], "argument --folder: {tmp}/a-file is a file"),
    (["serve", "--host", "999.1.1.1", "--port", "0"], "999.1.1.1 is not an address of this machine; pass --host"),
    (["serve", "--port", "70000"], "port 70000 is not a TCP port; pass --port 0..65535"),
    (["serve", "--port", "https"], "argument --port: invalid int value: 'https'"),
    (["serve", "--hostname", "ota_server"], "argument --hostname: 'ota_server' is not a DNS name"),
    (["serve", "--firmware", "{tmp}/a-file", "--firmware-version", "1"], "a-file is not an ESP32 app image"),
    (["serve", "--firmware-version", "1"], "--firmware-version names the version of --firmware; pass --firmware"),
    (["serve", "--signing-key", "{tmp}/a-file"], "argument --signing-key: {tmp}/a-file is a file"),
    (["sign", "{tmp}/nowhere.bin", "--version", "1"], "{tmp}/nowhere.bin: no such file; pass the app image"),
    (["sign", "{tmp}/a-file"], "the following arguments are required: --version"),
    (["sign", "{tmp}/a-file", "--version", "1", "--key", "{tmp}/a-file"], "argument --key: {tmp}/a-file is a file"),
    (
        ["sign", "{tmp}/a-file", "--version", "1", "--out", "{tmp}/nowhere/app.bin"],
        "argument --out: {tmp}/nowhere is no folder",
    ),
    (["certs", "--out", "{tmp}/a-file"], "argument --out: {tmp}/a-file is a file"),
    (["certs", "--hostname", ""], "argument --hostname: '' is not a DNS name"),
    (["certs", "--ip", "192.168.1.256"], "'192.168.1.256' is not an IP address; pass --ip"),
    (["virtual", "--flash", "{tmp}/flash.bin", "--rfc2217", "70000"], "argument --rfc2217: 70000 is not a TCP port"),
    (
        ["virtual", "--flash", "{tmp}/flash.bin", "--pty", "{tmp}/tty", "--mac", "24:6f"],
        "is not six colon-separated hex bytes",
    ),
    (["virtual", "--pty", "{tmp}/tty"], "the following arguments are required: --flash"),
    (["report", "{tmp}/nowhere"], "{tmp}/nowhere: no such file; pass a results.json or the run folder holding one"),
    (["report", "{tmp}/a-file"], "is not JSON"),
    (["report", RESULTS, "--out", "{tmp}/a-file"], "argument --out: {tmp}/a-file is a file"),
    (
        ["compare", RESULTS, "{tmp}/bad-summary.json"],
        "bad-summary.json is not a results.json a run wrote: summary is missing",
    ),
    (["compare", "{tmp}/bad-started.json", RESULTS], 'run.started is "yesterday", not an ISO 8601 time'),
    (["compare", RESULTS, "{tmp}/bad-total.json"], "scenarios[0].durations.total is a string, not a number or null"),
    (["compare", RESULTS, "{tmp}/bad-download.json"], "scenarios[0].durations.download.bytes is missing"),
    (["compare", RESULTS, RESULTS, "--threshold", "nan"], "threshold nan is not a factor of 1 or more"),
    (["compare", RESULTS, RESULTS, "--threshold", "twice"], "argument --threshold: invalid float value: 'twice'"),
    (["compare", RESULTS, RESULTS, "--min-seconds", "-1"], "min_seconds -1 is not a number of seconds; pass 0 or more"),
    (
        ["compare", RESULTS, RESULTS, "--markdown", "{tmp}/nowhere/c.md"],
        "argument --markdown: {tmp}/nowhere is no folder",
    ),
]


def records(folder: Path) -> None:
    """good.json, the records of a run of one test, and bad-<what>.json, each wrong in one field."""
    test = {
        "id": "src/ota_rig/scenarios/test_update.py::test_x",
        "name": "test_x",
        "verdict": "passed",
        "durations": {"total": 1.0, "download": {"bytes": 1, "seconds": 1.0, "bytes_per_second": 1}},
    }
    good = run_record([test], datetime.datetime.now(datetime.timezone.utc), "virtual", {})
    (folder / "good.json").write_text(json.dumps(good))
    changes = {
        "verdict": lambda r: r["scenarios"][0].update(verdict="great"),
        "summary": lambda r: r.pop("summary"),
        "started": lambda r: r["run"].update(started="yesterday"),
        "total": lambda r: r["scenarios"][0]["durations"].update(total="1 s"),
        "download": lambda r: r["scenarios"][0]["durations"]["download"].pop("bytes"),
    }
    for what, change in changes.items():
        bad = copy.deepcopy(good)
        change(bad)
        (folder / f"bad-{what}.json").write_text(json.dumps(bad))


@pytest.mark.parametrize(
    "args, sentence", REFUSALS, ids=[" ".join(args).replace(FAKE_CLI, "FAKE") for args, _ in REFUSALS]
)
def test_a_value_an_option_cannot_take_is_refused_in_one_sentence(tmp_path: Path, capsys, args, sentence) -> None:
    (tmp_path / "a-file").write_text("not what the option wants\n")
    records(tmp_path)
    argv = [arg.format(tmp=tmp_path) for arg in args]
    if args[0] == "run":  # a real `rig run`, in a process of its own (it runs pytest)
        env = {name: value for name, value in os.environ.items() if not name.startswith("OTA_")}
        done = subprocess.run(
            [sys.executable, "-m", "ota_rig.cli", *argv],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        status, out, err = done.returncode, done.stdout, done.stderr
    else:
        try:
            status = main(argv)
        except SystemExit as exit:  # argparse's refusal
            status = exit.code
        out, err = capsys.readouterr()
    assert status == 2, out + err
    assert sentence.format(tmp=tmp_path) in err, err
    assert "Traceback" not in err and "unexpected" not in err and "INTERNALERROR" not in out + err
    if args[0] != "virtual":  # the twin's own parser adds its usage (tests/virtual/test_faults.py)
        assert len(err.splitlines()) == 1 and err.startswith("rig: "), err
    runs = tmp_path / "out" / "runs"
    assert not runs.exists() or not any(runs.iterdir()), "a refused run left its folder"
