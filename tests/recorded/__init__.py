"""Facts recorded by hand from real builds and real devices (public sources), for tests to hold
the virtual builder and the twin against: real_builds.json."""

import json
from pathlib import Path

REAL_BUILDS = json.loads((Path(__file__).parent / "real_builds.json").read_text())
