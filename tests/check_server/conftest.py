"""Update servers the rig did not write, started for a test: Debian's nginx serving a file, the
seed tutorial's Express server on Node, and the rig's own server; `check_server` runs the real
`rig check-server` command against one and returns its exit status, output and JSON file.

Each server keeps its own record of what it was asked (nginx's access and error logs, the
Express server's request lines, the rig server's server.jsonl): the tests' evidence, written by
no code under test.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ota_rig.build.virtual_builder import virtual_app
from ota_rig.device.sketch_config import SketchConfig
from ota_rig.server.app import UpdateServer
from ota_rig.server.pki import Pki, ServerCert
from tests.nginx import MISSING as NGINX_MISSING
from tests.nginx import NGINX
from tests.nginx import nginx as start_nginx
from tests.servers import stop

HERE = Path(__file__).resolve().parent
EXPRESS_APP = HERE.parent.parent / "bench" / "express"  # its package-lock.json pins express
OFFERED = "0.2"
IMAGE_SIZE = 300_000
# nginx's access log: a JSON object a request, with the version headers of both chips
PROBE_LOG = ("""escape=json '{"method": "$request_method", "status": $status, "esp32": "$http_x_esp32_version", """
             """"esp8266": "$http_x_esp8266_version", "bytes": $body_bytes_sent}'""")


@dataclass
class Checked:
    """One `rig check-server` run: exit status, stdout, stderr and the JSON file it wrote."""

    status: int
    out: str
    err: str
    report: dict

    def profile(self, name: str) -> dict:
        return next(p for p in self.report["profiles"] if p["profile"] == name)

    def verdicts(self) -> dict[str, str]:
        return {p["profile"]: p["verdict"]["line"] for p in self.report["profiles"]}

    def findings(self, severity: str | None = None) -> list[dict]:
        return [f for f in self.report["findings"] if severity is None or f["severity"] == severity]


@pytest.fixture
def check_server(tmp_path: Path):
    """check_server(url, ca_pem_path, *options) runs `rig check-server` as a user types it."""
    runs = iter(range(1000))

    def run(url: str, ca: Path, *options: str, version: str = "0.1") -> Checked:
        report = tmp_path / f"check-{next(runs)}.json"
        done = subprocess.run(
            [sys.executable, "-m", "ota_rig.cli", "check-server", url, "--ca", str(ca), "--version", version,
             "--json", str(report), *options],
            capture_output=True, text=True, timeout=600)
        if not report.exists():
            raise AssertionError(f"rig check-server wrote no JSON (exit {done.returncode}): {done.stderr}")
        return Checked(done.returncode, done.stdout, done.stderr, json.loads(report.read_text()))

    return run


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki")


def offered_image(size: int = IMAGE_SIZE) -> bytes:
    """A virtual build of the reference sketch as 0.2: its version is in its constants."""
    config = SketchConfig(version=OFFERED, update_url="https://ota.local/update", ca_bundle="")
    return virtual_app(config, size=size)


@pytest.fixture
def rig_server(tmp_path: Path) -> Iterator:
    """rig_server(cert, image=...) starts the rig's UpdateServer offering 0.2; returns it and its URL."""
    servers: list[UpdateServer] = []

    def start(cert: ServerCert, image: bytes | None = None) -> tuple[UpdateServer, str]:
        server = UpdateServer(tmp_path / "firmware", tmp_path / f"server-{len(servers)}.jsonl")
        server.add_listener("main", cert)
        server.offer(OFFERED, image if image is not None else offered_image())
        servers.append(server.start())
        return server, server.url("main")

    yield start
    for server in servers:
        server.stop()


@dataclass
class Nginx:
    port: int
    access_log: Path
    error_log: Path

    def requests(self) -> list[dict]:
        """The access log: one JSON object a request (method, status, the version headers)."""
        return [json.loads(line) for line in self.access_log.read_text().splitlines() if line]


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator:
    """nginx(cert, image, md5=..., protocols=...) serves `image` at /update: every GET gets the
    file, whatever it says (a static file server, or a CDN in front of one)."""
    if NGINX is None:
        pytest.skip(NGINX_MISSING)
    started = 0
    with contextlib.ExitStack() as running:

        def start(cert: ServerCert, image: bytes, md5: str | None = "", protocols: str = "TLSv1.2 TLSv1.3") -> Nginx:
            nonlocal started
            started += 1
            root = tmp_path / f"nginx-{started}"
            root.mkdir()
            (root / "update.bin").write_bytes(image)
            md5 = hashlib.md5(image).hexdigest() if md5 == "" else md5
            location = (f"location = /update {{ alias {root}/update.bin; "
                        f"{f'add_header x-MD5 {md5};' if md5 else ''} }}")
            port, access = running.enter_context(start_nginx(
                root, root, cert.cert_pem, cert.key_pem, protocols=protocols, log_format=PROBE_LOG, server=location))
            return Nginx(port, access, root / "error.log")

        yield start


def _express_modules() -> Path:
    """express installed with `npm ci` from bench/express's lockfile into a cache folder outside
    the repository (once per lockfile; a lock keeps parallel workers from racing)."""
    lock = (EXPRESS_APP / "package-lock.json").read_bytes()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ota-rig"
    folder = cache / f"express-{hashlib.sha256(lock).hexdigest()[:12]}"
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / "express.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        if not (folder / "node_modules" / "express" / "package.json").exists():
            folder.mkdir(exist_ok=True)
            for name in ("package.json", "package-lock.json"):
                shutil.copy(EXPRESS_APP / name, folder / name)
            subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=folder, check=True,
                           timeout=300)
    return folder / "node_modules"


@dataclass
class Express:
    port: int
    process: subprocess.Popen

    def requests(self) -> list[dict]:
        """The request lines the server printed so far (it prints one per answered request)."""
        assert self.process.stdout is not None
        stop(self.process)
        return [json.loads(line) for line in self.process.stdout.read().splitlines() if line.startswith("{")]


@pytest.fixture
def seed_express(tmp_path: Path) -> Iterator:
    """seed_express(cert, firmware) starts the seed tutorial's Express server (seed_server.js)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are not installed (Debian: apt-get install nodejs npm; .ci/run installs them)")
    modules = _express_modules()
    processes: list[subprocess.Popen] = []

    def start(cert: ServerCert, firmware: bytes) -> Express:
        path = tmp_path / "httpUpdateNew.bin"
        path.write_bytes(firmware)
        process = subprocess.Popen(["node", str(HERE / "seed_server.js"), str(cert.cert_pem), str(cert.key_pem),
                                    str(path)], env={**os.environ, "NODE_PATH": str(modules)},
                                   stdout=subprocess.PIPE, text=True)
        processes.append(process)
        assert process.stdout is not None
        first = process.stdout.readline()
        if not first.startswith("listening on "):
            stop(process)
            raise AssertionError(f"the Express server did not start: {first!r}")
        return Express(int(first.split()[-1]), process)

    yield start
    for process in processes:
        stop(process)
