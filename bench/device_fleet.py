"""A fleet of twins updating at once (`rig fleet`), against the rig's server and against nginx,
and what a fleet does when the server's certificate expires or its CA is replaced (the seed
article's readers' questions), in one run.

    python bench/device_fleet.py [--devices 20]

Every fleet is N twins (their own processes, MACs and serial logs: ota_rig.scenario.fleet),
at 0.1, released at once against one server offering 0.2:

- `rig serve`, a process of its own, answering /update (304 to a device on 0.2);
- Debian's nginx serving the release as a file (200 to every GET: an update loop);
- the rig's server with an expired certificate, to devices built with the reference sketch's
  date check, then without it (stock arduino-esp32 checks no dates);
- the rig's server moved to a certificate from a new CA, to devices that trust only the old CA,
  then to devices built with both CAs in their bundle (a rotation prepared in advance).

Printed: a line per fleet (updated, failures by cause, update loops, time to update p50/p90/max,
devices updated per second), and what flashing costs: the one esptool write against the copies
of its flash file the other devices get. The time figures are wall times on a shared machine;
the outcomes are not timing-dependent.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(HERE / "src"), str(HERE)]

from ota_rig.build.virtual_builder import VirtualBuilder  # noqa: E402
from ota_rig.device.sketch_config import SketchConfig  # noqa: E402
from ota_rig.scenario.fleet import Fleet, FleetPlan, rehearse  # noqa: E402
from ota_rig.server.app import UpdateServer  # noqa: E402
from ota_rig.server.pki import Pki  # noqa: E402
from tests.nginx import MISSING, NGINX, nginx  # noqa: E402
from tests.servers import free_port  # noqa: E402


def line(name: str, fleet: Fleet) -> str:
    times = fleet.time_to_update()
    failures = "; ".join(f"{count} × {cause}" for cause, count in fleet.failures().items()) or "none"
    loops = sum(device.update_loop for device in fleet.devices)
    if not fleet.updated:
        speed = "no device updated"
    else:
        speed = (f"p50/p90/max {times['p50']}/{times['p90']}/{times['max']} s  "
                 f"{fleet.updated_per_second} devices/s")
    return (f"{name:<35} updated {len(fleet.updated):>2}/{len(fleet.devices)}  loops {loops:>2}  {speed}  "
            f"failures: {failures}")


def release(folder: Path, url: str, ca_bundle: str) -> Path:
    return VirtualBuilder(folder).build(SketchConfig(version="0.2", update_url=url, ca_bundle=ca_bundle)).app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=20)
    args = parser.parse_args()
    rows: list[str] = []
    costs: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="rig-device-fleet-") as tmp:
        root = Path(tmp)

        def fleet(name: str, url: str, ca: str, **plan: object) -> None:
            plan_ = FleetPlan(url, ca, "0.1", args.devices, **plan)  # type: ignore[arg-type]
            result = rehearse(plan_, root / f"fleet-{len(rows) + 1}")
            rows.append(line(name, result))
            costs.append(result.flashing)
            print(rows[-1], flush=True)

        # The rig's server, as a process of its own (`rig serve`).
        serve = root / "serve"
        subprocess.run([sys.executable, "-m", "ota_rig.cli", "certs", "--out", str(serve)], check=True,
                       capture_output=True)
        ca = (serve / "ca.pem").read_text()
        port = free_port()
        url = f"https://ota.local:{port}/update"
        server = subprocess.Popen([sys.executable, "-m", "ota_rig.cli", "serve", "--folder", str(serve), "--host",
                                   "127.0.0.1", "--port", str(port), "--firmware", str(release(root / "b1", url, ca)),
                                   "--firmware-version", "0.2"], stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout is not None
            for text in server.stdout:
                if text.startswith("Ctrl-C stops it"):
                    break
            fleet("rig-serve", url, ca)
        finally:
            server.terminate()
            server.wait(timeout=10)

        # nginx serving the release as a static file.
        if NGINX is None:
            print(MISSING)
        else:
            docroot, port = root / "www", free_port()
            url = f"https://ota.local:{port}/firmware/release.bin"
            (docroot / "firmware").mkdir(parents=True)
            shutil.copy(release(root / "b2", url, ca), docroot / "firmware" / "release.bin")
            with nginx(root / "nginx", docroot, serve / "server.pem", serve / "server.key", port):
                fleet("nginx (static file)", url, ca)

        # The seed readers' questions, on the rig's server (in this process: outcomes, not speed).
        pki = Pki(root / "pki")
        with UpdateServer(root / "fw", root / "server.jsonl") as updates:
            listener = updates.add_listener("main", pki.expired())
            url = updates.url("main")
            old_ca = pki.authority().pem
            updates.offer("0.2", release(root / "b3", url, old_ca))
            fleet("expired-cert, sketch date check", url, old_ca)
            fleet("expired-cert, stock (no date check)", url, old_ca, check_dates=False)
            listener.cert = pki.dns(ca="new")
            fleet("new-CA, devices trust the old CA", url, old_ca)
            both = pki.bundle(pki.authority(), pki.authority("new"))
            updates.offer("0.2", release(root / "b4", url, both))
            fleet("new-CA, devices trust old + new", url, both)

    print()
    print("\n".join(rows))
    writes = [cost["esptool_write"] for cost in costs]
    copies = [cost["copies"] / max(1, args.devices - 1) for cost in costs]
    print(f"flashing: one esptool write {min(writes):.2f}-{max(writes):.2f} s; a copy of its flash file "
          f"{min(copies) * 1000:.1f}-{max(copies) * 1000:.1f} ms a device")


if __name__ == "__main__":
    main()
