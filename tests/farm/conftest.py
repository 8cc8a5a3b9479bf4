"""The module's farm (tests/farm/lab.py): a coordinator and an exporter on loopback publishing two
twins over RFC2217, places esp-a and esp-b tagged board=esp32, lab=ci."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from ota_rig.bench.board import VirtualBoard
from tests.farm.lab import Farm
from tests.farm.lab import farm as start_farm


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Farm]:
    folder = tmp_path_factory.mktemp("farm")
    twins: dict[str, VirtualBoard] = {}
    try:
        for index, name in enumerate(("esp-a", "esp-b")):
            twins[name] = VirtualBoard(folder / name, transport="rfc2217", mac=f"24:6f:28:aa:0f:0{index}")
        with start_farm(folder, {name: twin.port for name, twin in twins.items()}) as made:
            made.twins = twins
            yield made
    finally:
        for twin in twins.values():
            twin.close()
        shutil.rmtree(folder / "esp-a" / "unused", ignore_errors=True)
