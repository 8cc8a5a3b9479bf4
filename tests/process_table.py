"""The live processes of this machine, read from Linux's /proc: evidence of what a test left
running that no code under test writes about itself."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Process:
    pid: int
    parent: int
    group: int
    command: str  # the command line, arguments joined by spaces


def processes() -> list[Process]:
    """Every process still running (zombies, which have ended, left out)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, parent, group = stat.read_text().rpartition(")")[2].split()[:3]
            command = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError):
            continue  # it ended meanwhile
        if state != "Z":
            found.append(Process(int(stat.parent.name), int(parent), int(group), command.strip()))
    return found
