"""The twin process's commands for its board (ota_rig.virtual.twin.Bench): a wrong command is
answered with one line saying what to send, and changes nothing. (A NEW that works reopens the
process's standard error: tests/virtual/test_twin_reuse.py runs it in a twin process.)"""

from __future__ import annotations

from pathlib import Path

from ota_rig.virtual.chip import Flash, parse_mac
from ota_rig.virtual.twin import Bench, Port, Twin

MAC = parse_mac("24:6f:28:7a:d8:84")


def test_commands_out_of_turn_are_refused_with_what_to_send(tmp_path: Path) -> None:
    twin = Twin(Flash(tmp_path / "flash.bin"), MAC, Port(pty=tmp_path / "tty"))
    bench = Bench(twin, MAC, pacing=False)
    twin.power_on()
    try:
        assert bench.apply('NEW {"flash": "f", "pty": "p", "log": "l"}') == "error: a board is powered; send OFF first"
        assert bench.apply("EN 0") == "ok"  # the wires reach the board in place
        assert bench.apply("OFF") == "ok"
        assert not (tmp_path / "tty").exists()  # its pty link went with it
        assert bench.apply("EN 1") == "error: no board is powered (send NEW first)"
        assert bench.apply("NEW not json").startswith('error: NEW takes {"flash": PATH, "pty": LINK, "log": PATH}')
        assert bench.apply('NEW {"flash": "f"}').startswith('error: NEW takes {"flash"')
        assert bench.apply("OFF") == "ok"  # nothing powered: nothing to do
        assert bench.boards == 1
    finally:
        bench.power_off()
