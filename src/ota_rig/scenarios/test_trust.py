"""Whom the device trusts: certificates from another CA, for another name, self-signed, for an
IP address, expired or not yet valid; a CA rotation; and what setInsecure() gives away. The
verdicts and why are in shared/reference/esp32-ota-device.md, sections 8 and 9; docs/scenarios.md
has one row per test.

A refused server gets fixed afterwards (the right certificate on the same port): the device,
reset, still runs its old firmware, then takes the update."""

from __future__ import annotations

import time

import pytest

from .evidence import BOOT_TIMEOUT, assert_boots_slot_holding, recovers_once_fixed, refused_before_any_request

VERIFY_FAILED = "X509 - Certificate verification failed, e.g. CRL, CA or signature check failed"


def expect_tls_refusal(monitor) -> None:
    """The device lines of a refused handshake at debug level error (section 8.1)."""
    handle_error = monitor.expect("core_log", timeout=BOOT_TIMEOUT, level="E", function="_handle_error")
    assert handle_error.fields["message"].endswith(f"(-9984) {VERIFY_FAILED}")
    monitor.expect_sequence([
        ("update_failed", {"code": "-1", "text": "HTTP error: connection refused"}),
        ("tls_error", {"code": "-9984", "text": VERIFY_FAILED}),
    ], timeout=BOOT_TIMEOUT)


def refused_then_fixed(ota, pki, cert, alert: str, url_host: str | None = None) -> None:
    """A device on 0.1 meets a server presenting `cert` (at `url_host`, default the
    certificate's own host): the handshake is refused with `alert` before any request. Then
    the server presents the right certificate on the same port, and the device updates."""
    listener = ota.listen(cert)
    url = f"https://{url_host}:{listener.port}/update" if url_host else ota.server.url(listener.name)
    old, new = ota.build("0.1", url=url), ota.build("0.2", url=url)
    ota.offer(new)

    monitor = ota.start(old)
    expect_tls_refusal(monitor)
    assert refused_before_any_request(ota).alert == alert

    recovers_once_fixed(ota, monitor, lambda: setattr(listener, "cert", pki.dns(url_host)), new)
    assert ota.server_log.downloads()[0].header("x-ESP32-version") == "0.1"


def test_certificate_from_another_ca_is_refused(ota, pki) -> None:
    refused_then_fixed(ota, pki, pki.other_ca(), "unknown_ca")


def test_certificate_for_another_hostname_is_refused(ota, pki) -> None:
    """The main CA signed it, but for update.example.com: Mbed TLS checks the URL's host
    against the SAN (BADCERT_CN_MISMATCH)."""
    refused_then_fixed(ota, pki, pki.dns("update.example.com"), "bad_certificate", url_host=pki.hostname)


def test_self_signed_certificate_is_refused(ota, pki) -> None:
    """Right name, but signed by its own key: no CA in the device's bundle vouches for it."""
    refused_then_fixed(ota, pki, pki.self_signed(), "unknown_ca")


@pytest.mark.each_profile
def test_certificate_for_an_ip_address(ota, pki, profile) -> None:
    """trustme puts the IP in an IP-address SAN. Mbed TLS before 3.5 (arduino-esp32 2.0.x)
    matches only DNS SANs, so it refuses the name; 3.5+ (arduino-esp32 3.1+) accepts it."""
    listener = ota.listen(pki.ip())
    old = ota.build("0.1", listener)
    assert ota.server.url(listener.name).startswith(f"https://{pki.address}:")
    ota.offer(ota.build("0.2", listener))

    monitor = ota.start(old)
    if profile == "arduino-esp32-2.0":
        expect_tls_refusal(monitor)
        assert refused_before_any_request(ota).alert == "bad_certificate"
    else:
        monitor.expect_sequence(["update_ok", ("firmware_version", {"version": "0.2"})], timeout=2 * BOOT_TIMEOUT)
        assert len(ota.server_log.downloads()) == 1


@pytest.mark.each_profile
def test_certificate_naming_the_ip_only_in_its_common_name_is_accepted(ota, pki) -> None:
    """With no SAN extension at all, every Mbed TLS compares the CN with the URL host as text."""
    listener = ota.listen(pki.cn_only_ip())
    old = ota.build("0.1", listener)
    ota.offer(ota.build("0.2", listener))

    monitor = ota.start(old)
    monitor.expect_sequence(["update_ok", ("firmware_version", {"version": "0.2"})], timeout=2 * BOOT_TIMEOUT)
    assert len(ota.server_log.downloads()) == 1


