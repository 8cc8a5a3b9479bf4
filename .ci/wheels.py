"""Every runtime dependency of the rig installs from a wheel (or is pure Python) on each
supported Python and on the Linux machines users run it on: CPython 3.11-3.14, manylinux x86_64
and aarch64 (a Raspberry Pi). `pip download --only-binary=:all:` resolves the dependencies of
pyproject.toml, transitively, for each pair into a temporary folder; a dependency that drops a
platform or a Python fails here before it fails a user.

A project published only as a source archive (esptool is) counts when it is pure Python: its
wheel, built here once with `pip wheel --no-deps`, must be tagged `none-any`, and then joins the
downloads as a local wheel for every platform (its own dependencies are still resolved there).

    python .ci/wheels.py [--pythons 3.11 3.12 3.13 3.14] [--arches x86_64 aarch64]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHONS = ("3.11", "3.12", "3.13", "3.14")
ARCHES = ("x86_64", "aarch64")
# The manylinux tags pip may pick for one architecture (glibc 2.17 and up).
MANYLINUX = ("manylinux2014_{arch}", "manylinux_2_17_{arch}", "manylinux_2_28_{arch}", "manylinux_2_34_{arch}")


def dependencies() -> list[str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]


_NO_WHEEL = re.compile(r"No matching distribution found for (\S+)")
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check"]


def check(python: str, arch: str, deps: list[str], dest: Path, local: Path) -> str | None:
    """None when every dependency resolves to wheels for this Python and architecture, else pip's
    complaint. Pure-Python source-only projects are built into `local` as they turn up."""
    platforms = [arg for tag in MANYLINUX for arg in ("--platform", tag.format(arch=arch))]
    built: set[str] = set()
    while True:
        argv = [*PIP, "download", "--quiet", "--only-binary=:all:", "--implementation", "cp",
                "--python-version", python, *platforms, "--find-links", str(local), "--dest", str(dest), *deps]
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode == 0:
            return None
        problem = (done.stderr.strip().splitlines() or ["pip failed"])[-1]
        missing = _NO_WHEEL.search(problem)
        if missing is None or missing.group(1) in built or not pure_wheel(missing.group(1), local):
            return problem
        built.add(missing.group(1))


def pure_wheel(requirement: str, local: Path) -> bool:
    """Build `requirement` from its source archive into `local`: True if the wheel is pure Python."""
    before = set(local.glob("*.whl"))
    done = subprocess.run([*PIP, "wheel", "--quiet", "--no-deps", "--no-binary", ":all:", "--wheel-dir", str(local),
                           requirement], capture_output=True, text=True)
    new = set(local.glob("*.whl")) - before
    if done.returncode != 0 or not new:
        return False
    impure = [w for w in new if not w.name.endswith("-none-any.whl")]
    for wheel in impure:
        wheel.unlink()
    return not impure


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pythons", nargs="+", default=list(PYTHONS))
    parser.add_argument("--arches", nargs="+", default=list(ARCHES))
    args = parser.parse_args()
    deps = dependencies()
    failures = 0
    with tempfile.TemporaryDirectory(prefix="rig-wheels-") as tmp:
        local = Path(tmp) / "pure"
        local.mkdir()
        for python in args.pythons:
            for arch in args.arches:
                problem = check(python, arch, deps, Path(tmp) / f"{python}-{arch}", local)
                print(f"wheels: CPython {python} manylinux {arch}: {problem or 'ok'}", flush=True)
                failures += problem is not None
    if failures:
        print(f"wheels: {failures} of {len(args.pythons) * len(args.arches)} platforms lack a wheel; "
              "see pip's message above", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
