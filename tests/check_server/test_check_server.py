"""`rig check-server` against servers the rig did not write (nginx, the seed's Express server)
and against its own server with the certificates that strand devices. Each profile's verdict
is the one the OTA scenarios assert for the same situation (docs/scenarios.md), and every test
also reads the server's own record: what the devices really asked, and that they only asked.
"""

from __future__ import annotations

import dataclasses
import hashlib
import subprocess
import sys

import pytest

from ota_rig.device import firmware
from ota_rig.server.pki import Pki

from .conftest import OFFERED, offered_image

V2, V3 = "arduino-esp32-2.0", "arduino-esp32-3"
REFUSED = "HTTP_UPDATE_FAILD Error (-1): HTTP error: connection refused"  # docs/scenarios.md, "Trust"
LOCAL = ("--address", "127.0.0.1")
pytestmark = pytest.mark.slow  # each test runs `rig check-server` against real servers


def test_the_rigs_own_server_is_clean(pki: Pki, rig_server, check_server) -> None:
    server, url = rig_server(pki.dns())
    checked = check_server(url, pki.authority().cert_pem, *LOCAL)

    assert checked.status == 0, checked.out
    assert checked.verdicts() == {V2: "HTTP_UPDATE_OK", V3: "HTTP_UPDATE_OK"}
    assert checked.findings() == []
    assert checked.report["offered_version"] == OFFERED
    for profile in (V2, V3):
        answer = checked.profile(profile)["answer"]
        assert (answer["status"], answer["framing"]) == (200, "content-length")
        assert answer["x_md5"] == hashlib.md5(offered_image()).hexdigest()
    # The server's record: only GETs; each profile's check downloaded the image whole, the old
    # device's probe was offered it (and hung up after the headers: on loopback the kernel takes
    # the whole body all the same), the device on 0.2 was told 304.
    requests = server.log.requests()
    assert {r.method for r in requests} == {"GET"}
    by_version = {}
    for request in requests:
        by_version.setdefault(request.header("x-ESP32-version"), []).append(request)
    assert [(r.status, r.complete) for r in by_version["0.1"]] == [(200, True)] * 2
    assert [r.status for r in by_version["0.0.0"]] == [200, 200]
    assert [r.status for r in by_version[OFFERED]] == [304, 304]
    # The request in the report is the one the server received, in wire order.
    headers_3 = [name for name, _ in checked.profile(V3)["request"]["headers"]]
    received_3 = next(r for r in by_version["0.1"] if r.header("x-ESP32-BASE-MAC"))
    assert headers_3 == [name for name, _ in received_3.headers]


def test_nginx_serving_a_file_is_an_update_loop(pki: Pki, nginx, check_server) -> None:
    served = nginx(pki.dns(), offered_image())
    url = f"https://{pki.hostname}:{served.port}/update"
    checked = check_server(url, pki.authority().cert_pem, *LOCAL)

    assert checked.verdicts() == {V2: "HTTP_UPDATE_OK", V3: "HTTP_UPDATE_OK"}
    loop = [f for f in checked.findings() if f["probe"] == "update loop"]
    assert [(f["severity"], f["profile"]) for f in loop] == [("warning", "")]
    assert f"already on the offered version {OFFERED}" in loop[0]["sentence"]
    assert checked.status == 0  # an update loop does not keep a device from updating...
    assert check_server(url, pki.authority().cert_pem, *LOCAL, "--strict").status == 1  # ...unless --strict
    # nginx's access log: a device on 0.2 was given the file again (200), only GETs.
    logged = served.requests()
    assert {r["method"] for r in logged} == {"GET"}
    assert {r["status"] for r in logged if r["esp32"] == OFFERED} == {200}


