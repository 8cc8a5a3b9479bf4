"""Waiting for places and giving them back, against the real coordinator and exporter of
conftest.py: `--ota-board-wait SECONDS` (the run queues for places another holder has, through a
labgrid reservation), and docs/hardware.md's CI step that releases the places of a SIGKILLed run.
Each test reads the coordinator's own view (`labgrid-client reservations` and its place list)
besides the run's exit code and records."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.farm.lab import BIN, MISSING, Farm
from tests.farm.test_farm import FAKE_CLI, NOBODY, ROOT, USER, rig_argv, rig_env

if MISSING:
    pytest.skip(MISSING, allow_module_level=True)

pytestmark = [pytest.mark.virtual, pytest.mark.slow]

ON_A_PLACE = "def test_on_a_place(ota_real_board):\n    assert ota_real_board.place in ('esp-a', 'esp-b')\n"


def reservations(farm: Farm) -> str:
    """`labgrid-client reservations`: the coordinator's reservations, as labgrid prints them."""
    return farm.client("reservations").stdout


def wait_for_reservation(farm: Farm, process: subprocess.Popen) -> str:
    """The coordinator's reservations once the run's is there, waiting (the run is queueing)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        listed = reservations(farm)
        if f"/{USER}" in listed and "state: waiting" in listed:
            return listed
        time.sleep(0.2)
    out = process.communicate(timeout=60)[0] if process.poll() is not None else ""
    raise AssertionError(f"the run made no waiting reservation: {reservations(farm)!r} {out}")


@pytest.mark.timeout(600)
def test_rig_run_waits_for_a_place_until_its_holder_releases_it(farm: Farm, tmp_path: Path) -> None:
    """alice holds esp-b; `rig run --ota-board-wait` reserves it, waits while the coordinator
    shows the reservation waiting, gets the place when alice releases it, and passes; afterwards
    no place is held and no reservation is left."""
    farm.client("-p", "esp-b", "acquire", user="alice")
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "ota_rig.cli", "run", "--ota-board", "labgrid:esp-b", "--ota-board-wait", "300",
             "-k", "test_device_on_the_latest_version", "--ota-profile", "arduino-esp32-2.0",
             "--out", str(tmp_path / "runs"), "--ota-arduino-cli", str(FAKE_CLI), "--ota-host", "127.0.0.1"],
            cwd=ROOT, env=rig_env(farm, tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        waiting = wait_for_reservation(farm, process)
        assert "filters:\n    main: name=esp-b" in waiting, waiting
        assert farm.held()["esp-b"].endswith("/alice")  # the run has not taken it
    finally:
        farm.client("-p", "esp-b", "release", user="alice")
    out = process.communicate(timeout=540)[0]
    assert process.returncode == 0 and "1 of 1 scenarios passed" in out, out
    run = tmp_path / "runs" / "latest"
    held = json.loads((run / "labgrid-places.json").read_text())
    assert held["places"] == ["esp-b"] and held["holder"].endswith("/" + USER)
    [scenario] = json.loads((run / "results.json").read_text())["scenarios"]
    assert scenario["verdict"] == "passed" and scenario["board"]["place"] == "esp-b"
    assert farm.held() == NOBODY
    assert reservations(farm) == ""


@pytest.mark.timeout(300)
def test_a_bounded_wait_ends_with_the_holder_named_and_nothing_held_or_reserved(farm: Farm, tmp_path: Path) -> None:
    """alice never releases esp-b: the wait ends after --ota-board-wait seconds with one sentence
    naming her; esp-a, allocated to the run meanwhile, is neither held nor reserved after."""
    (tmp_path / "test_it.py").write_text(ON_A_PLACE)
    farm.client("-p", "esp-b", "acquire", user="alice")
    try:
        alice = farm.held()["esp-b"]
        done = subprocess.run(rig_argv(tmp_path, "labgrid:esp-a,esp-b", str(tmp_path / "test_it.py"), "--rootdir",
                                       str(tmp_path), "-n", "2", "--ota-board-wait", "3"),
                              cwd=ROOT, env=rig_env(farm, tmp_path), capture_output=True, text=True, timeout=240)
        assert done.returncode == 4, done.stdout + done.stderr
        assert (f"waited 3 s for esp-a, esp-b on {farm.address} and got 1 of 2: esp-b is held by {alice}; "
                "wait longer (--ota-board-wait), or choose other places") in done.stderr, done.stderr
        assert farm.held() == {"esp-a": None, "esp-b": alice}
        assert reservations(farm) == ""
        assert not (tmp_path / "report" / "labgrid-places.json").exists()
    finally:
        farm.client("-p", "esp-b", "release", user="alice")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_ends_the_wait_and_cancels_the_reservation(farm: Farm, tmp_path: Path, stop: signal.Signals) -> None:
    (tmp_path / "test_it.py").write_text(ON_A_PLACE)
    farm.client("-p", "esp-a", "acquire", user="alice")
    try:
        process = subprocess.Popen(
            rig_argv(tmp_path, "labgrid:board=esp32,lab=ci", str(tmp_path / "test_it.py"), "--rootdir", str(tmp_path),
                     "-n", "2", "--ota-board-wait", "300"),
            cwd=ROOT, env=rig_env(farm, tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        waiting = wait_for_reservation(farm, process)
        filters = [line.split("main: ")[1] for line in waiting.splitlines() if line.strip().startswith("main: ")
                   and "=" in line]  # labgrid prints a filter's tags in no fixed order
        assert sorted(sorted(tags.split()) for tags in filters) == [["board=esp32", "lab=ci"]] * 2, waiting
        process.send_signal(stop)
        out = process.communicate(timeout=60)[0]
        assert process.returncode == 2, out  # pytest's "interrupted"
        assert (f"{stop.name} stopped the wait for the labgrid places (places tagged board=esp32, lab=ci) on "
                f"{farm.address}; nothing is held or reserved") in out, out
        assert reservations(farm) == ""
        assert farm.held()["esp-b"] is None and farm.held()["esp-a"].endswith("/alice")
    finally:
        farm.client("-p", "esp-a", "release", user="alice")


def documented_release_step() -> str:
    """The shell script of docs/hardware.md's CI step "Release the labgrid places", as printed."""
    text = (ROOT / "docs" / "hardware.md").read_text()
    step = text[text.index("- name: Release the labgrid places"):]
    script = step[step.index("run: |\n") + len("run: |\n"):step.index("```")]
    return textwrap.dedent(script)


