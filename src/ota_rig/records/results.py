"""A run's results: one JSON document a release engineer, a CI job and `rig compare` can read.

Each scenario leaves scenario.json in its folder when it closes (`scenario_record`): its facts on
one clock, in seconds since the scenario began, drawn from evidence the device did not write
about itself (the UART as the monitor received it, the server's record, esptool's output) and
from what the rig did (builds, flashes, resets). `RunRecorder`, a pytest plugin, adds each test's
verdict and gathers the scenarios into the run's results.json, then writes junit.xml and
report.html from it. The schema is `SCHEMA`; docs/results.md describes every field.

    results.json
      schema, rig {version, commit, python, esptool}, run {started, finished, seconds, command, board, interrupted}
      board {kind, port, chip, mac}, profiles [{name, core, idf, mbedtls}]
      summary {total, passed, failed, error, skipped, interrupted}
      firmware [{version, profile, sha256, size}], certificates [{name, role, sha256, ...}]
      scenarios [{id, name, verdict, message, profile, durations, expected, observed, ...}]
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ota_rig import __version__
from ota_rig.device import profiles
from ota_rig.errors import RigError
from ota_rig.records.schema import SCHEMA, VERDICTS, check

if TYPE_CHECKING:
    pass


def run_record(tests: list[dict[str, Any]], started: datetime.datetime, board: str,
               cores: dict[str, str], interrupted: str | None = None) -> dict[str, Any]:
    """results.json: the run, what it ran on and with, and every test's record; `interrupted`
    names the signal that stopped the run."""
    finished = datetime.datetime.now(datetime.timezone.utc)
    verdicts = [test["verdict"] for test in tests]
    seen_board = next((test["board"] for test in tests if (test.get("board") or {}).get("mac")), None)
    used = sorted({test["profile"] for test in tests if test.get("profile")})
    return {
        "schema": SCHEMA,
        "rig": {"version": __version__, "commit": _commit(), "python": platform.python_version(),
                "esptool": _installed("esptool"), "host": platform.node()},
        "run": {"started": started.isoformat(), "finished": finished.isoformat(),
                "seconds": round((finished - started).total_seconds(), 3),
                "command": _command(),
                "board": board,
                "interrupted": interrupted},
        "board": seen_board or {"kind": board, "port": None, "chip": None, "mac": None},
        "profiles": [{"name": name, "core": cores.get(name, profiles.get(name).core),
                      "idf": profiles.get(name).idf_version, "mbedtls": profiles.get(name).mbedtls} for name in used],
        "summary": {"total": len(tests), **{word: verdicts.count(word) for word in VERDICTS}},
        "firmware": _unique(tests, "firmware", "sha256", lambda item: item.get("role") == "built"),
        "certificates": _unique(tests, "certificates", "sha256"),
        "scenarios": tests,
    }


def _unique(tests: list[dict], key: str, by: str, keep=lambda item: True) -> list[dict]:
    found: dict[str, dict] = {}
    for test in tests:
        for item in test.get(key, ()):
            if keep(item):
                found.setdefault(item[by], {k: v for k, v in item.items() if k not in ("listener", "port")})
    return list(found.values())


def _command() -> str:
    """The command line that made the run, as typed: `rig run -k ...`, `python -m pytest ...`."""
    if sys.orig_argv[1:2] == ["-m"]:
        return shlex.join(["python", *sys.orig_argv[1:]])
    return shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])


def _commit() -> str | None:
    """The rig's git commit, with `-dirty` when its tree has changes; None outside a checkout."""
    root = Path(__file__).resolve().parent  # an installed wheel is in no checkout: None
    try:
        commit = subprocess.run(["git", "-C", str(root), "describe", "--always", "--dirty", "--abbrev=12"],
                                capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return commit.stdout.strip() if commit.returncode == 0 else None


def _installed(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def write_reports(results: dict[str, Any], out: Path, run_dir: Path) -> list[Path]:
    """junit.xml and report.html for `results` into `out`; log paths in `results` are
    relative to `run_dir`, and in the two files relative to `out`."""
    from ota_rig.reporting import junit
    from ota_rig.reporting import page as report
    out.mkdir(parents=True, exist_ok=True)
    if out.resolve() != run_dir.resolve():
        results = rebased(results, run_dir, out)
    written = [out / "junit.xml", out / "report.html"]
    written[0].write_text(junit.render(results), encoding="utf-8")
    written[1].write_text(report.render(results, out), encoding="utf-8")
    return written


def rebased(results: dict[str, Any], run_dir: Path, out: Path) -> dict[str, Any]:
    """A copy of `results` whose log paths, relative to `run_dir`, are relative to `out`."""
    copy = json.loads(json.dumps(results))
    for test in copy["scenarios"]:
        for name, path in (test.get("logs") or {}).items():
            test["logs"][name] = os.path.relpath(run_dir.resolve() / path, out.resolve())
    return copy


# --- reading one back -----------------------------------------------------------------------

class ResultsError(RigError, ValueError):
    """A file that is not a results.json this rig can read; the message says which and why."""


def load(path: Path) -> tuple[Path, dict[str, Any]]:
    """A results.json (or the run folder holding one): its path and its content, checked."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    if not path.exists():
        raise ResultsError(f"{path}: no such file; pass a results.json or the run folder holding one")
    try:
        results = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ResultsError(f"{path} is not JSON ({error}); pass the results.json a run wrote") from None
    if not isinstance(results, dict) or results.get("schema") != SCHEMA:
        found = results.get("schema") if isinstance(results, dict) else type(results).__name__
        raise ResultsError(f"{path} has schema {found!r}, not {SCHEMA!r}; pass a results.json this rig wrote")
    problem = check(results)
    if problem:
        raise ResultsError(f"{path} is not a results.json a run wrote: {problem}; pass the results.json of a run")
    return path, results