def test_the_seed_tutorials_express_server_never_offers_an_update(pki: Pki, seed_express, check_server) -> None:
    served = seed_express(pki.dns(), offered_image())
    checked = check_server(f"https://{pki.hostname}:{served.port}/update", pki.authority().cert_pem, *LOCAL)

    assert checked.status == 1, checked.out
    assert checked.verdicts() == {V2: "HTTP_UPDATE_NO_UPDATES", V3: "HTTP_UPDATE_NO_UPDATES"}
    old = [f for f in checked.findings("blocks") if f["probe"] == "old device"]
    assert len(old) == 1 and "answers 304 to a device on 0.0.0" in old[0]["sentence"]
    assert "x-esp8266-version" in old[0]["sentence"]
    # The server's own lines: every device sent x-ESP32-version (0.1 and 0.0.0), none the
    # header it reads, and each got 304.
    logged = served.requests()
    assert {(r["method"], r["status"], r["x-esp8266-version"]) for r in logged} == {("GET", 304, None)}
    assert {r["x-ESP32-version"] for r in logged} == {"0.1", "0.0.0"}


def test_expired_certificate_stock_cores_update_the_date_check_refuses(pki: Pki, rig_server, check_server) -> None:
    server, url = rig_server(pki.expired())
    stock = check_server(url, pki.authority().cert_pem, *LOCAL)
    # docs/scenarios.md, "Expired, date check off": the stock stack accepts it.
    assert stock.verdicts() == {V2: "HTTP_UPDATE_OK", V3: "HTTP_UPDATE_OK"}
    assert stock.status == 0
    expired = [f for f in stock.findings() if f["probe"] == "certificate"]
    assert len(expired) == 1 and expired[0]["severity"] == "warning" and "expired on" in expired[0]["sentence"]
    assert stock.report["certificate"]["days_left"] < 0
    assert stock.report["certificate"]["stock_core_notices_dates"] is False

    dated = check_server(url, pki.authority().cert_pem, *LOCAL, "--date-check")
    # "Expired, date check on": cert_expired, no update, exit 1.
    assert all(line.startswith("Certificate: expired on ") for line in dated.verdicts().values())
    assert dated.status == 1
    # The server's record for the second run: the date-checking devices' connections sent no
    # request from 0.1 (only the two from the stock run did).
    from_current = [r for r in server.log.requests() if r.header("x-ESP32-version") == "0.1"]
    assert len(from_current) == 2


def test_certificate_from_another_ca_is_refused_by_both(pki: Pki, rig_server, check_server) -> None:
    server, url = rig_server(pki.other_ca())
    checked = check_server(url, pki.authority().cert_pem, *LOCAL)

    assert checked.status == 1
    assert checked.verdicts() == {V2: REFUSED, V3: REFUSED}
    for profile in (V2, V3):
        tls = checked.profile(profile)["tls"]
        assert (tls["verdict"], tls["alert_sent"], tls["error"]["code"]) == ("refused", "unknown_ca", -9984)
        assert checked.profile(profile)["request"] is None
    # The server's record: handshakes the devices ended with unknown_ca, and not one request.
    assert {c.tls.alert for c in server.log.handshake_failures()} == {"unknown_ca"}
    assert server.log.requests() == []


def test_ip_address_certificate_strands_2_0_only(pki: Pki, rig_server, check_server) -> None:
    server, _ = rig_server(pki.ip("127.0.0.1"))
    url = f"https://127.0.0.1:{server.listeners['main'].port}/update"
    checked = check_server(url, pki.authority().cert_pem)

    # docs/scenarios.md, "Certificate for an IP address": 2.0 refuses (bad_certificate), 3 updates.
    assert checked.verdicts() == {V2: REFUSED, V3: "HTTP_UPDATE_OK"}
    assert checked.profile(V2)["tls"]["alert_sent"] == "bad_certificate"
    assert checked.status == 1
    blocking = checked.findings("blocks")
    assert [f["profile"] for f in blocking] == [V2]
    assert "IP-address subjectAltName" in blocking[0]["sentence"]
    assert {c.tls.alert for c in server.log.handshake_failures()} == {"bad_certificate"}
    assert {r.header("x-ESP32-BASE-MAC") is not None for r in server.log.requests()} == {True}  # 3.x's only


