"""The app the second stage starts: ota_rig/sketches/ota_https, run from the configuration built into
the image it boots.

The sketch's flow (its comment block is the specification, ota_rig/device/printed_lines.py the lines):
setup() prints the version, joins Wi-Fi, waits for NTP time and says whether it checks
certificate dates (and when it was built with setInsecure() or a signing key); loop() checks
for an update every 10 s: with the date check on it connects first and reads the server
certificate's dates against NTP time, then runs httpUpdate on the same connection with
rebootOnUpdate(false), prints the core's result and restarts after HTTP_UPDATE_OK. Built with
a signing key, it runs its own verified download instead (verified_update.py). The twin's
network is the host's loopback: every hostname resolves to 127.0.0.1, Wi-Fi is joined at once
and NTP time is the host's clock.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from urllib.parse import urlsplit

from ota_rig.device import profiles
from ota_rig.device.firmware import Image, Partition, PartitionTable
from ota_rig.device.sketch_config import SketchConfig
from ota_rig.virtual import otadata
from ota_rig.virtual.arduino import Core
from ota_rig.virtual.chip import Chip
from ota_rig.virtual.httpupdate import (
    CONNECT_TIMEOUT,
    CONNECTION_REFUSED,
    FAILED,
    HTTPCLIENT_ERRORS,
    OK,
    HttpUpdate,
    RunningApp,
)
from ota_rig.virtual.secure_client import SecureClient
from ota_rig.virtual.verified_update import VerifiedUpdate, report_failure

log = logging.getLogger(__name__)

CHECK_INTERVAL = 10  # seconds between update checks, as in the seed sketch
DEVICE_IP = "127.0.0.1"
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def run(chip: Chip, table: PartitionTable, partition: Partition, image: Image) -> None:
    otadata.mark_valid(chip, table, partition)  # the core's initArduino(), before setup()
    try:
        config = SketchConfig.from_image(image)
    except ValueError as err:
        # Not a build of the reference sketch: the twin knows no other app, so it idles silently.
        log.info("app in %s: %s; the twin cannot run it", partition.name, err)
        while True:
            chip.sleep(3600)
    profile = profiles.get(config.profile)
    log.info("app %s (%s) running from %s", config.version, profile.name, partition.name)
    core = Core(chip, profile, config.debug_level)
    setup(core, config)
    running = RunningApp(table, partition, image, chip.flash.read(partition.offset, image.length))
    http_update = HttpUpdate(core, running, chip_size=chip.flash.size)
    verified = VerifiedUpdate(core, http_update, config) if config.signing_key else None
    while True:
        check_for_update(core, config, http_update, verified)
        core.report("retry", seconds=CHECK_INTERVAL)
        core.delay(CHECK_INTERVAL)


def setup(core: Core, config: SketchConfig) -> None:
    core.report("firmware_version", version=config.version)
    core.report("wifi_connecting", ssid=config.wifi_ssid)
    core.report("wifi_connected", ip=DEVICE_IP)
    core.report("ntp_waiting", server=config.ntp_server)
    now = utc_now()
    core.set_time(now.timestamp())
    core.report("ntp_synced", time=now.strftime(TIME_FORMAT))
    if not config.check_dates:
        core.report("date_check_off")
    if config.insecure:
        core.report("insecure_mode")
    if config.signing_key:
        core.report("signature_required")


def check_for_update(core: Core, config: SketchConfig, http_update: HttpUpdate,
                     verified: VerifiedUpdate | None,
                     new_client: Callable[[Core, str | None], SecureClient] = SecureClient) -> None:
    """One pass of loop(). `new_client(core, ca_bundle)` makes the sketch's WiFiClientSecure (a
    device client passes one that records what goes over it: ota_rig.virtual.device_client)."""
    core.report("update_checking", url=config.update_url)
    with new_client(core, None if config.insecure else config.ca_bundle) as client:
        if config.check_dates and not dates_acceptable(core, config, client):
            return
        if verified is not None:
            if verified.update(client):
                restart_into_the_new_firmware(core)
            return
        result = http_update.update(client, config.update_url, config.version)
        if result == FAILED:
            report_failure(core, client, http_update.last_error, http_update.last_error_string)
        elif result == OK:
            restart_into_the_new_firmware(core)
        else:
            core.report("no_updates")


def restart_into_the_new_firmware(core: Core) -> None:
    core.report("update_ok")
    core.report("restarting")
    core.restart()


def dates_acceptable(core: Core, config: SketchConfig, client: SecureClient) -> bool:
    """The sketch's own check, which the stock stack never makes: connect, compare the server
    certificate's validity with NTP time, and keep the connection for httpUpdate to reuse."""
    parts = urlsplit(config.update_url)
    if not client.connect(parts.hostname or "", parts.port or 443, timeout=CONNECT_TIMEOUT):
        # What HTTPUpdate would report for a failed connect: HTTPClient::errorToString(-1).
        report_failure(core, client, CONNECTION_REFUSED, f"HTTP error: {HTTPCLIENT_ERRORS[CONNECTION_REFUSED]}")
        return False
    certificate = client.peer_certificate
    now = utc_now()
    not_before, not_after = certificate.not_before, certificate.not_after  # both UTC
    if now > not_after:
        core.report("cert_expired", not_after=not_after.strftime(TIME_FORMAT))
    elif now < not_before:
        core.report("cert_not_yet_valid", not_before=not_before.strftime(TIME_FORMAT))
    else:
        core.report("cert_dates_ok", not_before=not_before.strftime(TIME_FORMAT),
                    not_after=not_after.strftime(TIME_FORMAT))
        return True
    client.stop()
    return False


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)

