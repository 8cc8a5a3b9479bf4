"""Two test sessions never write into one records folder: a session that finds its folder held
by another writes into one of its own beside it, and says so (before, two plain `pytest
src/ota_rig/scenarios` in one checkout shared out/tests/<test> and broke each other's scenarios)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

TEST = """
    import os
    import time
    from pathlib import Path

    def test_writes_its_record(ota_out_dir):
        (ota_out_dir / f"record-{os.getpid()}").write_text("")
        (Path(__file__).parent / "started").write_text("")
        if os.environ.get("HOLD"):  # the first session keeps its folder until the test lets it go
            release, deadline = Path(__file__).parent / "release", time.monotonic() + 60
            while not release.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
"""


def session(folder: Path) -> list[str]:
    return [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-n", "1", str(folder / "test_record.py")]


def test_a_second_session_gets_a_records_folder_of_its_own(tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text("[pytest]\nota_rig = true\n")  # the session asks for the rig
    (tmp_path / "test_record.py").write_text(textwrap.dedent(TEST))
    out = tmp_path / "out" / "tests"
    first = subprocess.Popen(session(tmp_path), cwd=tmp_path, env={**os.environ, "HOLD": "1"},
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "started").exists():
            assert time.monotonic() < deadline and first.poll() is None, first.stdout.read()
            time.sleep(0.05)
        second = subprocess.run(session(tmp_path), cwd=tmp_path, capture_output=True, text=True, timeout=60)
        (tmp_path / "release").write_text("")  # only now: the second session met the first one's claim
        assert second.returncode == 0, second.stdout + second.stderr
        own = Path(re.search(r"this one writes to (\S+)", second.stdout).group(1))
        assert own.parent == out.parent and own.name.startswith("tests-")
        assert (f"rig: {out} is in use by another test session (pid {first.pid}: " in second.stdout
                and f"this one writes to {own}" in second.stdout), second.stdout
        assert first.wait(timeout=60) == 0
    finally:
        (tmp_path / "release").write_text("")
        first.kill()
        first.wait()
    # Each session's worker wrote its record into its own session's folder, and only there.
    assert len(list(out.glob("record-*"))) == 1 and len(list(own.glob("record-*"))) == 1
