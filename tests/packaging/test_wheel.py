"""The wheel holds the whole package, and the rig it installs runs the OTA scenarios from any
folder, writing nothing there but out/."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from tests.packaging.conftest import PROJECT, ROOT, Venv, checked, run

PACKAGE = ROOT / "src" / "ota_rig"
SCENARIOS = ("test_older_device_updates_reboots_and_runs_the_new_version",
             "test_device_on_the_latest_version_downloads_nothing")
PROFILE = "arduino-esp32-2.0"

# The wheel and the venvs are made once per session (conftest.once), inside the
# timeout of whichever of these tests comes first.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200), pytest.mark.xdist_group("packaging")]


def test_the_wheel_ships_every_file_of_the_package(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    dist_info = f"esp32_ota_rig-{PROJECT['version']}.dist-info"
    assert f"{dist_info}/licenses/LICENSE" in names
    assert zipfile.ZipFile(wheel).read(f"{dist_info}/licenses/LICENSE") == (ROOT / "LICENSE").read_bytes()
    scenarios = sorted(path.name for path in (PACKAGE / "scenarios").glob("test_*.py"))
    assert len(scenarios) >= 6, scenarios
    for name in [*(f"scenarios/{scenario}" for scenario in scenarios), "scenarios/pytest.ini",
                 "scenarios/real_builds.json", "scenarios/conftest.py", "sketches/ota_https/ota_https.ino", "py.typed"]:
        assert f"ota_rig/{name}" in names, f"the wheel lacks ota_rig/{name}"
    source = {f"ota_rig/{path.relative_to(PACKAGE).as_posix()}" for path in PACKAGE.rglob("*")
              if path.is_file() and "__pycache__" not in path.parts}
    assert source - names == set(), "files of src/ota_rig the wheel does not ship"
    entry_points = zipfile.ZipFile(wheel).read(f"{dist_info}/entry_points.txt").decode()
    assert "[pytest11]\nota_rig = ota_rig.pytest_plugin" in entry_points
    assert "[console_scripts]\nrig = ota_rig.cli:main" in entry_points


def test_wheel_installs_and_runs_anywhere(rig_venv: Venv, tmp_path: Path) -> None:
    """`rig run` from the installed wheel, in an empty folder far from this repository."""
    here = tmp_path / "anywhere"
    here.mkdir()
    imported = checked(run([rig_venv.bin("python"), "-c", "import ota_rig; print(ota_rig.__file__)"], here, rig_venv))
    assert Path(imported.stdout.strip()).is_relative_to(rig_venv.path), imported.stdout  # not this source tree

    keyword = "test_older_device_updates_reboots_and_runs_the_new_version or test_device_on_the_latest_version"
    done = run([rig_venv.bin("rig"), "run", "-k", keyword, "--ota-profile", PROFILE], here, rig_venv, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr

    assert sorted(path.name for path in here.iterdir()) == ["out"], "rig run wrote outside out/"
    runs = here / "out" / "runs"
    latest = runs / "latest"
    assert latest.is_symlink() and latest.resolve().parent == runs.resolve()
    results = json.loads((latest / "results.json").read_text())
    verdicts = {scenario["name"]: scenario["verdict"] for scenario in results["scenarios"]}
    assert verdicts == {f"{name}[{PROFILE}]": "passed" for name in SCENARIOS}
    folders = {path.name for path in (latest / "scenarios").iterdir() if path.is_dir()}
    for name in SCENARIOS:
        folder = next((f for f in folders if f.endswith(f".{name}[{PROFILE}]")), None)
        assert folder is not None, f"no records folder for {name} among {folders}"
        serial = latest / "scenarios" / folder / "serial.log"
        assert serial.is_file() and "Firmware version" in serial.read_text(errors="replace"), serial
    assert (latest / "junit.xml").is_file() and (latest / "report.html").is_file()


def test_rig_version_is_the_installed_distributions(rig_venv: Venv, tmp_path: Path) -> None:
    metadata = checked(run([rig_venv.bin("python"), "-c",
                            "import importlib.metadata as m; print(m.version('esp32-ota-rig'))"], tmp_path, rig_venv))
    assert metadata.stdout.strip() == PROJECT["version"]
    said = checked(run([rig_venv.bin("rig"), "--version"], tmp_path, rig_venv))
    assert said.stdout.split() == ["rig", PROJECT["version"]], said.stdout + said.stderr


def test_without_the_labgrid_extra_pyserial_is_pyserials_own(rig_venv: Venv, tmp_path: Path) -> None:
    """The extra is what brings pyserial-labgrid, which writes over pyserial's files
    (docs/hardware.md, "pyserial"): without it, every file of the `serial` package is the one
    pyserial 3.5's wheel recorded (its RECORD's sha256), and no fork is installed."""
    check = ("import base64, hashlib, importlib.metadata as m, serial\n"
             "dist = m.distribution('pyserial')\n"
             "names = sorted(d.metadata['Name'] for d in m.distributions())\n"
             "changed = [str(f) for f in dist.files if f.hash and f.hash.mode == 'sha256' and "
             "base64.urlsafe_b64encode(hashlib.sha256(f.locate().read_bytes()).digest()).rstrip(b'=').decode() "
             "!= f.hash.value]\n"
             "serial_files = sum(str(f).startswith('serial/') for f in dist.files)\n"
             "print(dist.version, serial.__version__, serial_files, changed, 'pyserial-labgrid' in names, "
             "'labgrid' in names)\n")
    said = checked(run([rig_venv.bin("python"), "-c", check], tmp_path, rig_venv)).stdout.split(maxsplit=3)
    version, imported, files, rest = said
    assert (version, imported) == ("3.5", "3.5") and int(files) > 20, said
    assert rest.strip() == "[] False False", said  # no file changed since pip wrote it; neither labgrid nor its fork


def test_without_the_labgrid_extra_a_farm_is_refused_in_one_sentence(rig_venv: Venv, tmp_path: Path) -> None:
    env_board = ["--ota-board", "labgrid:x", "--ota-arduino-cli", str(ROOT / "tests" / "fakes" / "arduino-cli"),
                 "--ota-host", "127.0.0.1", "--ota-wifi-ssid", "bench-ap", "--ota-wifi-password", "x"]
    sentence = ('labgrid is not installed: install the extra with pip install "esp32-ota-rig[labgrid]" '
                '(docs/hardware.md, "Board farms")')
    done = run([rig_venv.bin("rig"), "run", *env_board], tmp_path, rig_venv, timeout=120)
    assert done.returncode == 2 and done.stderr.strip() == f"rig: {sentence}", done.stdout + done.stderr
    assert not (tmp_path / "out" / "runs" / "latest").exists()
    done = run([rig_venv.bin("python"), "-m", "pytest", "--pyargs", "ota_rig.scenarios", *env_board, "-q"],
               tmp_path, rig_venv, timeout=120)
    assert done.returncode == 4 and f"ERROR: {sentence}" in done.stderr, done.stdout + done.stderr
