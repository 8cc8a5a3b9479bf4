"""`rig fleet`, a real process, with 20 twins against `rig serve` (a real process) and against
Debian's nginx serving the release as a file, side by side. The evidence is each server's own
record (server.jsonl; nginx's access log) and each twin's serial log, not the fleet's table."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ota_rig.build.virtual_builder import VirtualBuilder
from ota_rig.device.sketch_config import SketchConfig
from ota_rig.scenario.fleet import FleetPlan, rehearse
from ota_rig.server.app import UpdateServer
from ota_rig.server.pki import Pki
from tests.nginx import MISSING, NGINX, nginx
from tests.servers import free_port
from tests.virtual.test_manual_session import RIG, ROOT, Output

DEVICES = 20


def rig_fleet(url: str, ca: Path, out: Path, devices: int = DEVICES) -> dict:
    done = subprocess.run([*RIG, "fleet", url, "--devices", str(devices), "--ca", str(ca), "--version", "0.1",
                           "--timeout", "240", "--out", str(out), "--json", str(out.with_suffix(".json"))],
                          cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout + done.stderr
    print(done.stdout)
    return json.loads(out.with_suffix(".json").read_text())


def serial_logs(result: dict) -> list[str]:
    return [Path(device["serial_log"]).read_text() for device in result["per_device"]]


@pytest.mark.skipif(NGINX is None, reason=MISSING)
@pytest.mark.timeout(900)  # two fleets of 20 twin processes: about 2 minutes on 2 cores
def test_a_fleet_updates_from_rig_serve_and_loops_on_nginx(tmp_path: Path) -> None:
    serve = tmp_path / "serve"
    subprocess.run([*RIG, "certs", "--out", str(serve)], cwd=ROOT, check=True, capture_output=True)
    ca = serve / "ca.pem"
    rig_port, nginx_port = free_port(), free_port()
    rig_url = f"https://ota.local:{rig_port}/update"
    nginx_url = f"https://ota.local:{nginx_port}/firmware/release.bin"
    builder = VirtualBuilder(tmp_path / "builds")
    releases = {url: builder.build(SketchConfig(version="0.2", update_url=url, ca_bundle=ca.read_text())).app
                for url in (rig_url, nginx_url)}

    server = subprocess.Popen([*RIG, "serve", "--folder", str(serve), "--host", "127.0.0.1", "--port", str(rig_port),
                               "--firmware", str(releases[rig_url]), "--firmware-version", "0.2"],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        Output(server.stdout).until("^Ctrl-C stops it", timeout=30)
        on_rig = rig_fleet(rig_url, ca, tmp_path / "fleet-rig")
    finally:
        server.terminate()
        assert server.wait(timeout=10) == 0

    docroot = tmp_path / "www"
    (docroot / "firmware").mkdir(parents=True)
    shutil.copy(releases[nginx_url], docroot / "firmware" / "release.bin")
    with nginx(tmp_path / "nginx", docroot, serve / "server.pem", serve / "server.key", nginx_port) as (_, access):
        on_nginx = rig_fleet(nginx_url, ca, tmp_path / "fleet-nginx")
    print("\n".join(f"{name:<6} updated {r['updated']}/{r['devices']}, loops {r['update_loops']}, time to update "
                    f"{r['time_to_update']}, {r['updated_per_second']} devices/s, failures {r['failures']}"
                    for name, r in (("rig", on_rig), ("nginx", on_nginx))))

    macs = {device["mac"].upper() for device in on_rig["per_device"]}
    assert len(macs) == DEVICES
    # rig serve: each device downloaded the release once, whole, then heard 304 at 0.2.
    record = [json.loads(line) for line in (serve / "server.jsonl").read_text().splitlines()]
    answers = sorted((dict(r["headers"])["x-ESP32-version"], r["status"], r["bytes_sent"], r["complete"])
                     for c in record for r in c["requests"])
    size = releases[rig_url].stat().st_size
    assert answers == [("0.1", 200, size, True)] * DEVICES + [("0.2", 304, 0, True)] * DEVICES
    assert {dict(r["headers"])["x-ESP32-STA-MAC"] for c in record for r in c["requests"]} == macs
    for log in serial_logs(on_rig):
        assert re.search(r"Firmware version 0\.1\n(.*\n)*HTTP_UPDATE_OK\n(.*\n)*Firmware version 0\.2\n(.*\n)*"
                         r"HTTP_UPDATE_NO_UPDATES", log), log
    assert (on_rig["updated"], on_rig["failures"], on_rig["update_loops"]) == (DEVICES, {}, 0)

    # nginx: 200 to every GET, so every device installed 0.2 and then 0.2 again.
    requests = [line.split() for line in access.read_text().splitlines()]
    by_version = {version: sum(1 for r in requests if r[-2] == f'"{version}"' and r[4] == "200")
                  for version in ("0.1", "0.2")}
    assert by_version["0.1"] == DEVICES and by_version["0.2"] >= DEVICES
    for log in serial_logs(on_nginx):
        assert re.search(r"Firmware version 0\.2\n(.*\n)*HTTP_UPDATE_OK\n(.*\n)*Firmware version 0\.2", log), log
    assert (on_nginx["updated"], on_nginx["failures"], on_nginx["update_loops"]) == (DEVICES, {}, DEVICES)


def test_a_fleet_trusting_only_the_old_ca_is_stranded_when_the_server_moves_to_a_new_one(tmp_path: Path) -> None:
    """The seed readers' question, on a small fleet: a server whose certificate now comes from
    another CA. Every device refuses it in the TLS handshake (the server records the alert each
    sent) and says why in its log; none can be reached by an update any more."""
    pki = Pki(tmp_path / "pki")
    with UpdateServer(tmp_path / "fw", tmp_path / "server.jsonl") as server:
        server.add_listener("main", pki.dns(ca="new"))
        url = server.url("main")
        server.offer("0.2", VirtualBuilder(tmp_path / "b").build(
            SketchConfig(version="0.2", update_url=url, ca_bundle=pki.authority().pem)).app)
        fleet = rehearse(FleetPlan(url, pki.authority().pem, devices=2, timeout=60), tmp_path / "fleet")
        server.wait_idle()
    refused = server.log.handshake_failures()
    assert len(refused) >= 2 and {c.tls.alert for c in refused} == {"unknown_ca"}
    assert server.log.requests() == []
    [(cause, count)] = fleet.failures().items()
    assert count == 2 and "TLS error (-9984)" in cause and fleet.updated == []
    for device in fleet.devices:
        assert "TLS error (-9984): X509 - Certificate verification failed" in Path(device.serial_log).read_text()
