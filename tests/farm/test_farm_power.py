"""Power and wired reset on a farm: a place whose board has a power switch and EN/IO0 wires.

The board is a pty twin behind a real ser2net (a port without modem lines: DTR/RTS reach nothing,
tests/farm/test_farm.py shows that such a board could not be used before). Its place on a real
labgrid coordinator and exporter also holds a `NetworkPowerPort` (model `simplerest`) and two
`HttpDigitalOutput`s named `en` and `io0`, all pointing at tests/farm/switch.py, a stand-in for a
PDU outlet and two relays that moves the twin's power and pins through the twin's own control
path. The rig drives them through labgrid's NetworkPowerDriver and HttpDigitalOutputDriver
(ota_rig.bench.labgrid_controls). Evidence: the switch's own request log (what labgrid's drivers
sent, with the requests library's User-Agent), the twin's process ids and serial log, esptool's
log, and the run's records.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ota_rig.bench.board import VirtualBoard
from ota_rig.scenario import NO_POWER_SWITCH
from tests.farm.lab import MISSING, SER2NET, Farm, ser2net
from tests.farm.lab import farm as start_farm
from tests.farm.switch import Switch, switch
from tests.farm.test_farm import run_rig, scenarios

if MISSING:
    pytest.skip(MISSING, allow_module_level=True)
if SER2NET is None:
    pytest.skip("ser2net is not installed (apt-get install ser2net: Debian's ser2net 4)", allow_module_level=True)

pytestmark = [pytest.mark.virtual, pytest.mark.slow]

POWER_CUTS = "src/ota_rig/scenarios/test_power_cuts.py"
CUT_AT_HALF = (POWER_CUTS + "::test_a_power_cut_during_the_download_leaves_the_old_firmware_then_the_update_completes"
               "[arduino-esp32-2.0-50%-power]")
CUT_AFTER = POWER_CUTS + "::test_a_power_cut_right_after_the_image_is_written_ends_on_the_new_firmware"


@dataclass
class WiredFarm:
    lab: Farm
    twin: VirtualBoard
    switch: Switch


def output(url: str) -> dict[str, object]:
    """An HttpDigitalOutput as the exporter YAML declares it: PUT `1` asserts, `0` releases."""
    return {"cls": "HttpDigitalOutput", "url": url, "body_asserted": "1", "body_deasserted": "0"}


@pytest.fixture(scope="module")
def wired(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WiredFarm]:
    """Place esp-w: the twin's port, the switch's outlet 1 and its en and io0 relays. Place
    esp-nopower: the same port and relays, no power switch. Place esp-half: the port and `en` only."""
    folder = tmp_path_factory.mktemp("wired")
    twin = VirtualBoard(folder / "twin", transport="pty", mac="24:6f:28:aa:0f:20")
    try:
        with ser2net(folder, twin.port) as url, switch(twin, folder / "switch.jsonl") as made:
            relays = {"en": output(f"{made.url}/pin/en"), "io0": output(f"{made.url}/pin/io0")}
            power = {"cls": "NetworkPowerPort", "model": "simplerest", "host": made.url + "/outlet/{index}/{value}",
                     "index": 1}
            with start_farm(folder, {"esp-w": url}, exporter="bench3", more={"esp-w": {"power": power, **relays}},
                            tags=("board=esp32", "lab=wired")) as lab:
                for place, matches in (("esp-nopower", ("NetworkSerialPort", "HttpDigitalOutput/en",
                                                        "HttpDigitalOutput/io0")),
                                       ("esp-half", ("NetworkSerialPort", "HttpDigitalOutput/en"))):
                    lab.client("-p", place, "create")
                    for match in matches:
                        lab.client("-p", place, "add-match", f"bench3/esp-w/{match}")
                yield WiredFarm(lab, twin, made)
    finally:
        twin.close()
        shutil.rmtree(folder / "twin" / "unused", ignore_errors=True)


@pytest.mark.timeout(900)
def test_power_cuts_on_a_place_go_through_its_power_switch_and_resets_through_its_wires(
        wired: WiredFarm, tmp_path: Path) -> None:
    """The power-cut scenarios on place esp-w pass, as on a local twin: each cut is labgrid's
    NetworkPowerDriver switching outlet 1 off and on (the twin process killed and started again),
    every flash and boot an EN/IO0 sequence of labgrid's HttpDigitalOutputDriver, esptool run
    with --before no-reset through ser2net."""
    pids_before = wired.twin.process.pid
    done = run_rig(wired.lab, tmp_path, "labgrid:esp-w", CUT_AT_HALF, CUT_AFTER, "--ota-profile",
                   "arduino-esp32-2.0")
    assert done.returncode == 0, done.stdout + done.stderr
    ran = {scenario["name"]: scenario for scenario in scenarios(tmp_path)}
    assert len(ran) == 2 and all(s["verdict"] == "passed" and s["board"]["place"] == "esp-w" for s in ran.values())
    for scenario in ran.values():
        [cut] = [step for step in scenario["steps"] if step["step"] == "power cut"]
        assert not cut["detail"]  # a power cut, not EN pulled instead

    outlet = wired.switch.calls("/outlet/")
    assert outlet == ["GET /outlet/1/0", "GET /outlet/1/1"] * 2, outlet  # off, then on: two cuts
    assert {r["user_agent"].split("/")[0] for r in wired.switch.requests} == {"python-requests"}
    assert wired.twin.process.pid != pids_before  # the twin process was restarted by the outlet
    calls = wired.switch.calls("/")
    download = ["PUT /pin/io0 1", "PUT /pin/en 1", "PUT /pin/en 0", "PUT /pin/io0 0"]  # before each esptool run
    boot = ["PUT /pin/io0 0", "PUT /pin/en 1", "PUT /pin/en 0"]  # each reset into the firmware
    assert calls[:4] == download, calls
    assert any(calls[i:i + 3] == boot for i in range(len(calls))), calls
    for i, call in enumerate(calls):  # EN held low through each cut, released with the power back
        if call == "GET /outlet/1/0":
            assert calls[i - 1:i + 3] == ["PUT /pin/en 1", call, "GET /outlet/1/1", "PUT /pin/en 0"], calls
    folders = list((tmp_path / "out").glob("test_power_cuts.*"))
    assert len(folders) == 2, folders
    for folder in folders:  # esptool left the resets to the rig, through ser2net
        esptool = (folder / "esptool.log").read_text()
        assert 'Pre-connection option "no-reset" was selected' in esptool and "?ign_set_control" in esptool
        # the chip's own words: a power-on boot at the start and one after the cut
        assert (folder / "serial.log").read_text(errors="replace").count("rst:0x1 (POWERON_RESET)") == 2
    assert wired.lab.held() == {"esp-w": None, "esp-nopower": None, "esp-half": None}


@pytest.mark.timeout(600)
def test_a_power_cut_on_a_board_without_a_power_switch_pulls_en_and_says_so(wired: WiredFarm, tmp_path: Path) -> None:
    """Place esp-nopower has the wires but no power resource: the scenario's power cut is EN
    pulled through the `en` relay, it passes as the EN case does on a local twin, and its record
    says why it was not a power cut."""
    cuts = len(wired.switch.calls("/outlet/"))
    done = run_rig(wired.lab, tmp_path, "labgrid:esp-nopower", CUT_AT_HALF, "--ota-profile", "arduino-esp32-2.0")
    assert done.returncode == 0, done.stdout + done.stderr
    [scenario] = scenarios(tmp_path)
    assert scenario["verdict"] == "passed" and scenario["board"]["place"] == "esp-nopower"
    [cut] = [step for step in scenario["steps"] if step["step"] == "power cut"]
    assert cut["detail"] == NO_POWER_SWITCH
    assert len(wired.switch.calls("/outlet/")) == cuts  # the outlet was not touched
    [log] = (tmp_path / "out").glob("*/serial.log")
    assert "rst:0x1 (POWERON_RESET)" in log.read_text(errors="replace")
    assert wired.lab.held()["esp-nopower"] is None


@pytest.mark.timeout(120)
def test_a_place_with_only_one_of_en_and_io0_is_refused_in_one_sentence(wired: WiredFarm, tmp_path: Path) -> None:
    done = run_rig(wired.lab, tmp_path, "labgrid:esp-half", CUT_AT_HALF, "--ota-profile", "arduino-esp32-2.0")
    assert done.returncode != 0, done.stdout + done.stderr
    said = ("the labgrid place esp-half has a digital output named en but none named io0; wire both EN and IO0 "
            "(or neither)")
    assert said in done.stdout + done.stderr, done.stdout + done.stderr
    assert wired.lab.held()["esp-half"] is None
    assert json.loads((tmp_path / "report" / "labgrid-places.json").read_text())["places"] == ["esp-half"]