DATED = pytest.mark.parametrize(("kind", "event", "field"), [
    ("expired", "cert_expired", "not_after"),
    ("not_yet_valid", "cert_not_yet_valid", "not_before"),
], ids=["expired", "not-yet-valid"])


@DATED
def test_certificate_out_of_its_dates_is_refused_by_the_sketchs_date_check(ota, pki, kind, event, field) -> None:
    cert = getattr(pki, kind)()
    listener = ota.listen(cert)
    old, new = ota.build("0.1", listener), ota.build("0.2", listener)
    ota.offer(new)

    monitor = ota.start(old)
    monitor.expect(event, timeout=BOOT_TIMEOUT, **{field: getattr(cert, field).strftime("%Y-%m-%d %H:%M:%S")})
    monitor.not_matching("update_ok")
    (connection,) = ota.server_log.connections()
    assert connection.tls.ok and connection.requests == []
    recovers_once_fixed(ota, monitor, lambda: setattr(listener, "cert", pki.dns()), new)


@DATED
def test_certificate_out_of_its_dates_is_accepted_by_the_stock_stack_when_the_date_check_is_off(
        ota, pki, kind, event, field) -> None:
    """This is the stock behaviour, not a rig fault: arduino-esp32 builds Mbed TLS without
    CONFIG_MBEDTLS_HAVE_TIME_DATE, so certificate dates are never checked (section 9.4)."""
    listener = ota.listen(getattr(pki, kind)())
    old = ota.build("0.1", listener, check_dates=False)
    ota.offer(ota.build("0.2", listener, check_dates=False))

    monitor = ota.start(old)
    monitor.expect_sequence(["date_check_off", "update_ok", ("firmware_version", {"version": "0.2"})],
                            timeout=2 * BOOT_TIMEOUT)
    assert len(ota.server_log.downloads()) == 1
    monitor.not_matching(event)


def test_ca_rotation_a_device_trusting_old_and_new_ca_follows_the_server(ota, pki) -> None:
    """The drill: firmware trusting both CAs goes out first; then the server moves to the new
    CA; devices that took that firmware keep updating."""
    old_ca, new_ca = pki.authority("main"), pki.authority("new")
    both = pki.bundle(old_ca, new_ca)
    listener = ota.listen(pki.dns())
    first, bridge = ota.build("0.1", listener), ota.build("0.2", listener, ca_bundle=both)
    ota.offer(bridge)
    monitor = ota.start(first)
    monitor.expect_sequence([("firmware_version", {"version": "0.1"}), "update_ok",
                             ("firmware_version", {"version": "0.2"}), "no_updates"], timeout=2 * BOOT_TIMEOUT)

    listener.cert = pki.dns(ca="new")
    rotated = ota.build("0.3", listener, ca_bundle=pki.bundle(new_ca))
    ota.offer(rotated)
    ota.reset()
    monitor.expect_sequence([("firmware_version", {"version": "0.2"}), "update_ok",
                             ("firmware_version", {"version": "0.3"}), "no_updates"], timeout=2 * BOOT_TIMEOUT)

    served = [(c.tls.certificate, r.header("x-ESP32-version"), r.status)
              for c in ota.server_log.connections() for r in c.requests]
    assert served == [("dns-ota.local", "0.1", 200), ("dns-ota.local", "0.2", 304),
                      ("dns-ota.local-new-ca", "0.2", 200), ("dns-ota.local-new-ca", "0.3", 304)]
    assert_boots_slot_holding(ota, rotated)


def test_ca_rotation_a_device_trusting_only_the_old_ca_is_refused_by_the_new_server(ota, pki) -> None:
    """A device that never got the bridge firmware: once the server moves to the new CA it
    cannot update any more, until the old certificate is back."""
    refused_then_fixed(ota, pki, pki.dns(ca="new"), "unknown_ca")


