"""`rig virtual --pty PATH` replaces only a pty link a twin left behind, never anything else
that is at PATH (before, it deleted whatever was there, the --flash file included)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.virtual

FLASH_SIZE = 4 * 1024 * 1024


def twin(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "ota_rig.cli", "virtual", *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("what", ["the flash file", "a notes file", "a folder", "a link elsewhere"])
def test_a_path_that_is_not_a_twins_link_is_refused_and_kept(tmp_path: Path, what: str) -> None:
    flash = tmp_path / "flash.bin"
    flash.write_bytes(bytes(range(256)) * (FLASH_SIZE // 256))
    target = {"the flash file": flash, "a notes file": tmp_path / "notes.txt", "a folder": tmp_path / "folder",
              "a link elsewhere": tmp_path / "link"}[what]
    if what == "a notes file":
        target.write_text("bench notes\n")
    elif what == "a folder":
        target.mkdir()
    elif what == "a link elsewhere":
        target.symlink_to(tmp_path / "notes-elsewhere.txt")
    before = {p.name: (p.is_symlink(), p.read_bytes() if p.is_file() and not p.is_symlink() else None)
              for p in tmp_path.iterdir()}
    process = twin("--flash", str(flash), "--pty", str(target))
    out, err = process.communicate(timeout=30)
    assert process.returncode == 2 and out == ""
    assert err.strip() == (f"error: {target} exists and is not a pty link a twin made: the twin replaces only "
                           "its own links (into /dev/pts), so pass --pty a free path")
    after = {p.name: (p.is_symlink(), p.read_bytes() if p.is_file() and not p.is_symlink() else None)
             for p in tmp_path.iterdir()}
    assert after == before


def test_a_link_a_killed_twin_left_behind_is_taken_over(tmp_path: Path) -> None:
    link = tmp_path / "ttyESP32"
    link.symlink_to("/dev/pts/999999")  # what a twin killed with SIGKILL leaves
    process = twin("--flash", str(tmp_path / "flash.bin"), "--pty", str(link))
    try:
        assert process.stdout.readline().startswith("virtual ESP32 ")
        assert os.readlink(link).startswith("/dev/pts/") and link.exists()
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
    assert not link.is_symlink()  # the twin removes its own link when it stops