HOLDING = ("import time\n\ndef test_holds(ota_real_board):\n"
           "    open({flag!r}, 'w').close()\n    time.sleep(300)\n")


@pytest.mark.timeout(300)
def test_the_documented_ci_step_releases_the_places_of_a_sigkilled_session(farm: Farm, tmp_path: Path) -> None:
    """SIGKILL leaves the place held (no cleanup runs); the CI step of docs/hardware.md, run as
    written from the job's folder, reads labgrid-places.json and the coordinator frees it."""
    flag = tmp_path / "holding"
    (tmp_path / "test_it.py").write_text(HOLDING.format(flag=str(flag)))
    argv = rig_argv(tmp_path, "labgrid:esp-a", str(tmp_path / "test_it.py"), "--rootdir", str(tmp_path))
    argv[argv.index("--ota-report") + 1] = str(tmp_path / "out" / "hardware")  # where the step looks
    process = subprocess.Popen(argv, cwd=ROOT, env=rig_env(farm, tmp_path), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while not flag.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.1)
    assert flag.exists(), process.communicate()[0]
    process.kill()
    process.communicate(timeout=30)
    holder = farm.held()["esp-a"]
    assert holder is not None and holder.endswith("/" + USER)  # a SIGKILL releases nothing
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}  # labgrid-client, as in the job
    env.pop("LG_COORDINATOR", None)  # the step takes it from labgrid-places.json
    for _ in range(2):  # again on a place no longer held: harmless (`|| true`)
        step = subprocess.run(["bash", "-euo", "pipefail", "-c", documented_release_step()], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
        assert step.returncode == 0, step.stdout + step.stderr
        assert farm.held() == NOBODY


@pytest.mark.timeout(300)
def test_rig_run_stopped_while_it_waits_keeps_no_run_folder(farm: Farm, tmp_path: Path) -> None:
    farm.client("-p", "esp-a", "acquire", user="alice")
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "ota_rig.cli", "run", "--ota-board", "labgrid:esp-a", "--ota-board-wait", "300",
             "--out", str(tmp_path / "runs"), "--ota-arduino-cli", str(FAKE_CLI), "--ota-host", "127.0.0.1"],
            cwd=ROOT, env=rig_env(farm, tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wait_for_reservation(farm, process)
        process.send_signal(signal.SIGTERM)
        out = process.communicate(timeout=60)[0]
        assert process.returncode == 130, out
        assert f"SIGTERM stopped the wait for the labgrid places (esp-a) on {farm.address}" in out, out
        assert list((tmp_path / "runs").iterdir()) == []  # no run happened, no records folder
        assert reservations(farm) == ""
        assert farm.held()["esp-a"].endswith("/alice")
    finally:
        farm.client("-p", "esp-a", "release", user="alice")
