"""ota_rig.cli.manual: the lasting CA and `rig serve`, run as a user runs them.

The server is a real `python -m ota_rig.cli serve` process; the client is Python's ssl trusting
the CA PEM the server printed, sending what arduino-esp32's HTTPUpdate sends.
"""

import hashlib
import http.client
import queue
import re
import signal
import socket
import ssl
import stat
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from ota_rig.build.virtual_builder import VirtualBuilder
from ota_rig.cli import main
from ota_rig.cli.manual import write_certs
from ota_rig.device.signing import MANIFEST_SIZE, STATEMENT_SIZE, VERSION_AT
from ota_rig.device.sketch_config import SketchConfig
from ota_rig.server.records import ServerLog
from tests.unit.test_server import send_request, with_header

REPO = Path(__file__).resolve().parents[2]
URL = re.compile(r"^https://(?P<host>[^:/]+):(?P<port>\d+)/update$")
PEM = re.compile(r"-----BEGIN CERTIFICATE-----\n.*?-----END CERTIFICATE-----\n", re.DOTALL)


def printed_certs(capsys) -> dict[str, str]:
    """The lines `rig certs` printed, by file name: the fingerprint, or "" for a key."""
    files = {}
    for line in capsys.readouterr().out.splitlines():
        words = line.split()
        files[Path(words[1]).name] = words[-1] if "sha256" in words else ""
    return files


def test_the_ca_is_kept_and_signs_each_new_server_certificate(tmp_path, capsys):
    write_certs(tmp_path, hostname=None, ip="192.168.1.5")
    first, ca_pem = printed_certs(capsys), (tmp_path / "ca.pem").read_bytes()
    write_certs(tmp_path, hostname="bench.lan", ip=None)
    second = printed_certs(capsys)

    assert (tmp_path / "ca.pem").read_bytes() == ca_pem
    assert second["ca.pem"] == first["ca.pem"] and second["server.pem"] != first["server.pem"]
    assert set(second) == {"ca.pem", "ca.key", "server.pem", "server.key"}
    ca = x509.load_pem_x509_certificate(ca_pem)
    assert hashlib.sha256(ca.public_bytes(Encoding.DER)).hexdigest() == first["ca.pem"]
    for name, identity in (("server", "bench.lan"), ("server-ip", "192.168.1.5")):
        leaf = x509.load_pem_x509_certificate((tmp_path / f"{name}.pem").read_bytes())
        leaf.verify_directly_issued_by(ca)  # raises unless the kept CA signed it
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert [str(general_name.value) for general_name in san] == [identity]
    for key in ("ca.key", "server.key", "server-ip.key"):
        assert stat.S_IMODE((tmp_path / key).stat().st_mode) == 0o600


class Output:
    """A process's stdout, line by line, read in a thread so that a test can wait with a timeout."""

    def __init__(self, stream) -> None:
        self.seen: list[str] = []
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream) -> None:
        for line in stream:
            self._lines.put(line.rstrip("\n"))

    def until(self, found, timeout: float = 3.0) -> str:
        """The first line for which `found(line)` is true; the lines before it are in `seen`."""
        while True:
            try:
                line = self._lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no such line within {timeout} s; got {self.seen}") from None
            self.seen.append(line)
            if found(line):
                return line


@pytest.fixture
def app_image(tmp_path) -> Path:
    return VirtualBuilder(tmp_path / "builds").build(SketchConfig.without_server("0.2")).app


STARTUP = 15.0  # seconds for a new Python process to import the server and print its URL, on a loaded runner


@contextmanager
def serving(folder: Path, *options: str):
    """`rig serve` on a free port of 127.0.0.1 with `options`, once its banner is out: the
    process, its output so far, the URL's parts and the CA it printed. Killed at the end."""
    process = subprocess.Popen(
        [sys.executable, "-m", "ota_rig.cli", "serve", "--folder", str(folder), "--host", "127.0.0.1", "--port", "0",
         *options],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        output = Output(process.stdout)
        url = URL.match(output.until(URL.match, timeout=STARTUP))
        output.until(lambda line: line == "Ctrl-C stops it")
        yield process, output, url, PEM.search("\n".join(output.seen) + "\n")[0]
    finally:
        process.kill()
        process.wait()


def test_serve_hands_the_image_to_an_older_device_and_stops_on_sigterm(tmp_path, app_image):
    folder = tmp_path / "serve"
    with serving(folder, "--firmware", str(app_image), "--firmware-version", "0.2") as (process, output, url, ca_pem):
        assert ca_pem == (folder / "ca.pem").read_text()
        header = SketchConfig(version="0.2", update_url=url[0], ca_bundle=ca_pem).header().splitlines()
        assert [line for line in output.seen if line.startswith("#define")] == [
            line for line in header if line.startswith(("#define OTA_UPDATE_URL ", "#define OTA_CA_BUNDLE "))]

        response, body = get_update(url["host"], int(url["port"]), ca_pem)
        assert response.status == 200
        assert body == app_image.read_bytes() and response.getheader("x-MD5") == hashlib.md5(body).hexdigest()
        line = output.until(lambda line: "GET /update" in line)
        assert re.fullmatch(rf"\d\d:\d\d:\d\d 127\.0\.0\.1 TLS ok TLSv1\.[23] GET /update 200 {len(body)} bytes", line)

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0, process.stderr.read()
    [request] = ServerLog(folder / "server.jsonl").requests()
    assert (request.path, request.status, request.complete) == ("/update", 200, True)


def get_update(hostname: str, port: int, ca_pem: str) -> tuple[http.client.HTTPResponse, bytes]:
    """An ESP32 at version 0.1 asking 127.0.0.1:`port` for an update, as `hostname`."""
    context = ssl.create_default_context(cadata=ca_pem)
    with context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=3), server_hostname=hostname) as tls:
        send_request(tls, headers=with_header("x-ESP32-version", "0.1"), host=hostname)
        response = http.client.HTTPResponse(tls)
        response.begin()
        return response, response.read()


