"""SketchConfig and the virtual builder: the configuration travels inside a real image."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ota_rig.build.virtual_builder import VirtualBuilder
from ota_rig.device import firmware
from ota_rig.device.sketch_config import SketchConfig

CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def config(**changes: object) -> SketchConfig:
    values = dict(version="0.1", update_url="https://ota.local:8443/update", ca_bundle=CA)
    return SketchConfig(**{**values, **changes})


def test_the_config_is_read_back_from_the_app_image_esptool_calls_valid(tmp_path: Path) -> None:
    wanted = config(check_dates=False, profile="arduino-esp32-3")
    artifacts = VirtualBuilder(tmp_path).build(wanted)
    image = firmware.parse_image(artifacts.app.read_bytes())
    assert SketchConfig.from_image(image) == wanted
    assert image.descriptor.idf_version == "v5.5.4-dirty"  # the core's, whatever the sketch
    info = subprocess.run([sys.executable, "-m", "esptool", "image-info", str(artifacts.app)],
                          capture_output=True, text=True)
    assert "Checksum: 0x" in info.stdout and "(valid)" in info.stdout, info.stdout


def test_builds_are_cached_by_configuration(tmp_path: Path) -> None:
    builder = VirtualBuilder(tmp_path)
    first = builder.build(config())
    stamp = first.app.stat().st_mtime_ns
    assert builder.build(config()) == first and first.app.stat().st_mtime_ns == stamp
    other = builder.build(config(update_url="https://ota.local:9443/update"))
    assert other.app.parent != first.app.parent
    assert [p.name for _, p in first.flash_files()] == [
        "ota_https.ino.bootloader.bin", "ota_https.ino.partitions.bin", "boot_app0.bin", "ota_https.ino.bin"]


def test_the_generated_header_is_one_c_string_per_setting() -> None:
    header = config(wifi_password='pa"ss\\word').header()
    assert '#define OTA_CA_BUNDLE "-----BEGIN CERTIFICATE-----\\nMIIB\\n-----END CERTIFICATE-----\\n"' in header
    assert '#define OTA_WIFI_PASSWORD "pa\\"ss\\\\word"' in header
    assert "#define OTA_CHECK_DATES 1" in header
    assert '#define OTA_SIGNING_KEY ""' in header  # no key: the stock httpUpdate path


@pytest.mark.parametrize("bad", [dict(profile="arduino-esp32-9"), dict(debug_level=6)])
def test_impossible_configurations_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError):
        config(**bad)


def test_an_image_without_configuration_says_so() -> None:
    foreign = firmware.parse_image(firmware.build_app_image(firmware.AppDescriptor("1.0", "another_app")))
    with pytest.raises(ValueError, match="no sketch configuration"):
        SketchConfig.from_image(foreign)
