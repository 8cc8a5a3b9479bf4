"""Scenarios that go wrong on purpose, so that a report has a failure, an error and a skip to
show. Not collected by `pytest tests` (the name does not start with test_): tests/reports runs
this file by name, beside real scenarios of src/ota_rig/scenarios."""

from __future__ import annotations

import pytest


def test_an_update_that_is_awaited_past_its_version(ota, pki) -> None:
    """The device updates to 0.2, and the test waits for a 0.3 that never comes: a failed wait."""
    listener = ota.listen(pki.dns())
    old, new = ota.build("0.1", listener), ota.build("0.2", listener)
    ota.offer(new)
    monitor = ota.start(old)
    monitor.expect("update_ok", timeout=10)
    monitor.expect("firmware_version", timeout=0.5, version="0.3")


@pytest.fixture
def broken_fixture():
    raise RuntimeError("the bench is not set up (on purpose)")


def test_a_scenario_whose_setup_breaks(broken_fixture) -> None:
    """Never runs: its fixture fails, which pytest calls an error, not a failure."""


def test_a_scenario_skipped_for_want_of_a_board(ota) -> None:
    """Skipped, as a hardware-only scenario is on the twin."""
    pytest.skip("needs a real board (on purpose)")