def refusal(capsys, *argv: str) -> str:
    """The one line `rig` prints on stderr when it refuses `argv` with exit status 2."""
    status = main(list(argv))
    captured = capsys.readouterr()
    assert status == 2 and not captured.out
    [line] = captured.err.splitlines()
    assert line.startswith("rig: ") and "--debug" not in line  # a sentence of the rig's, not an unexpected error
    return line


@pytest.mark.parametrize(("problem", "sentence"), [
    ("missing file", "missing.bin: no such file; pass --firmware"),
    ("not an image", "notes.txt is not an ESP32 app image (image magic at offset 0x0"),
    ("bootloader", "without an app descriptor (a bootloader?)"),
    ("no version", "needs a version to compare with the board's x-ESP32-version; pass --firmware-version"),
    ("version alone", "pass --firmware with the app image too"),
])
def test_serve_refuses_a_firmware_it_cannot_offer(problem, sentence, tmp_path, app_image, capsys):
    not_image = tmp_path / "notes.txt"
    not_image.write_text("notes on the bench, not firmware at all\n")
    args = {
        "missing file": ["--firmware", str(tmp_path / "missing.bin"), "--firmware-version", "1"],
        "not an image": ["--firmware", str(not_image), "--firmware-version", "1"],
        "bootloader": [
            "--firmware",
            str(app_image.with_name("ota_https.ino.bootloader.bin")),
            "--firmware-version",
            "1",
        ],
        "no version": ["--firmware", str(app_image)],
        "version alone": ["--firmware-version", "1"],
    }[problem]
    assert sentence in refusal(capsys, "serve", "--folder", str(tmp_path / "serve"), "--host", "127.0.0.1", *args)


def test_serve_refuses_a_port_in_use(tmp_path, capsys):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        line = refusal(capsys, "serve", "--folder", str(tmp_path), "--host", "127.0.0.1", "--port", str(port))
    assert line == f"rig: port {port} on 127.0.0.1 is in use; pass --port 0 for a free one or stop the other server"


def test_certs_refuses_an_ip_that_is_not_one(tmp_path, capsys):
    line = refusal(capsys, "certs", "--out", str(tmp_path), "--ip", "ota.local")
    assert line.startswith("rig: 'ota.local' is not an IP address; pass --ip")


def test_sign_writes_a_release_the_built_in_key_verifies(tmp_path, app_image, capsys):
    """`rig sign` makes the key pair once, writes manifest + image, and prints the line the
    sketch needs; the signature is checked here with `cryptography` against public.pem."""
    keys = tmp_path / "keys"
    assert main(["sign", str(app_image), "--version", "0.2", "--key", str(keys)]) == 0
    out = capsys.readouterr().out.splitlines()
    release = Path(out[0]).read_bytes()
    assert out[0].endswith("ota_https.ino.signed.bin") and release[MANIFEST_SIZE:] == app_image.read_bytes()
    assert release[VERSION_AT : VERSION_AT + 4] == b"0.2\0"
    area = release[STATEMENT_SIZE:MANIFEST_SIZE]
    public = serialization.load_pem_public_key((keys / "public.pem").read_bytes())
    public.verify(area[: 2 + area[1]], release[:STATEMENT_SIZE], ec.ECDSA(hashes.SHA256()))
    header = SketchConfig(
        version="0", update_url="", ca_bundle="", signing_key=(keys / "public.pem").read_text()
    ).header()
    assert out[-1] in header.splitlines() and out[-1].startswith("#define OTA_SIGNING_KEY ")
    assert hashlib.sha256(app_image.read_bytes()).hexdigest() in out[1]


@pytest.mark.parametrize(
    ("args", "sentence"),
    [
        (["--version", ""], "version '' must be 1 to 31 bytes without NUL; pass --version"),
        (["--version", "0.2", "--out", "{tmp}/release.bin", "{tmp}/missing.bin"], "missing.bin: no such file"),
    ],
)
def test_sign_refuses_what_it_cannot_sign_and_makes_no_key(args, sentence, tmp_path, app_image, capsys):
    argv = ["sign", *[a.format(tmp=tmp_path) for a in args], "--key", str(tmp_path / "keys")]
    if "{tmp}/missing.bin" not in args:
        argv.insert(1, str(app_image))
    assert sentence in refusal(capsys, *argv)
    assert not (tmp_path / "keys").exists() and not (tmp_path / "release.bin").exists()


def test_serve_with_a_signing_key_offers_a_signed_release(tmp_path, app_image):
    options = ("--firmware", str(app_image), "--firmware-version", "0.2", "--signing-key", str(tmp_path / "keys"))
    with serving(tmp_path / "serve", *options) as (process, output, url, ca_pem):
        public_pem = (tmp_path / "keys" / "public.pem").read_text()
        header = SketchConfig(version="0", update_url="", ca_bundle="", signing_key=public_pem).header().splitlines()
        key_line = next(line for line in header if line.startswith("#define OTA_SIGNING_KEY "))
        assert key_line in output.seen
        response, body = get_update(url["host"], int(url["port"]), ca_pem)
        assert response.status == 200 and body[MANIFEST_SIZE:] == app_image.read_bytes()
        area = body[STATEMENT_SIZE:MANIFEST_SIZE]
        serialization.load_pem_public_key(public_pem.encode()).verify(
            area[: 2 + area[1]], body[:STATEMENT_SIZE], ec.ECDSA(hashes.SHA256())
        )
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0, process.stderr.read()
