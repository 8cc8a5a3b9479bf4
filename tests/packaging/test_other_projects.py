"""Installed beside other pytest plugins, the rig leaves a project that does not use it alone: its
tests pass as they do without the rig, its own `board`, `profile` and `pki` fixtures stay its
own, pytest-profiling keeps its --profile, and the rig writes nothing into the project."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.packaging.conftest import Venv, checked, run

# The wheel and the venvs are made once per session (conftest.once), inside the
# timeout of whichever of these tests comes first.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200), pytest.mark.xdist_group("packaging")]

CONFTEST = '''
import pytest

@pytest.fixture
def board():
    return "breadboard"

@pytest.fixture
def profile():
    return {"name": "release"}

@pytest.fixture
def pki(tmp_path):
    (tmp_path / "ca.pem").write_text("not a certificate")
    return tmp_path
'''
TESTS = '''
import os
import signal

import pytest

def test_its_own_fixtures(board, profile, pki):
    assert board == "breadboard"
    assert profile == {"name": "release"}
    assert (pki / "ca.pem").read_text() == "not a certificate"

@pytest.mark.nightly
def test_with_a_marker_nobody_registered():
    pass

def test_another_plugins_fixture(mocker):
    mocker.patch("os.getcwd", return_value="/elsewhere")
    assert os.getcwd() == "/elsewhere"

def test_signal_handlers_are_pythons():
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL

@pytest.mark.skip(reason="not today")
def test_skipped():
    pass
'''
OUTCOME = re.compile(r"^(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b|^=+ .*\b(passed|failed|error|skipped)\b")


def outcome(text: str) -> list[str]:
    """pytest's verdict lines (-rA) and its summary line, without the time it took."""
    return [re.sub(r" in [\d.]+s( \([^)]*\))? =+$", "", line) for line in text.splitlines() if OUTCOME.search(line)]


def files(folder: Path) -> list[str]:
    return sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*"))


def project(where: Path) -> Path:
    where.mkdir()
    (where / "conftest.py").write_text(CONFTEST)
    (where / "test_project.py").write_text(TESTS)
    return where


def test_the_plugin_leaves_other_projects_alone(rig_venv: Venv, plain_venv: Venv, tmp_path: Path) -> None:
    argv = ["-m", "pytest", "-rA", "--profile"]  # --profile: pytest-profiling's
    runs = {}
    for name, venv in (("without", plain_venv), ("with", rig_venv)):
        folder = project(tmp_path / f"{name}-rig")
        done = run([venv.bin("python"), *argv], folder, venv, timeout=300)
        runs[name] = (done, folder)
    (without, plain_folder), (with_rig, rig_folder) = runs["without"], runs["with"]

    assert without.returncode == 0, without.stdout + without.stderr
    assert with_rig.returncode == 0, with_rig.stdout + with_rig.stderr
    assert "esp32-ota-rig" in with_rig.stdout and "esp32-ota-rig" not in without.stdout  # pytest's plugins: line
    assert outcome(with_rig.stdout) == outcome(without.stdout)
    summary = outcome(without.stdout)[-1]
    assert summary.startswith("=") and "4 passed, 1 skipped, 1 warning" in summary, without.stdout
    assert "PytestUnknownMarkWarning: Unknown pytest.mark.nightly" in with_rig.stdout
    assert "Profiling (from " in with_rig.stdout  # pytest-profiling did its work under --profile

    assert files(rig_folder) == files(plain_folder)
    assert not (rig_folder / "out").exists() and list(rig_folder.rglob(".session.lock")) == []
    assert (rig_folder / "prof" / "combined.prof").is_file()

    helped = checked(run([rig_venv.bin("pytest"), "--help"], tmp_path, rig_venv, timeout=120)).stdout
    for option in ("--ota-board", "--ota-profile", "--ota-out", "--ota-report", "--profile"):
        assert re.search(rf"^\s+{option}[ =]", helped, re.MULTILINE), f"pytest --help does not list {option}"
    plain_help = checked(run([plain_venv.bin("pytest"), "--help"], tmp_path, plain_venv, timeout=120)).stdout
    assert "--ota-" not in plain_help
    assert sorted(path.name for path in tmp_path.iterdir()) == ["with-rig", "without-rig"]  # --help wrote nothing
