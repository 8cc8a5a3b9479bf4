"""A pytest plugin for the interrupt tests (`-p tests.reports.held`): every scenario but the first
update holds for a minute once its setup is done, its board and server up, as a long scenario
would, so that a signal finds it under way. A file `held` in its folder says the hold began."""

from __future__ import annotations

import time

import pytest

ONE_UPDATE = "test_older_device_updates_reboots_and_runs_the_new_version"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    if not item.name.startswith(ONE_UPDATE):
        (item.funcargs["ota"].folder / "held").touch()
        time.sleep(60)
    return (yield)
