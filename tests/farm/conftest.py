"""A labgrid farm on this machine's loopback, real processes: labgrid-coordinator, labgrid-exporter
exporting NetworkSerialPort resources whose host:port are twins over RFC2217, and places made
with labgrid-client (set-up only; the rig itself talks to the coordinator through labgrid's API)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ota_rig.bench.board import VirtualBoard

BIN = Path(sys.executable).parent
try:
    import labgrid  # noqa: F401
    MISSING = None if (BIN / "labgrid-coordinator").exists() else "labgrid-coordinator is not beside this Python"
except ImportError:
    MISSING = 'labgrid is not installed (pip install -e ".[labgrid]"; docs/hardware.md, "Board farms")'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


@dataclass
class Farm:
    address: str
    folder: Path
    twins: dict[str, VirtualBoard]

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


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Farm]:
    folder = tmp_path_factory.mktemp("farm")
    port = free_port()
    address = f"127.0.0.1:{port}"
    log = open(folder / "processes.log", "ab")
    processes = [subprocess.Popen([str(BIN / "labgrid-coordinator"), "-l", address], cwd=folder, stdout=log,
                                  stderr=subprocess.STDOUT)]
    twins: dict[str, VirtualBoard] = {}
    try:
        wait_port(port)
        resources = []
        for index, name in enumerate(("esp-a", "esp-b")):
            twins[name] = twin = VirtualBoard(folder / name, transport="rfc2217", mac=f"24:6f:28:aa:0f:0{index}")
            port_number = twin.port.rsplit(":", 1)[1]
            resources.append(f"{name}:\n  NetworkSerialPort:\n    host: 127.0.0.1\n    port: {port_number}\n")
        (folder / "exporter.yaml").write_text("".join(resources))
        processes.append(subprocess.Popen([str(BIN / "labgrid-exporter"), "-c", address, "-n", "bench1",
                                           "--hostname", "127.0.0.1", str(folder / "exporter.yaml")],
                                          cwd=folder, stdout=log, stderr=subprocess.STDOUT))
        made = Farm(address, folder, twins)
        for name in twins:
            made.client("-p", name, "create")
            made.client("-p", name, "add-match", f"bench1/{name}/NetworkSerialPort")
            made.client("-p", name, "set-tags", "board=esp32", "lab=ci")
        deadline = time.monotonic() + 20
        while "bench1" not in made.client("resources").stdout and time.monotonic() < deadline:
            time.sleep(0.2)
        yield made
    finally:
        for process in reversed(processes):
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        for twin in twins.values():
            twin.close()
        log.close()
        shutil.rmtree(folder / "esp-a" / "unused", ignore_errors=True)
