"""What a release engineer must know about an update server: one sentence a finding, with the
reason, from what the device clients saw (server_check.py).

A finding `blocks` when it keeps a device from updating (a refused TLS setup, a failed update,
a server that never offers the update to an ESP32, an image ESP-IDF refuses): `rig
check-server` exits 1 on those. The others are warnings (an update loop, a certificate near
its end, no x-MD5) or notes (what could not be probed).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass

from ota_rig.check.server_check import (
    CHIP_NAMES,
    OLD_VERSION,
    OTA_SLOT_SIZE,
    Answer,
    ProfileCheck,
    ServerCheck,
)
from ota_rig.virtual.mbedtls_errors import ERR_FATAL_ALERT_MESSAGE

BLOCKS, WARNING, NOTE = "blocks", "warning", "note"


@dataclass(frozen=True)
class Finding:
    """`probe` names what found it; `profile` is empty when it holds for every profile."""

    probe: str
    severity: str
    sentence: str
    profile: str = ""

    def to_json(self) -> dict[str, str]:
        return {"probe": self.probe, "severity": self.severity, "profile": self.profile, "sentence": self.sentence}


def findings(result: ServerCheck, expiry_days: int) -> list[Finding]:
    found = _merge([finding for checked in result.profiles for finding in _device(checked)], len(result.profiles))
    found += _old_device(result)
    found += _update_loop(result)
    found += _image(result)
    found += _certificate(result, expiry_days)
    return found


def _device(checked: ProfileCheck) -> list[Finding]:
    """A profile's own check: TLS refused, a rig limitation, or a failed update."""
    name, connection = checked.profile.name, checked.update_connection
    if connection is None:
        return [Finding("device", BLOCKS, "the device made no connection", name)]
    if connection.limitation:
        return [Finding("tls", NOTE, f"the twin cannot tell what the device does here: {connection.limitation}", name)]
    if connection.error:
        code, text = connection.error
        if connection.alert:
            why = "; ".join(connection.reasons) or text
            hint = ""
            if not checked.profile.ip_san_matches and _is_ip_url(connection.host):
                hint = (" (Mbed TLS before 3.5 matches no IP-address subjectAltName: name the IP in a DNS SAN or "
                        "the CN too)")
            sentence = (f"the device refuses the TLS setup and sends alert {connection.alert}: {why}{hint}; "
                        "it never asks for an update")
        elif code == ERR_FATAL_ALERT_MESSAGE:
            sentence = ("the device cannot agree on TLS with the server, which ends the handshake with a fatal alert "
                        f"({code}: {text}): the device offers TLS {_tls_range(checked)} only, so a TLS 1.3-only "
                        "server strands it")
        else:
            sentence = f"the device gets no TLS connection to the server: ({code}) {text}; it never asks for an update"
        return [Finding("tls", BLOCKS, sentence, name)]
    verdict = checked.verdict
    if verdict.name == "update_failed":
        return [Finding("device", BLOCKS, f"the device would print `{verdict.line}`: the update fails", name)]
    if verdict.name in ("cert_expired", "cert_not_yet_valid"):
        return [Finding("certificate", BLOCKS, f"with the sketch's date check the device would print `{verdict.line}`",
                        name)]
    return []


def _tls_range(checked: ProfileCheck) -> str:
    return "1.0 to 1.2" if checked.profile.oldest_tls == "TLSv1" else "1.2"


