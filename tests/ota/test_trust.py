"""Whom the device trusts: a certificate from another CA, certificates for an IP address, and an
expired certificate. The verdicts and why are in shared/reference/esp32-ota-device.md, sections
8 and 9."""

from __future__ import annotations

import pytest

from .conftest import BOOT_TIMEOUT, refused_before_any_request

VERIFY_FAILED = "X509 - Certificate verification failed, e.g. CRL, CA or signature check failed"


def expect_tls_refusal(monitor) -> None:
    """The device lines of a refused handshake at debug level error (section 8.1)."""
    handle_error = monitor.expect("core_log", timeout=BOOT_TIMEOUT, level="E", function="_handle_error")
    assert handle_error.fields["message"].endswith(f"(-9984) {VERIFY_FAILED}")
    monitor.expect_sequence([
        ("update_failed", {"code": "-1", "text": "HTTP error: connection refused"}),
        ("tls_error", {"code": "-9984", "text": VERIFY_FAILED}),
    ], timeout=BOOT_TIMEOUT)


def test_certificate_from_another_ca_is_refused_and_the_old_firmware_stays(ota, pki) -> None:
    listener = ota.listen(pki.other_ca())
    old = ota.build("0.1", listener)
    ota.offer(ota.build("0.2", listener))

    monitor = ota.start(old)
    expect_tls_refusal(monitor)
    assert refused_before_any_request(ota).tls.alert == "unknown_ca"

    ota.reset()
    monitor.expect("firmware_version", timeout=BOOT_TIMEOUT, version="0.1")


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
        assert refused_before_any_request(ota).tls.alert == "bad_certificate"
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


def test_expired_certificate_is_refused_by_the_sketchs_date_check(ota, pki) -> None:
    cert = pki.expired()
    listener = ota.listen(cert)
    old = ota.build("0.1", listener)
    ota.offer(ota.build("0.2", listener))

    monitor = ota.start(old)
    monitor.expect("cert_expired", timeout=BOOT_TIMEOUT,
                   not_after=cert.not_after.strftime("%Y-%m-%d %H:%M:%S"))
    monitor.not_matching("update_ok")
    (connection,) = ota.server_log.connections()
    assert connection.tls.ok and connection.requests == []


def test_expired_certificate_is_accepted_by_the_stock_stack_when_the_date_check_is_off(ota, pki) -> None:
    """This is the stock behaviour, not a rig fault: arduino-esp32 builds Mbed TLS without
    CONFIG_MBEDTLS_HAVE_TIME_DATE, so certificate dates are never checked (section 9.4)."""
    listener = ota.listen(pki.expired())
    old = ota.build("0.1", listener, check_dates=False)
    ota.offer(ota.build("0.2", listener, check_dates=False))

    monitor = ota.start(old)
    monitor.expect_sequence(["date_check_off", "update_ok", ("firmware_version", {"version": "0.2"})],
                            timeout=2 * BOOT_TIMEOUT)
    assert len(ota.server_log.downloads()) == 1

