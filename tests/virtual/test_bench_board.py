"""A board on a bench: found by its MAC among several ports, locked against a second session,
and followed through its port leaving and rejoining the host. Twins on ptys stand in for USB
boards; `USB 0` / `USB 1` on a twin's wires pull and replug its cable."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from ota_rig.bench.board import BoardError, PortLock, VirtualBoard, find_by_mac, scan_ports
from ota_rig.bench.flash import Esptool
from ota_rig.bench.monitor import Monitor
from ota_rig.build.arduino_cli import ArduinoCliBuilder
from ota_rig.build.preflight import PreflightError
from ota_rig.scenario import OtaScenario
from ota_rig.server.pki import Pki

pytestmark = pytest.mark.virtual

ROOT = Path(__file__).resolve().parents[2]
MACS = ("24:6f:28:00:00:01", "24:6f:28:00:00:02")


@pytest.fixture
def two_twins(tmp_path: Path):
    with VirtualBoard(tmp_path / "a", transport="pty", mac=MACS[0]) as a, \
         VirtualBoard(tmp_path / "b", transport="pty", mac=MACS[1]) as b:
        for twin in (a, b):  # a pty has no DTR/RTS for esptool's reset: the wires do it
            twin.enter_bootloader()
        yield a, b


@pytest.fixture
def silent_port():
    """A port with nothing behind it, as a USB-serial adapter with no board on it."""
    master, slave = os.openpty()
    yield os.ttyname(slave)
    os.close(slave)
    os.close(master)


def test_the_board_with_the_asked_mac_is_found_among_several_ports(two_twins, silent_port) -> None:
    a, b = two_twins
    assert find_by_mac(MACS[1].upper(), [silent_port, a.port, b.port]) == b.port
    assert find_by_mac(MACS[0], [b.port, a.port]) == a.port


def test_a_mac_no_port_answers_with_is_one_sentence_listing_what_each_port_said(
        two_twins, silent_port, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = two_twins
    monkeypatch.setenv("OTA_RIG_LOCK_DIR", str(tmp_path / "locks"))
    with PortLock(b.port):  # another session holds b: the scan must not reset it
        with pytest.raises(BoardError) as caught:
            find_by_mac("24:6f:28:99:99:99", [a.port, b.port, silent_port])
    message = str(caught.value)
    assert message.startswith("no board with MAC 24:6f:28:99:99:99 on the scanned ports")
    assert f"{a.port}: {MACS[0]}" in message
    assert f"{b.port}: not asked (in use by another test session)" in message
    assert f"{silent_port}: no answer (no sync" in message
    # esptool uploaded its stub to a; it never spoke to b.
    assert "stub running" in (a.workdir / "twin.log").read_text()
    assert "stub running" not in (b.workdir / "twin.log").read_text()


def test_scanned_ports_expand_globs_keep_urls_and_count_a_linked_device_once(tmp_path: Path, silent_port) -> None:
    (tmp_path / "by-id").mkdir()
    (tmp_path / "by-id" / "usb-Silicon_Labs_CP2102-if00").symlink_to(silent_port)
    (tmp_path / "ttyUSB7").symlink_to(silent_port)
    found = scan_ports([str(tmp_path / "ttyUSB*"), str(tmp_path / "by-id" / "*"), "rfc2217://10.0.0.5:4000"])
    assert len([port for port in found if "://" not in port]) == 1
    assert "rfc2217://10.0.0.5:4000" in found


def test_a_second_session_is_refused_a_locked_board_until_the_first_ends(tmp_path: Path, silent_port) -> None:
    link = tmp_path / "board"
    link.symlink_to(silent_port)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from ota_rig.bench.board import PortLock; "
         f"lock = PortLock({silent_port!r}, {str(tmp_path)!r}).acquire(); print('held', flush=True); time.sleep(60)"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(BoardError) as caught:
            PortLock(str(link), tmp_path).acquire()  # the same device under another name
        assert str(caught.value) == (f"the board on {link} is in use by another test session "
                                     f"(pid {holder.pid}: -c)")
    finally:
        holder.kill()
        holder.wait()
    with PortLock(str(link), tmp_path):  # the kernel dropped the dead session's lock
        pass


def test_a_lock_file_planted_as_a_link_is_refused_and_its_target_kept(tmp_path: Path, silent_port) -> None:
    """Before, the lock file was opened through a symbolic link and its target truncated."""
    victim = tmp_path / "victim.txt"
    victim.write_text("somebody's file\n")
    lock = PortLock(silent_port, tmp_path / "locks")
    lock.path.symlink_to(victim)
    with pytest.raises(BoardError, match="is a symbolic link, which the rig never follows"):
        lock.acquire()
    assert victim.read_text() == "somebody's file\n"


def test_the_default_lock_folder_must_be_the_users_alone(tmp_path: Path, monkeypatch, silent_port) -> None:
    monkeypatch.delenv("OTA_RIG_LOCK_DIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with PortLock(silent_port) as lock:  # made 0700 on first use
        assert stat.S_IMODE(os.stat(lock.path.parent).st_mode) == 0o700
    os.chmod(lock.path.parent, 0o777)  # as a folder somebody else made for everyone would be
    with pytest.raises(BoardError, match="is not a folder only you can write"):
        PortLock(silent_port)


def test_a_port_that_leaves_the_host_is_reopened_when_it_comes_back(tmp_path: Path) -> None:
    with VirtualBoard(tmp_path, transport="pty", mac=MACS[0]) as twin:
        twin.enter_bootloader()
        twin.unplug()
        assert not Path(twin.port).exists()
        threading.Timer(0.8, twin.plug).start()
        started = time.monotonic()
        twin.open(reappear=5).close()
        assert 0.5 < time.monotonic() - started < 5
        # The chip behind the new port is the same one: the ROM loader answers esptool there.
        assert Esptool(twin.port, before="no-reset", after="no-reset").read_mac() == MACS[0]

        twin.unplug()
        with pytest.raises(BoardError) as caught:
            twin.open(reappear=0.5)
        said = str(caught.value)
        assert said.startswith(f"cannot open the board's port {twin.port} (waited 0.5 s for it to come back): ")


def test_the_monitor_follows_the_board_through_a_replug(tmp_path: Path, artifacts) -> None:
    with VirtualBoard(tmp_path / "board", transport="pty") as twin:
        twin.enter_bootloader()
        Esptool(twin.port, before="no-reset", after="no-reset").write(artifacts.flash_files())
        line = twin.open()
        twin.reset(line, discard_pending=True)
        with Monitor(line, tmp_path / "serial.log", reopen=twin.open) as monitor:
            monitor.expect("firmware_version", timeout=5, version="0.1")
            twin.unplug()
            threading.Timer(0.5, twin.plug).start()
            deadline = time.monotonic() + 5
            while monitor.reopened == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            twin.reset(monitor.port)
            monitor.expect_sequence(
                [("reset", {"reason": "POWERON_RESET"}), ("firmware_version", {"version": "0.1"})], timeout=5
            )
            assert monitor.reopened == 1 and monitor.error is None
        monitor.port.close()
    log = (tmp_path / "serial.log").read_text()
    assert log.count("Firmware version 0.1") == 2, log


@pytest.mark.parametrize(
    ("fqbn", "sentence"),
    [
        (
            "esp32:esp32:esp32s3:PartitionScheme=default",
            "ota_https.ino.bin is built for ESP32-S3 (image chip id 0x0009) but the board is an ESP32",
        ),
        ("esp32:esp32:esp32:PartitionScheme=no_ota", "ota_https.ino.partitions.bin has no second OTA slot"),
    ],
    ids=["other-chip", "no-ota-scheme"],
)
def test_a_wrong_build_is_refused_before_esptool_writes_anything(
    tmp_path: Path, monkeypatch, fqbn: str, sentence: str
) -> None:
    monkeypatch.setenv("FAKE_ARDUINO_CLI_DATA", str(tmp_path / "arduino15"))
    builder = ArduinoCliBuilder(tmp_path / "builds", cli=str(ROOT / "tests" / "fakes" / "arduino-cli"), fqbn=fqbn)
    with VirtualBoard(tmp_path / "board", transport="pty") as twin:
        with OtaScenario(tmp_path / "scenario", twin, Pki(tmp_path / "pki"), builder, builder.profile) as ota:
            wrong = ota.build("0.1", ota.listen(ota.pki.dns()))
            with pytest.raises(PreflightError) as caught:
                ota.flash(wrong)
            assert str(caught.value).startswith(sentence)
            assert not (ota.folder / "esptool.log").exists()
            # The chip's flash is as erased as it came: the bootloader's sector reads back empty.
            assert ota.read_flash(0x1000, 0x1000) == b"\xff" * 0x1000
