"""Short names for the rig plugin's fixtures in this repository's own tests (the plugin's are
prefixed ota_; the shipped scenarios have the same short names in their own conftest)."""

from __future__ import annotations

import pytest

from ota_rig.bench.board import SerialBoard
from ota_rig.scenario import OtaScenario
from ota_rig.server.pki import Pki


@pytest.fixture
def ota(ota_scenario: OtaScenario) -> OtaScenario:
    return ota_scenario


@pytest.fixture
def pki(ota_pki: Pki) -> Pki:
    return ota_pki


@pytest.fixture
def board(ota_board: SerialBoard) -> SerialBoard:
    return ota_board
