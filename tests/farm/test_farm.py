"""`--ota-board labgrid:...` against a real labgrid coordinator and exporter (conftest.py): each test
checks the coordinator's own place list (through labgrid's API), the run's records and exit codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ota_rig.bench.board import SerialBoard, VirtualBoard
from tests.farm.lab import MISSING, SER2NET, Farm, ser2net
from tests.farm.lab import farm as start_farm
from tests.servers import free_port

if MISSING:
    pytest.skip(MISSING, allow_module_level=True)

pytestmark = [pytest.mark.virtual, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
FAKE_CLI = ROOT / "tests" / "fakes" / "arduino-cli"
USER = "ci-job-17"
NOBODY = {"esp-a": None, "esp-b": None}


def rig_argv(tmp_path: Path, board: str, *selection: str) -> list[str]:
    return [sys.executable, "-m", "pytest", *selection, "--ota-board", board, "--ota-arduino-cli", str(FAKE_CLI),
            "--ota-host", "127.0.0.1", "--ota-out", str(tmp_path / "out"), "--ota-report", str(tmp_path / "report"),
            "--timeout", "600", "-p", "no:cacheprovider", "-q", "-rA"]


def rig_env(farm: Farm, tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "OTA_WIFI_SSID": "bench-ap", "OTA_WIFI_PASSWORD": "bench-password",
            "OTA_RIG_LOCK_DIR": str(tmp_path / "locks"), "LG_COORDINATOR": farm.address, "LG_USERNAME": USER}


def run_rig(farm: Farm, tmp_path: Path, board: str, *selection: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(rig_argv(tmp_path, board, *selection), cwd=ROOT, env=rig_env(farm, tmp_path),
                          capture_output=True, text=True, timeout=900)


def collected(*selection: str) -> int:
    """How many scenarios pytest collects for `selection` (no board needed to collect)."""
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:labgrid", *selection],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    return sum(1 for line in done.stdout.splitlines() if "::" in line)


def scenarios(tmp_path: Path) -> list[dict]:
    return json.loads((tmp_path / "report" / "results.json").read_text())["scenarios"]


@pytest.mark.timeout(600)
def test_a_scenario_runs_on_an_acquired_place_which_is_released_after(farm: Farm, tmp_path: Path) -> None:
    started = time.monotonic()
    done = run_rig(farm, tmp_path, "labgrid:esp-a", "src/ota_rig/scenarios", "tests/hardware",
                   "-k", "test_device_on_the_latest_version or test_bench", "--ota-profile", "arduino-esp32-2.0")
    print(f"1 place, 1 scenario and the bench checks: {time.monotonic() - started:.1f} s")
    assert done.returncode == 0, done.stdout + done.stderr
    # the bench checks (tests/hardware) run on a place, as on any real board: none is skipped
    summary = [line for line in done.stdout.splitlines() if line.startswith(("PASSED", "SKIPPED", "FAILED", "ERROR"))]
    bench_checks = [line for line in summary if "tests/hardware/test_bench.py::" in line]
    assert len(bench_checks) == 2 and all(line.startswith("PASSED") for line in bench_checks), done.stdout
    [scenario] = [s for s in scenarios(tmp_path) if "test_device_on_the_latest_version" in s["name"]]
    assert scenario["verdict"] == "passed"
    assert scenario["board"]["place"] == "esp-a" and scenario["board"]["port"] == farm.twins["esp-a"].port
    held = json.loads((tmp_path / "report" / "labgrid-places.json").read_text())
    assert held["coordinator"] == farm.address and held["places"] == ["esp-a"] and held["holder"].endswith("/" + USER)
    assert held["ports"] == [farm.twins["esp-a"].port]
    assert farm.held() == NOBODY


@pytest.mark.timeout(900)
def test_two_places_by_tags_give_two_xdist_workers_a_board_each(farm: Farm, tmp_path: Path) -> None:
    started = time.monotonic()
    done = run_rig(farm, tmp_path, "labgrid:board=esp32,lab=ci", "src/ota_rig/scenarios/test_update.py", "-n", "2",
                   "--ota-profile", "arduino-esp32-2.0")
    print(f"2 places, -n 2: {time.monotonic() - started:.1f} s")
    assert done.returncode == 0, done.stdout + done.stderr
    ran = scenarios(tmp_path)
    expected = collected("src/ota_rig/scenarios/test_update.py", "--ota-profile", "arduino-esp32-2.0")
    assert expected >= 2 and len(ran) == expected, (expected, ran)
    assert all(scenario["verdict"] == "passed" for scenario in ran), ran
    places = {scenario["board"]["place"]: scenario["board"]["port"] for scenario in ran}
    assert places == {name: twin.port for name, twin in farm.twins.items()}
    assert farm.held() == NOBODY


FAILING = "def test_fails(ota_real_board):\n    assert ota_real_board.place == 'esp-b'\n    assert False\n"
WAITING = ("import time\n\ndef test_waits(ota_real_board, tmp_path_factory):\n"
           "    open({flag!r}, 'w').close()\n    time.sleep(120)\n")


@pytest.mark.timeout(300)
def test_a_failed_session_releases_its_place(farm: Farm, tmp_path: Path) -> None:
    (tmp_path / "test_it.py").write_text(FAILING)
    done = run_rig(farm, tmp_path, "labgrid:esp-b", str(tmp_path / "test_it.py"), "--rootdir", str(tmp_path))
    assert done.returncode == 1 and "1 failed" in done.stdout, done.stdout + done.stderr
    assert "assert False" in done.stdout  # the place assertion before it held
    assert farm.held() == NOBODY


@pytest.mark.timeout(300)
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stopped_session_releases_its_places(farm: Farm, tmp_path: Path, stop: signal.Signals) -> None:
    flag = tmp_path / "running"
    (tmp_path / "test_it.py").write_text(WAITING.format(flag=str(flag)))
    process = subprocess.Popen(rig_argv(tmp_path, "labgrid:esp-a,esp-b", str(tmp_path / "test_it.py"),
                                        "--rootdir", str(tmp_path), "-n", "2"),
                               cwd=ROOT, env=rig_env(farm, tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    deadline = time.monotonic() + 60
    while not flag.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.1)
    assert flag.exists(), process.communicate()[0]
    assert set(farm.held().values()) == {f"{farm.held()['esp-a'].split('/')[0]}/{USER}"}  # both held, by the run
    process.send_signal(stop)
    out = process.communicate(timeout=60)[0]
    assert process.returncode == 2, out  # pytest's "interrupted"
    assert farm.held() == NOBODY, out


@pytest.mark.timeout(120)
def test_a_place_held_by_someone_else_is_named_and_nothing_stays_held(farm: Farm, tmp_path: Path) -> None:
    farm.client("-p", "esp-b", "acquire", user="alice")
    try:
        done = run_rig(farm, tmp_path, "labgrid:esp-a,esp-b", "src/ota_rig/scenarios",
                       "-k", "test_device_on_the_latest_version", "-n", "2")
        holder = farm.held()["esp-b"]
    finally:
        farm.client("-p", "esp-b", "release", user="alice")
    assert done.returncode == 4, done.stdout + done.stderr
    assert f"the labgrid place esp-b is held by {holder}; wait until it is released, or choose another place" \
        in done.stderr, done.stderr
    assert holder.endswith("/alice")
    assert farm.held() == NOBODY  # esp-a, acquired first, was given back
    assert not (tmp_path / "report" / "labgrid-places.json").exists()


@pytest.mark.timeout(120)
def test_a_session_that_fails_to_start_after_acquiring_releases_its_places(farm: Farm, tmp_path: Path) -> None:
    (tmp_path / "report").write_text("a file where the run's folder should go")
    done = run_rig(farm, tmp_path, "labgrid:esp-a,esp-b", "src/ota_rig/scenarios", "-n", "2")
    assert done.returncode == 4, done.stdout + done.stderr
    assert f"cannot write labgrid-places.json into {tmp_path / 'report'} (File exists)" in done.stderr, done.stderr
    assert farm.held() == NOBODY


@pytest.mark.timeout(120)
def test_a_coordinator_that_is_down_is_named(farm: Farm, tmp_path: Path) -> None:
    env = {**rig_env(farm, tmp_path), "LG_COORDINATOR": f"127.0.0.1:{free_port()}"}
    done = subprocess.run(rig_argv(tmp_path, "labgrid:esp-a", "src/ota_rig/scenarios"), cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 4, done.stdout + done.stderr
    assert f"cannot reach the labgrid coordinator at {env['LG_COORDINATOR']}" in done.stderr
    assert "start it, or set LG_COORDINATOR to its host:port" in done.stderr


@pytest.mark.timeout(60)
def test_a_port_that_moved_is_looked_up_again_before_it_is_reopened(farm: Farm) -> None:
    """What SerialBoard.open does for a farm's board: a port that cannot be opened is asked for
    again (here the farm's answer: the place's NetworkSerialPort as the coordinator has it)."""
    from ota_rig.bench.labgrid_places import Request, acquire, locate, release
    held = acquire(Request(places=("esp-a",)), 1, farm.address)
    try:
        board = SerialBoard(f"rfc2217://127.0.0.1:{free_port()}", locate=lambda: locate(farm.address, "esp-a"),
                            place="esp-a")
        with board.open(reappear=5):
            pass
    finally:
        release(held)
    assert board.port == farm.twins["esp-a"].port
    assert farm.held() == NOBODY


@pytest.mark.timeout(120)
def test_release_from_releases_only_with_the_exact_holder(farm: Farm, tmp_path: Path) -> None:
    """The CI step of docs/hardware.md: `labgrid-client -p P release-from HOST/USER` says it released
    the place whatever holder it is given, but the coordinator only releases it for the holder it
    recorded, the `holder` of labgrid-places.json."""
    farm.client("-p", "esp-a", "acquire", user=USER)
    holder = farm.held()["esp-a"]
    try:
        wrong = farm.client("-p", "esp-a", "release-from", "otherhost/" + USER, check=False)
        assert wrong.returncode == 0 and "has released place esp-a" in wrong.stdout, wrong.stdout + wrong.stderr
        assert farm.held()["esp-a"] == holder  # still held: the output lied
        right = farm.client("-p", "esp-a", "release-from", holder, user="someone-else", check=False)
        assert right.returncode == 0, right.stdout + right.stderr
        assert farm.held() == NOBODY
        again = farm.client("-p", "esp-a", "release-from", holder, check=False)
        assert again.returncode == 1 and "place esp-a is not acquired" in again.stderr  # hence `|| true` in CI
    finally:
        farm.client("-p", "esp-a", "release", "--kick", user=USER, check=False)


@pytest.mark.timeout(600)
def test_rig_run_on_a_place_with_labgrids_pytest_plugin_installed(farm: Farm, tmp_path: Path) -> None:
    """`rig run` turns pytest's terminal reporter off, where labgrid's own pytest plugin (installed
    with labgrid) stopped it with "no option named 'verbose'": it passes -p no:labgrid."""
    done = subprocess.run(
        [sys.executable, "-m", "ota_rig.cli", "run", "--ota-board", "labgrid:esp-b",
         "-k", "test_device_on_the_latest_version", "--ota-profile", "arduino-esp32-2.0",
         "--out", str(tmp_path / "runs"), "--ota-arduino-cli", str(FAKE_CLI),
         "--ota-host", "127.0.0.1"],
        cwd=ROOT, env=rig_env(farm, tmp_path), capture_output=True, text=True, timeout=540)
    assert done.returncode == 0 and "1 of 1 scenarios passed" in done.stdout, done.stdout + done.stderr
    run = tmp_path / "runs" / "latest"
    assert json.loads((run / "labgrid-places.json").read_text())["places"] == ["esp-b"]
    [scenario] = json.loads((run / "results.json").read_text())["scenarios"]
    assert scenario["board"]["place"] == "esp-b"
    assert farm.held() == NOBODY


NO_LINE_CONTROL = ("no line control: the RFC2217 server at {url} did not acknowledge a DTR/RTS change, so esptool "
                   "cannot reset the board (ser2net in front of a port without modem lines, such as a pty, never does)")


@pytest.mark.timeout(600)
@pytest.mark.skipif(SER2NET is None, reason="ser2net is not installed (apt-get install ser2net: Debian's ser2net 4)")
def test_a_pty_twin_behind_ser2net_cannot_be_reset_and_the_run_says_so(tmp_path: Path) -> None:
    """A pty twin exported by a real ser2net (telnet(rfc2217) accepter, tests/farm/lab.py) and a
    labgrid exporter. The rig resets a board reached by rfc2217:// through DTR/RTS (esptool's
    default reset, RTS pulses), but a pty has no modem lines (TIOCMSET: ENOTTY) and the twin's EN and
    IO0 are wired to its stdin: ser2net never acknowledges the DTR change pyserial's RFC2217 client
    sends as it opens the port, so esptool cannot open it, and the scenario fails with one sentence.
    Bytes themselves pass: with the acknowledgement ignored and the twin put in its loader through
    its wires, esptool talks to the chip through ser2net; its DTR/RTS reset still reaches nothing."""
    from ota_rig.bench.flash import Esptool, FlashError

    twin = VirtualBoard(tmp_path / "twin", transport="pty", mac="24:6f:28:aa:0f:10")
    try:
        with ser2net(tmp_path, twin.port) as url, start_farm(tmp_path, {"esp-s2n": url}, exporter="bench2") as lab:
            done = run_rig(lab, tmp_path, "labgrid:esp-s2n", "src/ota_rig/scenarios",
                           "-k", "test_device_on_the_latest_version", "--ota-profile", "arduino-esp32-2.0")
            assert lab.held() == {"esp-s2n": None}
            assert json.loads((tmp_path / "report" / "labgrid-places.json").read_text())["ports"] == [url]
            assert done.returncode == 1 and "1 failed" in done.stdout, done.stdout + done.stderr
            assert "FlashError: " + NO_LINE_CONTROL.format(url=url) in done.stdout, done.stdout
            [scenario] = scenarios(tmp_path)
            assert scenario["verdict"] == "failed" and scenario["board"]["place"] == "esp-s2n"

            ignoring = url + "?ign_set_control"  # esp_rfc2217_server's form: no waiting for the answer
            with pytest.raises(FlashError, match="^no sync: ") as reset_only:
                Esptool(ignoring, chip="auto", before="default-reset", after="no-reset").chip_info()
            assert "Wrong boot mode detected (0x13)" in reset_only.value.output  # DTR/RTS moved nothing
            twin.enter_bootloader()  # IO0 low, EN pulsed: over the twin's wires
            info = Esptool(ignoring, chip="auto", before="no-reset", after="no-reset").chip_info()
            assert info.chip == twin.chip
    finally:
        twin.close()