def test_set_insecure_lets_an_attacker_in_the_middle_install_its_firmware(ota, pki) -> None:
    """What setInsecure() gives away. The server here plays an attacker in the middle: its
    certificate comes from a CA no device trusts (the same one the secure sketch refuses in
    test_certificate_from_another_ca_is_refused), and it serves its own firmware. A sketch built
    with setInsecure() checks nothing, so it installs that firmware and boots it."""
    attacker = ota.listen(pki.other_ca())
    victim = ota.build("0.1", attacker, insecure=True)
    planted = ota.build("6.6.6", attacker, insecure=True)
    ota.offer(planted)

    monitor = ota.start(victim)
    monitor.expect_sequence([("firmware_version", {"version": "0.1"}), "insecure_mode", "update_ok",
                             ("firmware_version", {"version": "6.6.6"})], timeout=2 * BOOT_TIMEOUT)
    (download,) = ota.server_log.downloads()
    assert download.complete and download.bytes_sent == planted.app.stat().st_size
    assert_boots_slot_holding(ota, planted)


@pytest.mark.each_profile
@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
def test_a_server_offering_only_tls_1_0_and_1_1(ota, pki, profile) -> None:
    """A legacy server. arduino-esp32 2.0.14 builds Mbed TLS 2.28 with TLS 1.0 and 1.1 enabled
    and sets no minimum version, so it updates over TLS 1.1: a downgrade nobody asked for.
    3.x (Mbed TLS 3.6, TLS 1.2 and up only) refuses the ServerHello with a protocol_version
    alert. Afterwards the server offers TLS 1.2 again and every device updates."""
    listener = ota.listen(pki.dns(), tls_versions=("TLSv1", "TLSv1.1"))
    old, new = ota.build("0.1", listener), ota.build("0.2", listener)
    ota.offer(new)

    monitor = ota.start(old)
    if profile == "arduino-esp32-2.0":
        monitor.expect_sequence(["update_ok", ("firmware_version", {"version": "0.2"})], timeout=2 * BOOT_TIMEOUT)
        download = ota.server_log.connections()[0]
        assert download.tls.version == "TLSv1.1" and download.requests[0].complete
        assert_boots_slot_holding(ota, new)
        return
    handle_error = monitor.expect("core_log", timeout=BOOT_TIMEOUT, level="E", function="_handle_error")
    assert handle_error.fields["message"].endswith("(-28288) SSL - Handshake protocol not within min/max boundaries")
    monitor.expect_sequence([
        ("update_failed", {"code": "-1", "text": "HTTP error: connection refused"}),
        ("tls_error", {"code": "-28288", "text": "SSL - Handshake protocol not within min/max boundaries"}),
    ], timeout=BOOT_TIMEOUT)
    assert refused_before_any_request(ota).alert == "protocol_version"
    recovers_once_fixed(ota, monitor, lambda: setattr(listener, "tls_versions", ()), new)


INVALID_FORMAT = "X509 - The CRT/CRL/CSR format is invalid, e.g. different type expected"


@pytest.mark.each_profile
def test_an_empty_ca_bundle_is_refused_after_tcp_before_any_tls_byte(ota, pki) -> None:
    """A sketch built with an empty CA bundle calls setCACert(""): a real, empty string, not
    NULL, so start_ssl_client() opens the TCP connection first, then Mbed TLS refuses to parse
    the bundle (-0x2180, x509_crt.c: no PEM header, and one byte is no DER certificate). The
    server sees a connection that closes without a ClientHello; the device never asks."""
    listener = ota.listen(pki.dns())
    old = ota.build("0.1", listener, ca_bundle="")
    ota.offer(ota.build("0.2", listener))

    monitor = ota.start(old)
    handle_error = monitor.expect("core_log", timeout=BOOT_TIMEOUT, level="E", function="_handle_error")
    assert "[start_ssl_client():" in handle_error.fields["message"]
    assert handle_error.fields["message"].endswith(f"(-8576) {INVALID_FORMAT}")
    monitor.expect_sequence([
        ("update_failed", {"code": "-1", "text": "HTTP error: connection refused"}),
        ("tls_error", {"code": "-8576", "text": INVALID_FORMAT}),
    ], timeout=BOOT_TIMEOUT)
    deadline = time.monotonic() + BOOT_TIMEOUT  # the device's log can come before the server's record
    while not ota.server_log.connections() and time.monotonic() < deadline:
        time.sleep(0.05)
    (connection,) = ota.server_log.connections()[:1] or [None]
    assert connection is not None, "the device opened no TCP connection"
    assert connection.requests == [] and not connection.tls.ok and connection.tls.version is None
