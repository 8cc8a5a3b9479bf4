"""Nothing of the rig outlives its owner: a twin ends by itself when the process that started it
dies, however it dies (SIGKILL included), removing its pty link; an xdist worker ends when its
session is killed, and its twins with it. Evidence: the process table (/proc) and the file
system, after real SIGKILLs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ota_rig.pytest_plugin.interrupt import children

from ..process_table import processes

pytestmark = pytest.mark.virtual

GONE_WITHIN = 10.0  # seconds: the twin and the worker poll their owner twice a second


def processes_mentioning(text: str) -> dict[int, str]:
    """pid: command line of every live process (this one aside) whose command line has `text`."""
    return {p.pid: p.command for p in processes() if text in p.command and p.pid != os.getpid()}


def wait_until_gone(pids: set[int], links: list[Path]) -> None:
    deadline = time.monotonic() + GONE_WITHIN
    while time.monotonic() < deadline:
        alive = pids & {p.pid for p in processes()}
        if not alive and not any(link.is_symlink() for link in links):
            return
        time.sleep(0.1)
    raise AssertionError(f"still there after {GONE_WITHIN} s: processes {sorted(alive)}, "
                         f"links {[str(link) for link in links if link.is_symlink()]}")


@pytest.mark.parametrize("transport", ["pty", "rfc2217"])
def test_a_twin_ends_when_its_owner_is_killed(tmp_path: Path, transport: str) -> None:
    owner = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import time
            from ota_rig.bench.board import VirtualBoard
            board = VirtualBoard({str(tmp_path)!r}, transport={transport!r})
            print(board.process.pid, flush=True)
            time.sleep(120)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        twin = int(owner.stdout.readline())
        assert processes_mentioning(str(tmp_path / "flash.bin")).keys() == {twin}
        owner.send_signal(signal.SIGKILL)
        owner.wait()
        wait_until_gone({twin}, [tmp_path / "ttyESP32"])
    finally:
        owner.kill()
        owner.wait()
    assert processes_mentioning(str(tmp_path)) == {}
    assert (tmp_path / "flash.bin").stat().st_size == 4 * 1024 * 1024
    assert "Traceback" not in (tmp_path / "twin.log").read_text()


def test_xdist_workers_and_their_twins_end_when_the_session_is_killed(tmp_path: Path) -> None:
    """Two workers each hold a twin in a long test; the session gets SIGKILL. Before, the workers
    went on with their scenarios for nobody and the twins ran forever."""
    (tmp_path / "pytest.ini").write_text("[pytest]\nota_rig = true\n")  # the session asks for the rig
    (tmp_path / "test_long.py").write_text(textwrap.dedent("""
        import time
        import pytest
        from ota_rig.bench.board import VirtualBoard

        @pytest.mark.parametrize("n", [1, 2])
        def test_holds_a_twin(tmp_path, n):
            with VirtualBoard(tmp_path, transport="pty"):
                (tmp_path.parent.parent / f"started-{n}").write_text("")
                time.sleep(120)
    """))
    session = subprocess.Popen([sys.executable, "-m", "pytest", "-n", "2", "-p", "no:cacheprovider", "-q",
                                f"--basetemp={tmp_path / 'base'}", "-o", "timeout=300", str(tmp_path)],
                               cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while len(list(tmp_path.glob("base/started-*"))) < 2:
            assert time.monotonic() < deadline and session.poll() is None, "the workers never started their twins"
            time.sleep(0.1)
        workers = set(children(session.pid))
        twins = {pid for pid, cmd in processes_mentioning(str(tmp_path / "base")).items() if "ota_rig.virtual" in cmd}
        assert len(workers) == 2 and len(twins) == 2
        session.send_signal(signal.SIGKILL)
        session.wait()
        wait_until_gone(workers | twins, list(tmp_path.glob("base/**/ttyESP32")))
    finally:
        session.kill()
        session.wait()
    assert processes_mentioning(str(tmp_path)) == {}
