"""Run folders: out/runs/<UTC time>/ for each `rig run`, and out/runs/latest, a link to the newest
run that wrote its records.

Runs may start together (CI jobs sharing a runner, two terminals). A folder is taken with mkdir,
which one process wins and the others see fail (they take `<time>-2`, `<time>-3`, ...). `latest`
moves only once a run has written results.json, to the newest such run by folder name (a run
that ends late never moves it back to an older one), under a lock, and by renaming a new link
over the old one, so that it never dangles or goes missing.
"""

from __future__ import annotations

import datetime
import fcntl
import os
import re
import shutil
from pathlib import Path

NAME = re.compile(r"(\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ)(?:-(\d+))?")
LOCK = ".latest.lock"


def new(out: Path) -> Path:
    """A new, empty folder for a run in `out`, named for the time now."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H-%M-%SZ")
    out.mkdir(parents=True, exist_ok=True)
    number = 1
    while True:
        folder = out / (stamp if number == 1 else f"{stamp}-{number}")
        try:
            folder.mkdir()
            return folder.resolve()
        except FileExistsError:
            number += 1  # another run took it this second


def publish(out: Path) -> None:
    """Point `out`/latest at the newest run folder in `out` that holds results.json."""
    with open(out / LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        runs = [(_order(path.name), path.name) for path in out.iterdir()
                if NAME.fullmatch(path.name) and (path / "results.json").is_file()]
        if not runs:
            return
        link = out / f".latest.{os.getpid()}"
        link.unlink(missing_ok=True)
        link.symlink_to(max(runs)[1])
        os.replace(link, out / "latest")


def discard(folder: Path) -> None:
    """Remove the folder of a run that did not happen."""
    shutil.rmtree(folder, ignore_errors=True)


def _order(name: str) -> tuple[str, int]:
    match = NAME.fullmatch(name)
    if match is None:
        raise ValueError(f"{name!r} is not a run folder's name (a UTC time stamp, maybe with -N)")
    stamp, number = match.groups()
    return stamp, int(number or 1)


def folder_name(nodeid: str) -> str:
    """A test's folder name: `<module>.<test>[<params>]`, safe on any file system."""
    module, _, name = nodeid.partition("::")
    return re.sub(r"[^\w.\-\[\]]+", "_", f"{Path(module).stem}.{name}")
