"""The rig as a pytest plugin, loaded through the `pytest11` entry point `ota_rig`.

Its options start with --ota- and its fixtures with ota_, so that it collides with no other
plugin; it starts nothing (no twin, no records folder, no report) in a session that does not
use them. Options and fixtures are described in hooks.py and fixtures.py.
"""

from ota_rig.pytest_plugin.fixtures import (
    ota_bench,
    ota_board,
    ota_builder,
    ota_listener_ports,
    ota_out_dir,
    ota_pki,
    ota_real_board,
    ota_scenario,
    ota_test_dir,
    ota_twin_keeper,
)
from ota_rig.pytest_plugin.hooks import (
    pytest_addoption,
    pytest_collection_modifyitems,
    pytest_configure,
    pytest_configure_node,
    pytest_generate_tests,
    pytest_sessionstart,
    pytest_unconfigure,
)

__all__ = [
    "ota_bench", "ota_board", "ota_builder", "ota_listener_ports", "ota_out_dir", "ota_pki", "ota_real_board",
    "ota_scenario", "ota_test_dir", "ota_twin_keeper", "pytest_addoption", "pytest_collection_modifyitems",
    "pytest_configure", "pytest_configure_node", "pytest_generate_tests", "pytest_sessionstart", "pytest_unconfigure",
]
