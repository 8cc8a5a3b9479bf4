"""The rig plugin, loaded by its pytest11 entry point, in sessions pytester makes: off unless
asked for (no signal handler, no out/ folder, a fixture that says so), on with the ini flag, its
markers registered either way, a board that is not there refused in one sentence.

Sessions in which the rig would take SIGINT and SIGTERM run in a subprocess
(runpytest_subprocess), so that this session's own handlers stay as they are.
"""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

SIGNALS = """
import signal

def test_signal_handlers():
    for number in (signal.SIGINT, signal.SIGTERM):
        print(f"handler for {signal.Signals(number).name}: {signal.getsignal(number)!r}")
"""
OFF = ("the OTA rig is off in this session: pass an --ota- option (--ota-board virtual), "
       "or set ota_rig = true in the pytest ini")
NO_PORT = ("ERROR: --ota-board /nonexistent: no such port; plug the board in, or pass --ota-board /dev/ttyUSB0, "
           "--ota-board mac:<MAC>, --ota-board rfc2217://host:port or --ota-board labgrid:PLACE (or virtual)")


def test_the_plugin_is_loaded_by_its_entry_point(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest_subprocess("--trace-config", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*registered third-party plugins:*", "*ota_rig*ota_rig/pytest_plugin/__init__.py*"])


def test_a_session_not_asking_for_the_rig_installs_no_handler_and_writes_no_out(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(SIGNALS)
    result = pytester.runpytest_subprocess("-s", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*handler for SIGINT: <built-in function default_int_handler>",
                                 "*handler for SIGTERM: <Handlers.SIG_DFL: 0>"])
    assert not (pytester.path / "out").exists()
    assert list(pytester.path.rglob(".session.lock")) == []


def test_a_session_with_an_ota_option_takes_the_signals_and_claims_out(pytester: pytest.Pytester) -> None:
    """The control for the test above: the same session, asking for the rig."""
    pytester.makepyfile(SIGNALS)
    result = pytester.runpytest_subprocess("-s", "-p", "no:cacheprovider", "--ota-board", "virtual")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*handler for SIGINT: <bound method Interrupt._arrived of *",
                                 "*handler for SIGTERM: <bound method Interrupt._arrived of *"])
    assert (pytester.path / "out" / "tests" / ".session.lock").is_file()


def test_a_rig_fixture_in_a_session_without_the_rig_fails_saying_it_is_off(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_wants_the_bench(ota_bench): pass")
    result = pytester.runpytest("-p", "no:cacheprovider")  # in process: the rig does nothing here
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"*{OFF}*"])
    assert not (pytester.path / "out").exists()


def test_the_ini_flag_turns_the_rig_on_with_the_virtual_bench(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nota_rig = true\n")
    pytester.makepyfile("""
        def test_bench(ota_bench):
            print(f"bench: board={ota_bench.board} virtual={ota_bench.virtual} arduino_cli={ota_bench.arduino_cli}")
    """)
    result = pytester.runpytest_subprocess("-s", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*bench: board=virtual virtual=True arduino_cli=None*"])
    assert (pytester.path / "out" / "tests" / ".session.lock").is_file()


def test_the_rig_markers_are_registered_in_any_session(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest

        @pytest.mark.each_profile
        def test_each_profile(): pass

        @pytest.mark.hardware
        def test_hardware(): pass
    """)
    result = pytester.runpytest("--strict-markers", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)  # the rig is off here: a hardware test is not skipped
    result = pytester.runpytest("--markers", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["@pytest.mark.each_profile: *", "@pytest.mark.hardware: *"], consecutive=False)


def test_strict_markers_refuses_an_unregistered_marker(pytester: pytest.Pytester) -> None:
    """The control for the test above: --strict-markers does refuse a marker nobody registered."""
    pytester.makepyfile("import pytest\n\n@pytest.mark.nightly\ndef test_nightly(): pass\n")
    result = pytester.runpytest("--strict-markers", "-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*'nightly' not found in `markers` configuration option*"])


def test_a_board_that_is_not_there_is_refused_in_one_sentence(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_never_runs(): pass")
    result = pytester.runpytest_subprocess("--ota-board", "/nonexistent", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert [line for line in result.errlines if line.strip()] == [NO_PORT]
    assert "test_never_runs" not in result.outlines
    assert not (pytester.path / "out").exists()  # refused before it claimed a records folder
