"""The rig as a user gets it: a wheel built from a copy of this source tree, installed into fresh
virtual environments, run from folders that have nothing to do with this repository.

The slow part (the wheel, its dependencies as wheels, two venvs) happens once per session: the
fixtures below are session-scoped and shared by tests/packaging. The dependencies are resolved
once against the package index (`pip wheel`, which is what `pip install` would fetch), then each
venv installs from that folder alone: pip still resolves every requirement of the wheel's
metadata, and a requirement the metadata forgot is missing from the venv as it would be for a
user.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
OTHER_PLUGINS = ("pytest-profiling", "pytest-mock")  # available from this machine's index
INSTALL_SECONDS = 600  # one pip command's limit: building cryptography & co. from sdists would be slow


@dataclass(frozen=True)
class Venv:
    path: Path

    def bin(self, name: str) -> Path:
        return self.path / "bin" / name


def _left_out(folder: str, names: list[str]) -> set[str]:
    """What a copy of the source tree leaves out: what builds and runs leave behind."""
    top = Path(folder) == ROOT
    return {name for name in names
            if name in ("__pycache__", ".pytest_cache") or name.endswith(".egg-info")
            or (top and name in (".venv", ".git", "build", "dist", "out"))}


def clean_env(venv: Path | None = None) -> dict[str, str]:
    """The environment of a user's shell: none of this session's pytest, Python or rig settings,
    and, on PATH, `venv`'s bin folder instead of this repository's .venv."""
    ours = (Path(sys.prefix), ROOT)
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PYTEST_", "PYTHON", "OTA_", "VIRTUAL_ENV", "COV_"))}
    path = [entry for entry in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep)
            if entry and not any(Path(entry).resolve().is_relative_to(prefix) for prefix in ours)]
    env["PATH"] = os.pathsep.join(([str(venv / "bin")] if venv else []) + path)
    return env


def run(argv: list[str | Path], cwd: Path, venv: Venv | None = None, timeout: float = INSTALL_SECONDS
        ) -> subprocess.CompletedProcess[str]:
    """`argv` in `cwd`, as a user's shell with `venv` activated would run it."""
    return subprocess.run([str(arg) for arg in argv], cwd=cwd, env=clean_env(venv.path if venv else None),
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False)


def checked(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert done.returncode == 0, f"{' '.join(done.args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


def once(tmp_path_factory: pytest.TempPathFactory, name: str, make: Callable[[Path], None]) -> Path:
    """The folder `name`, made by `make` once per session: under pytest-xdist, by the first worker
    that needs it, while the others wait (in the session's temporary folder, which the workers'
    own folders are in). xdist_group alone does not ensure it: with pytest 9.2, pytest-xdist 3.8's
    --dist loadgroup spreads a group over the workers (pytest-dev/pytest-xdist#1386)."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder, done = shared / f"packaging-{name}", shared / f"packaging-{name}.done"
    with open(shared / f"packaging-{name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)  # what a failed attempt left
            folder.mkdir()
            make(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """esp32-ota-rig's wheel, built by pip from a copy of this source tree (a build in place would
    leave build/ behind, and setuptools would reuse what an earlier build left in it)."""
    def build(base: Path) -> None:
        source = base / "source"
        shutil.copytree(ROOT, source, ignore=_left_out, symlinks=True)
        checked(run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", base / "dist", source], cwd=base))

    built = sorted((once(tmp_path_factory, "wheel", build) / "dist").glob("*.whl"))
    assert [path.name for path in built] == [f"esp32_ota_rig-{PROJECT['version']}-py3-none-any.whl"], built
    return built[0]


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Path:
    """The wheel and everything it and the other plugins need, resolved once against the index."""
    return once(tmp_path_factory, "wheelhouse", lambda house: checked(
        run([sys.executable, "-m", "pip", "wheel", "-q", "-w", house, wheel, *OTHER_PLUGINS], cwd=house)))


def _venv(tmp_path_factory: pytest.TempPathFactory, name: str, house: Path, *requirements: str | Path) -> Venv:
    def make(where: Path) -> None:
        checked(run([sys.executable, "-m", "venv", where], cwd=where.parent))
        checked(run([where / "bin" / "python", "-m", "pip", "install", "-q", "--no-index", "--find-links", house,
                     *requirements], cwd=where.parent))

    return Venv(once(tmp_path_factory, name, make))


@pytest.fixture(scope="session")
def rig_venv(tmp_path_factory: pytest.TempPathFactory, wheel: Path, wheelhouse: Path) -> Venv:
    """A fresh venv with the rig's wheel (and, as in a user's project, two other pytest plugins)."""
    return _venv(tmp_path_factory, "with-rig", wheelhouse, wheel, *OTHER_PLUGINS)


@pytest.fixture(scope="session")
def plain_venv(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path) -> Venv:
    """The same venv without the rig: pytest (the rig's version of it) and the other plugins."""
    return _venv(tmp_path_factory, "without-rig", wheelhouse, "pytest", *OTHER_PLUGINS)
