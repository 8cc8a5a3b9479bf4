"""Pieces of the reference sketch's C++ taken out by name, for the host's g++ to compile and run
(no machine here has the ESP32 toolchain). What this can prove is stated by each test."""

from __future__ import annotations

import re

from ota_rig.build.artifacts import SKETCH_DIR

SOURCE = (SKETCH_DIR / "ota_https.ino").read_text()


def extract(names: tuple[str, ...], source: str = SOURCE) -> str:
    """The sketch's constants (`static const T NAME = ...` lines), then every definition of
    `names` (overloads too), each from its `static ... name(` line to the `}` at column 0."""
    lines = source.splitlines()
    parts = [line for line in lines if re.match(r"static const [\w \[\]]+=", line)]
    for name in names:
        starts = [i for i, line in enumerate(lines)
                  if re.match(rf"static [^;]*\b{name}\([^;]*$", line)]
        assert starts, f"{name}() is not defined in the sketch"
        for start in starts:
            end = lines.index("}", start)
            parts.append("\n".join(lines[start:end + 1]))
    return "\n".join(parts) + "\n"