def test_tls_1_3_only_server_strands_both(pki: Pki, nginx, check_server) -> None:
    served = nginx(pki.dns(), offered_image(), protocols="TLSv1.3")
    checked = check_server(f"https://{pki.hostname}:{served.port}/update", pki.authority().cert_pem, *LOCAL)

    fatal = "HTTP_UPDATE_FAILD Error (-1): HTTP error: connection refused"
    assert checked.verdicts() == {V2: fatal, V3: fatal}
    for profile in (V2, V3):
        assert checked.profile(profile)["tls"]["error"]["code"] == -0x7780  # a fatal alert from the server
    assert checked.status == 1
    assert all("TLS 1.3-only" in f["sentence"] for f in checked.findings("blocks"))
    # nginx's logs: no request answered; it refused the devices' protocol.
    assert served.requests() == []
    assert "unsupported protocol" in served.error_log.read_text()


def _retarget(image: bytes, chip_id: int) -> bytes:
    """The same app, its header saying another chip (checksum and SHA-256 made again)."""
    return dataclasses.replace(firmware.parse_image(image), chip_id=chip_id).to_bytes()


GOOD = offered_image()
IMAGE_FAULTS = {  # the served file, its x-MD5 ("": the right one, None: none), the line, a finding's words
    "another chip": (_retarget(GOOD, 9), "",
                     "HTTP_UPDATE_FAILD Error (9): Update error: Could Not Activate The Firmware", "ESP32-S3"),
    "not an app": (b"<!DOCTYPE html><html>captive portal</html>", "",
                   "HTTP_UPDATE_FAILD Error (-106): Verify Bin Header Failed", None),
    "too large": (GOOD + b"\0" * (0x140001 - len(GOOD)), "", "HTTP_UPDATE_FAILD Error (-100): Not Enough space", None),
    "wrong x-MD5": (GOOD, hashlib.md5(b"other").hexdigest(),
                    "HTTP_UPDATE_FAILD Error (7): Update error: MD5 Check Failed", "the core compares"),
    "no x-MD5": (GOOD, None, "HTTP_UPDATE_OK", "no x-MD5 header"),
}


@pytest.mark.parametrize("case", list(IMAGE_FAULTS))
def test_image_faults_nginx(case: str, pki: Pki, nginx, check_server) -> None:
    """The image probes, each with the device line docs/scenarios.md gives for the fault."""
    image, md5, line, said = IMAGE_FAULTS[case]
    served = nginx(pki.dns(), image, md5=md5)
    checked = check_server(f"https://{pki.hostname}:{served.port}/update", pki.authority().cert_pem, *LOCAL,
                           "--profile", "arduino-esp32-2.0")
    assert checked.verdicts() == {V2: line}
    assert checked.status == (0 if case == "no x-MD5" else 1)
    if said:
        assert any(said in f["sentence"] for f in checked.findings()), checked.findings()
    assert {r["method"] for r in served.requests()} == {"GET"}


def test_mistakes_are_one_sentence(tmp_path, pki: Pki) -> None:
    """A URL the device cannot use, a host that does not resolve, a CA file that is not there:
    one sentence, exit status 2, nothing asked of any server."""
    ca = pki.authority().cert_pem
    cases = {
        ("http://ota.local/update", "--ca", str(ca)): "is not an https:// URL",
        ("https://no-such-host.invalid/update", "--ca", str(ca)): "does not resolve here; pass --address",
        ("https://ota.local/update", "--ca", str(tmp_path / "none.pem")): "no such file",
        ("https://ota.local/update", "--ca", str(ca), "--mac", "24:6f"): "is not six colon-separated hex bytes",
    }
    for argv, said in cases.items():
        done = subprocess.run([sys.executable, "-m", "ota_rig.cli", "check-server", *argv, "--version", "0.1"],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, (argv, done.stderr)
        assert said in done.stderr and len(done.stderr.strip().splitlines()) == 1, (argv, done.stderr)
