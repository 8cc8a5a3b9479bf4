"""Short names for the plugin's fixtures, inside the scenarios only (the plugin's own are
prefixed ota_ so that they collide with nothing in other projects)."""

from __future__ import annotations

import pytest

from ota_rig.scenario import OtaScenario
from ota_rig.server.pki import Pki


@pytest.fixture
def ota(ota_scenario: OtaScenario) -> OtaScenario:
    """The scenario under way: certificates, the update server, builds and the board."""
    return ota_scenario


@pytest.fixture
def profile(ota_profile: str) -> str:
    """The device profile this run of the test is for."""
    return ota_profile


@pytest.fixture
def pki(ota_pki: Pki) -> Pki:
    """The session's certificates."""
    return ota_pki
