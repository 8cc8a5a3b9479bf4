"""Two test sessions never write into one records folder: the second is refused in one sentence
naming the first, and runs once the first has ended (before, two plain `pytest tests/ota` in one
checkout shared out/tests/<test> and broke each other's scenarios)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path


def session(folder: Path) -> list[str]:
    return [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(folder / "test_slow.py")]


def test_a_second_session_on_the_same_records_folder_is_refused_until_the_first_ends(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["rig.plugin"]\n')
    (tmp_path / "test_slow.py").write_text(textwrap.dedent("""
        import time
        from pathlib import Path

        def test_slow():
            (Path(__file__).parent / "started").write_text("")
            time.sleep(3)
    """))
    first = subprocess.Popen(session(tmp_path), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "started").exists():
            assert time.monotonic() < deadline and first.poll() is None, first.stdout.read()
            time.sleep(0.05)
        second = subprocess.run(session(tmp_path), cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert second.returncode == 4  # pytest's usage error
        assert (f"ERROR: {tmp_path / 'out' / 'tests'} is in use by another test session (pid {first.pid}: "
                in second.stderr), second.stderr
        assert "pass --ota-out DIR to give this session a folder of its own" in second.stderr
        assert first.wait(timeout=60) == 0
    finally:
        first.kill()
        first.wait()
    third = subprocess.run(session(tmp_path), cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert third.returncode == 0, third.stdout + third.stderr