def _is_ip_url(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _old_device(result: ServerCheck) -> list[Finding]:
    """A device on OLD_VERSION must be offered the update; a 304 means the server does not read
    x-ESP32-version (the seed tutorial's server reads x-esp8266-version, which no ESP32 sends)."""
    found = []
    for checked in result.profiles:
        device = checked.old_device
        answer = Answer.from_lines(device.connections[-1].header_lines) if device and device.connections else None
        if answer is None:
            continue
        no_update = answer.status == 304 or (answer.status == 204 and checked.profile.no_content_means_no_update)
        if no_update:
            found.append(Finding(
                "old device", BLOCKS,
                f"the server answers {answer.status} to a device on {OLD_VERSION} (x-ESP32-version: {OLD_VERSION}), "
                "so no device is ever offered an update: it may read another header than x-ESP32-version (the seed "
                "tutorial's server reads x-esp8266-version, which an ESP32 never sends)", checked.profile.name))
    return _merge(found, len(result.profiles))


def _update_loop(result: ServerCheck) -> list[Finding]:
    if not result.offered_version:
        if result.image is not None:
            return [Finding("update loop", NOTE,
                            "the offered image's version cannot be read (an arduino-cli build keeps it only in the "
                            "sketch's constants; its app descriptor holds the core's lib-builder version): pass "
                            "--offered-version to probe for an update loop")]
        return []
    found = []
    for checked in result.profiles:
        device = checked.current_device
        answer = Answer.from_lines(device.connections[-1].header_lines) if device and device.connections else None
        if answer is not None and answer.status == 200:
            found.append(Finding(
                "update loop", WARNING,
                f"the server answers 200 to a device already on the offered version {result.offered_version} "
                f"({result.offered_version_source}): every device installs it again and restarts on every check, "
                "forever (an update loop; a static file server does this)", checked.profile.name))
    return _merge(found, len(result.profiles))


def _image(result: ServerCheck) -> list[Finding]:
    image = result.image
    if image is None:
        return []
    if image.problem is not None:
        return [Finding("image", BLOCKS, f"the offered file is not an ESP32 app image: {image.problem}")]
    found = []
    if image.chip_id:
        chip = CHIP_NAMES.get(image.chip_id, f"chip id {image.chip_id}")
        found.append(Finding("image", BLOCKS,
                             f"the offered image is for the {chip} (chip id {image.chip_id}), not an ESP32 (0): "
                             "ESP-IDF refuses it after the whole download (Update error 9)"))
    if len(image.data) > OTA_SLOT_SIZE:
        found.append(Finding("image", BLOCKS,
                             f"the offered image ({len(image.data)} bytes) does not fit the OTA slot of the default "
                             f"partition table ({OTA_SLOT_SIZE} bytes): the device refuses it (-100 Not Enough space)"))
    if image.x_md5 is None:
        found.append(Finding("image", WARNING,
                             "the answer has no x-MD5 header: the core installs the image without comparing a digest "
                             "of the download (ESP-IDF still checks the image's own checksum and SHA-256)"))
    elif image.x_md5 != image.md5:
        found.append(Finding("image", BLOCKS,
                             f"x-MD5 is {image.x_md5}, the image's MD5 is {image.md5}: the core compares the two as "
                             "strings (lower-case hex) after the download and refuses the update (Update error 7)"))
    return found


def _certificate(result: ServerCheck, expiry_days: int) -> list[Finding]:
    cert = result.certificate
    if cert is None:
        return [Finding("certificate", NOTE, result.certificate_error)] if result.certificate_error else []
    today = result.checked_at
    stock = ("stock arduino-esp32 checks no certificate dates (CONFIG_MBEDTLS_HAVE_TIME_DATE is off), so its "
             "devices still update; a sketch that checks them itself (the reference sketch) refuses")
    if cert.not_after < today:
        return [Finding("certificate", WARNING, f"the server's certificate expired on {_day(cert.not_after)}: {stock}")]
    if cert.not_before > today:
        return [Finding("certificate", WARNING,
                        f"the server's certificate is not valid before {_day(cert.not_before)}: {stock}")]
    days = cert.days_left(today)
    if days <= expiry_days:
        return [Finding("certificate", WARNING,
                        f"the server's certificate expires on {_day(cert.not_after)}, in {days:.0f} days "
                        f"(--expiry-days {expiry_days}): renew it before a sketch that checks dates refuses it")]
    return []


def _day(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M UTC")


def _merge(found: list[Finding], profile_count: int) -> list[Finding]:
    """One finding (no profile named) when every profile found the same."""
    if profile_count > 1 and len(found) == profile_count and len({f.sentence for f in found}) == 1:
        return [Finding(found[0].probe, found[0].severity, found[0].sentence)]
    return found
