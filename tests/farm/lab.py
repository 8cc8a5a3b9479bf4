"""A labgrid farm on this machine's loopback, real processes, for tests/farm and bench/farm_parallel.py:
labgrid-coordinator, labgrid-exporter exporting one NetworkSerialPort per place (host:port of an
RFC2217 server: a twin's own, or ser2net's in front of a pty twin), and places made with
labgrid-client (set-up only; the rig itself talks to the coordinator through labgrid's API)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ota_rig.bench.board import VirtualBoard
from tests.servers import free_port, stop, wait_listening

BIN = Path(sys.executable).parent
try:
    import labgrid  # noqa: F401
    MISSING = None if (BIN / "labgrid-coordinator").exists() else "labgrid-coordinator is not beside this Python"
except ImportError:
    MISSING = 'labgrid is not installed (pip install -e ".[labgrid]"; docs/hardware.md, "Board farms")'
SER2NET = shutil.which("ser2net") or ("/usr/sbin/ser2net" if os.path.exists("/usr/sbin/ser2net") else None)


@dataclass
class Farm:
    address: str
    folder: Path
    twins: dict[str, VirtualBoard] = field(default_factory=dict)

    def client(self, *args: str, user: str = "setup", check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "LG_COORDINATOR": self.address, "LG_USERNAME": user}
        done = subprocess.run([str(BIN / "labgrid-client"), *args], env=env, capture_output=True, text=True, timeout=60)
        if check and done.returncode:
            raise RuntimeError(f"labgrid-client {' '.join(args)}: {done.stdout}{done.stderr}")
        return done

    def held(self) -> dict[str, str | None]:
        """Each place's holder (host/user) as the coordinator has it, through labgrid's API."""
        from ota_rig.bench.labgrid_places import Coordinator
        with Coordinator(self.address) as coordinator:
            return {name: place.acquired for name, place in coordinator.places().items()}


@contextmanager
def farm(folder: Path, ports: dict[str, str], tags: tuple[str, ...] = ("board=esp32", "lab=ci"),
         exporter: str = "bench1", more: dict[str, dict[str, dict[str, object]]] | None = None) -> Iterator[Farm]:
    """A coordinator and an exporter publishing `ports` (place name: rfc2217://127.0.0.1:PORT) as
    NetworkSerialPort resources, one place per port, each with `tags`; all stopped at the end.
    `more` gives a place more resources ({place: {resource name: {"cls": ..., parameters}}}),
    exported in its group and matched to it by class and name."""
    more = more or {}
    port = free_port()
    address = f"127.0.0.1:{port}"
    with open(folder / "processes.log", "ab") as log, ExitStack() as processes:
        def start(*argv: str) -> None:
            process = subprocess.Popen(argv, cwd=folder, stdout=log, stderr=subprocess.STDOUT)
            processes.callback(stop, process)

        start(str(BIN / "labgrid-coordinator"), "-l", address)
        wait_listening(port)
        resources = []
        for name, url in ports.items():
            where = urllib.parse.urlsplit(url)
            resources.append(f"{name}:\n  NetworkSerialPort:\n    host: {where.hostname}\n    port: {where.port}\n")
            resources += [f"  {resource}: {json.dumps(params)}\n" for resource, params in more.get(name, {}).items()]
        (folder / "exporter.yaml").write_text("".join(resources))
        start(str(BIN / "labgrid-exporter"), "-c", address, "-n", exporter, "--hostname", "127.0.0.1",
              str(folder / "exporter.yaml"))
        made = Farm(address, folder)
        for name in ports:
            made.client("-p", name, "create")
            made.client("-p", name, "add-match", f"{exporter}/{name}/NetworkSerialPort")
            for resource, params in more.get(name, {}).items():
                made.client("-p", name, "add-match", f"{exporter}/{name}/{params['cls']}/{resource}")
            made.client("-p", name, "set-tags", *tags)
        deadline = time.monotonic() + 20
        while exporter not in made.client("resources").stdout and time.monotonic() < deadline:
            time.sleep(0.2)
        yield made


def ser2net_config(device: str, port: int) -> str:
    """ser2net 4's YAML: one RFC2217 (telnet(rfc2217)) accepter on 127.0.0.1:`port` for `device`
    at 115200 8N1, ignoring modem lines (`local`), as a farm host runs it in front of a USB bridge."""
    return (f"connection: &esp\n"
            f"  accepter: telnet(rfc2217),tcp,127.0.0.1,{port}\n"
            f"  connector: serialdev,{device},115200n81,local\n")


@contextmanager
def ser2net(folder: Path, device: str) -> Iterator[str]:
    """A real ser2net serving `device` over RFC2217 on a free loopback port: its rfc2217:// URL."""
    assert SER2NET, "ser2net is not installed"
    port = free_port()
    config = folder / "ser2net.yaml"
    config.write_text(ser2net_config(device, port))
    with open(folder / "ser2net.log", "ab") as log:
        process = subprocess.Popen([SER2NET, "-n", "-c", str(config), "-P", str(folder / "ser2net.pid")],
                                   cwd=folder, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_listening(port)
            yield f"rfc2217://127.0.0.1:{port}"
        finally:
            stop(process)
