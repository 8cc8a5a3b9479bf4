"""Facts recorded by hand from real builds and real devices (public sources), for tests to hold
the virtual builder and the twin against. real_builds.json ships with the scenarios, which hold
a device to it too (ota_rig/scenarios/real_builds.json)."""

from ota_rig.scenarios.evidence import REAL_BUILDS

__all__ = ["REAL_BUILDS"]
