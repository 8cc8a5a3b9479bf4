"""A real run on the twin, made once for the report tests: three scenarios of src/ota_rig/scenarios and the
deliberate failure, error and skip of deliberate.py, with --ota-report, as `rig run` makes it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ota_rig.records.results import load

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ("test_older_device_updates_reboots_and_runs_the_new_version or test_device_on_the_latest_version "
             "or test_certificate_from_another_ca_is_refused or deliberate")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Keep the tests that share the run on one pytest-xdist worker (make test: --dist
    loadgroup), so the run is made once, not once per worker."""
    for item in items:
        if "twin_run" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("twin_run"))


@pytest.fixture(scope="session")
def twin_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """(run folder, results) of a real run: results.json, junit.xml, report.html, scenarios/;
    beside the folder, pytest-junit.xml is what pytest's own --junitxml wrote."""
    folder = tmp_path_factory.mktemp("run") / "run"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "src/ota_rig/scenarios/test_update.py", "src/ota_rig/scenarios/test_trust.py",
         str(Path(__file__).with_name("deliberate.py")), "-k", SCENARIOS, "--ota-profile", "arduino-esp32-2.0",
         "--ota-report", str(folder), "--ota-out", str(folder / "scenarios"),
         "--junitxml", str(folder.parent / "pytest-junit.xml"),  # pytest's own view, to check ours against
         "-p", "no:cacheprovider", "-o", "addopts=", "-q"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, f"the run should fail exactly as deliberate.py makes it:\n{done.stdout}{done.stderr}"
    return load(folder)[0].parent, load(folder)[1]
