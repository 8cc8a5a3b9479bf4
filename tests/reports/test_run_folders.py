"""Runs started together, as CI jobs sharing a runner start them: each gets a folder of its own,
and out/runs/latest is always a run that wrote records, in the end the newest."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .held import ONE_UPDATE

ROOT = Path(__file__).resolve().parents[2]
RUNS = 4


def order(folder: Path) -> tuple[str, int]:
    """When a run's folder was taken: its UTC second, then its number within that second."""
    stamp, number = re.fullmatch(r"(.{20})(?:-(\d+))?", folder.name).groups()
    return stamp, int(number or 1)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_runs_started_together_each_get_a_folder_and_latest_is_the_newest(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "ota_rig.cli", "run", "-k", ONE_UPDATE, "--ota-profile", "arduino-esp32-2.0",
            "--jobs", "1", "--out", str(tmp_path)]
    runs = [subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True) for _ in range(RUNS)]
    latest, seen = tmp_path / "latest", []
    try:
        while any(run.poll() is None for run in runs):  # latest, whenever it is there, is a run with records
            if latest.is_symlink():
                seen.append(latest.resolve())
                assert (seen[-1] / "results.json").is_file(), f"latest points at {seen[-1]}, which has no records"
            else:
                assert not seen, "latest went missing"
            time.sleep(0.01)
    finally:
        for run in runs:
            if run.poll() is None:
                os.killpg(run.pid, signal.SIGKILL)
    done = [(run.returncode, *run.communicate()) for run in runs]
    assert [code for code, _, _ in done] == [0] * RUNS, done
    folders = [Path(out.splitlines()[0].rsplit("records in ", 1)[1]) for _, out, _ in done]
    assert len(set(folders)) == RUNS and all((folder / "results.json").is_file() for folder in folders)
    assert sorted(path.name for path in tmp_path.iterdir() if not path.name.startswith(".")) == \
        sorted([folder.name for folder in folders] + ["latest"])
    assert (tmp_path / "latest").resolve() == max(folders, key=order)
