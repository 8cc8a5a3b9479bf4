"""arduino-cli builds of the reference sketch, for real boards.

`ArduinoCliBuilder` builds for real boards: it stages the sketch with the configuration
rendered into ota_config.h and runs `arduino-cli compile --format json`. What it relies on,
and where that comes from (tests/unit/test_arduino_cli.py has the full record, and
tests/fakes/arduino-cli replays it):

* arduino-cli 1.x (arduino/arduino-cli v1.3.1, internal/cli/compile/compile.go and
  internal/cli/feedback/result/rpc.go): compile prints one JSON object on stdout, on success
  and on failure: compiler_out, compiler_err, builder_result {build_path, build_platform
  {id, version, install_dir}, build_properties ["key=value", ...], ...}, success and, on
  failure, error; the exit code is 1 on failure. `core list` prints {"platforms": [{"id",
  "installed_version", ...}]}.
* arduino-esp32 platform.txt: the build path holds <sketch>.ino.bin, .bootloader.bin and
  .partitions.bin; upload writes them at {build.bootloader_addr} (boards.txt: 0x1000 on the
  classic ESP32, 0x0 on ESP32-S3/C3), 0x8000 and 0x10000, and boot_app0.bin at
  0xe000 from the installed core (<install_dir>/tools/partitions/boot_app0.bin). From 3.3.5
  the build also writes <build path>/flash_args with those offsets, which wins when present.
  build.extra_flags carries the core's own defines (-DCORE_DEBUG_LEVEL={build.code_debug}
  and, on S3/C3, the USB ones), so the rig never overrides it: the debug level goes through
  the board menu, `DebugLevel=none|error|warn|info|debug|verbose` (build.code_debug 0..5).
* Warning levels: `arduino-cli compile --warnings none|default|more|all` ("none" when not
  given; v1.3.1 internal/cli/compile/compile.go) sets {compiler.warning_flags} in each recipe
  it runs to the platform's compiler.warning_flags.<level> (internal/arduino/builder/
  compilation.go). It checks no value: an unknown level names an undefined property and
  compiles with no warning flags at all. build.options.json does not record the level, so
  objects compiled at one level would be reused at another in the same build path.
  arduino-esp32 platform.txt, "# Arduino Compile Warning Levels":
    2.0.x   none -w, default (empty), more -Wall -Werror=all, all -Wall -Werror=all -Wextra
            (espressif/arduino-esp32 @00d8a39a, version=2.0.6; the same lines are quoted from
            2.0.11 in issue #8791, and issue #7024 reports 2.0.14 still failing at More/All;
            the 2.0.14 and 2.0.17 tags themselves were not read). C++ is -std=gnu++11 there.
    3.3.x   none -w, default (empty), more -Wall, all -Wall -Wextra, and at every level
            compiler.common_werror_flags=-Werror=return-type (copies of 3.3.x's platform.txt
            in DIMATE-GmbH/arduino-esp32 @379f23ac, version=3.3.7.2, and
            lucasssvaz/arduino-esp32 @00fba6a9, version=3.3.10; a real 3.0.0-rc3 compile line
            at "all" in espressif/arduino-esp32 issue #8796 has `cpp_flags -Wall -Wextra -Os`).
            C++ flags come from the libs' flags/cpp_flags (-std=gnu++2b in a copy at
            Tinkerforge/esp32-arduino-libs @225593a0).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import shutil
import subprocess
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Literal, TypedDict

from ota_rig.build.artifacts import SKETCH, SKETCH_DIR, Artifacts
from ota_rig.device.sketch_config import CONFIG_HEADER, SketchConfig
from ota_rig.errors import RigError

log = logging.getLogger(__name__)


DEFAULT_FQBN = "esp32:esp32:esp32:PartitionScheme=default"  # ESP32 Dev Module, two OTA slots
# boards.txt `DebugLevel` menu: the option id for each CORE_DEBUG_LEVEL (build.code_debug 0..5).
DEBUG_LEVELS = ("none", "error", "warn", "info", "debug", "verbose")
# arduino-cli compile --warnings: the platform.txt compiler.warning_flags.<level> to compile with.
WARNING_LEVELS = ("none", "default", "more", "all")
# boards.txt build.bootloader_addr by chip family, for when neither flash_args nor the build
# properties name it. Chips not listed are refused rather than guessed.
BOOTLOADER_OFFSETS = {"esp32": 0x1000, "esp32s3": 0x0, "esp32c3": 0x0}
_DONE = "artifacts.json"  # written last in a build folder: its presence marks a complete build
_INSTALL_HINT = ("install arduino-cli (https://arduino.github.io/arduino-cli/latest/installation/) "
                 "or point --ota-arduino-cli (env ARDUINO_CLI) at it")


class BuildError(RigError, RuntimeError):
    """A build that cannot be made; str() is one sentence saying what went wrong and what to do."""


def profile_for_core(version: str) -> str:
    """The device profile an installed esp32:esp32 core builds for: 2.0.x gives
    "arduino-esp32-2.0", 3.x "arduino-esp32-3"; any other version is a BuildError."""
    parts = version.strip().removeprefix("v").split(".")
    if parts[:2] == ["2", "0"] and len(parts) >= 3:
        return "arduino-esp32-2.0"
    if parts[0] == "3" and len(parts) >= 2:
        return "arduino-esp32-3"
    raise BuildError(f"esp32:esp32 core {version!r} has no device profile: the rig models 2.0.x "
                     f"(arduino-esp32-2.0) and 3.x (arduino-esp32-3), so install one of those")


@dataclass(frozen=True)
class _Fqbn:
    """vendor:arch:board[:menu=option,...], as arduino-cli takes it."""

    vendor: str
    arch: str
    board: str
    options: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, text: str) -> "_Fqbn":
        parts = text.split(":", 3)
        options: list[tuple[str, str]] = []
        for item in parts[3].split(",") if len(parts) == 4 else []:
            name, _, value = item.partition("=")
            options.append((name, value))
        if len(parts) < 3 or not all(parts[:3]) or not all(n and v for n, v in options):
            raise BuildError(f"FQBN {text!r} is not vendor:arch:board[:menu=option,...]: "
                             f"pass one such as {DEFAULT_FQBN}")
        return cls(parts[0], parts[1], parts[2], tuple(options))

    @property
    def platform(self) -> str:
        return f"{self.vendor}:{self.arch}"

    def option(self, name: str) -> str | None:
        return dict(self.options).get(name)

    def with_option(self, name: str, value: str) -> "_Fqbn":
        kept = [(n, value if n == name else v) for n, v in self.options]
        if self.option(name) is None:
            kept.append((name, value))
        return _Fqbn(self.vendor, self.arch, self.board, tuple(kept))

    def __str__(self) -> str:
        menus = ",".join(f"{n}={v}" for n, v in self.options)
        return f"{self.platform}:{self.board}" + (f":{menus}" if menus else "")


class ArduinoCliBuilder:
    """Builds ota_rig/sketches/ota_https with arduino-cli for real boards, one folder per build under
    `root`: <version>-<key>/ holds the staged sketch (with the generated ota_config.h), the
    build path `build/`, compile.json (what arduino-cli printed), compile.log (compiler output)
    and artifacts.json, written last, which marks the build complete.

    Builds are cached by sketch content, configuration, FQBN (with the debug level), warning
    level and the installed core's version: asking twice compiles once; a failed compile leaves its folder
    and log but no artifacts.json, so the next request compiles again. The installed core is
    asked on every build (`core list`), so a core upgrade between builds recompiles.

    The debug level is the board menu option DebugLevel from `config.debug_level`. An FQBN
    that names another DebugLevel is overridden (with a warning): the configuration stored in
    the app must say what the compiler was given.

    `warnings` is passed as `--warnings <level>` (one of WARNING_LEVELS) and is part of the
    cache key. None passes nothing, so arduino-cli compiles at its own default ("none", -w), as
    `arduino-cli compile` does when a user types it: the rig picks no stricter level than asked."""

    def __init__(self, root: Path, *, cli: str = "arduino-cli", fqbn: str = DEFAULT_FQBN,
                 sketch: Path = SKETCH_DIR, warnings: str | None = None) -> None:
        if warnings not in (None, *WARNING_LEVELS):
            raise BuildError(f"{warnings!r} is not an arduino-cli warning level: "
                             f"use {', '.join(WARNING_LEVELS[:-1])} or {WARNING_LEVELS[-1]}")
        self.root = Path(root)
        self.cli = str(cli)
        self.board = _Fqbn.parse(fqbn)
        self.fqbn = str(self.board)
        self.sketch = Path(sketch)
        self.warnings = warnings
        self._cli_version: str | None = None

    @property
    def platform(self) -> str:
        """The core the FQBN needs, e.g. esp32:esp32."""
        return self.board.platform

    @property
    def profile(self) -> str:
        """The device profile the installed core builds for."""
        return profile_for_core(self.core_version())

    def core_version(self) -> str:
        """The installed version of the FQBN's core, from `arduino-cli core list`."""
        listing = self._json("core", "list", "--format", "json")
        for platform in listing.get("platforms") or []:
            if isinstance(platform, dict) and platform.get("id") == self.platform and platform.get("installed_version"):
                return str(platform["installed_version"])
        raise BuildError(f"core {self.platform} is not installed in arduino-cli ({self.cli}): "
                         f"run `{self.cli} core install {self.platform}`")

    def cli_version(self) -> str:
        """arduino-cli's own version (`arduino-cli version`), asked once."""
        if self._cli_version is None:
            self._cli_version = str(self._json("version", "--format", "json").get("VersionString", "unknown"))
        return self._cli_version

    def fqbn_for(self, config: SketchConfig) -> str:
        """The FQBN a build of `config` compiles with: the builder's, with DebugLevel set."""
        level = DEBUG_LEVELS[config.debug_level]
        named = self.board.option("DebugLevel")
        if named not in (None, level):
            log.warning("FQBN %s names DebugLevel=%s; building with DebugLevel=%s (debug_level %d)",
                        self.fqbn, named, level, config.debug_level)
        return str(self.board.with_option("DebugLevel", level))

    def build(self, config: SketchConfig, size: int = 0) -> Artifacts:
        """Compile (or reuse) the sketch for `config`. `size` is the virtual builder's knob: a
        compiled app is as large as the sketch makes it, so it is ignored here."""
        if size:
            log.warning("arduino-cli builds ignore size=%d: the app is as large as the sketch compiles", size)
        version = self.core_version()
        built_for = profile_for_core(version)
        if config.profile != built_for:
            raise BuildError(f"the build asks for profile {config.profile} but the installed core "
                             f"{self.platform} {version} builds {built_for}: build for {built_for} "
                             f"(--ota-profile) or install a core of the other line")
        fqbn = self.fqbn_for(config)
        folder = self.root / f"{config.version}-{self._key(config, fqbn, version)}"
        with self._locked(folder):
            cached = self._cached(folder)
            if cached is not None:
                log.info("%s %s for %s (%s %s): cached in %s", SKETCH, config.version, fqbn, self.platform,
                         version, folder)
                return cached
            if folder.exists():
                shutil.rmtree(folder)  # an unfinished or failed build: start over
            staged = self._stage(folder, config)
            result = self._compile(folder, staged, fqbn, version)
            artifacts = self._artifacts(config, folder, result)
            (folder / _DONE).write_text(json.dumps(artifacts.to_json(), indent=2) + "\n")
        return artifacts

    def _key(self, config: SketchConfig, fqbn: str, core: str) -> str:
        digest = hashlib.sha256()
        for path in sorted(p for p in self.sketch.rglob("*") if p.is_file()):
            digest.update(path.relative_to(self.sketch).as_posix().encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
        for part in (config.to_json(), fqbn.encode(), core.encode(), (self.warnings or "").encode()):
            digest.update(len(part).to_bytes(4, "little") + part)
        return digest.hexdigest()[:12]

    @contextmanager
    def _locked(self, folder: Path) -> Iterator[None]:
        """One build of a folder at a time, also across processes (pytest-xdist workers)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(folder.with_name(folder.name + ".lock"), "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    @staticmethod
    def _cached(folder: Path) -> Artifacts | None:
        try:
            artifacts = Artifacts.from_json(json.loads((folder / _DONE).read_text()))
        except (OSError, ValueError, TypeError):
            return None
        return artifacts if all(path.is_file() for _, path in artifacts.flash_files()) else None

    def _stage(self, folder: Path, config: SketchConfig) -> Path:
        """The sketch folder copied under `folder`, with ota_config.h generated in it."""
        if not (self.sketch / f"{self.sketch.name}.ino").is_file():
            raise BuildError(f"{self.sketch} holds no {self.sketch.name}.ino: "
                             f"pass the folder of the reference sketch ({SKETCH_DIR})")
        staged = folder / self.sketch.name  # arduino-cli wants the folder named after the .ino
        shutil.copytree(self.sketch, staged)
        (staged / CONFIG_HEADER).write_text(config.header())
        (folder / "ota_config.json").write_text(json.dumps(asdict(config), indent=2) + "\n")
        return staged

    def _compile(self, folder: Path, staged: Path, fqbn: str, core: str) -> dict:
        """Run arduino-cli compile; its JSON, or BuildError with the output kept on disk."""
        warnings = ["--warnings", self.warnings] if self.warnings else []
        args = [self.cli, "compile", "--fqbn", fqbn, *warnings, "--build-path", str(folder / "build"),
                "--format", "json", str(staged)]
        log.info("compiling %s with arduino-cli %s for %s (%s %s) in %s", SKETCH, self.cli_version(), fqbn,
                 self.platform, core, folder)
        started = time.monotonic()
        done = self._run(args)
        (folder / "compile.json").write_text(done.stdout)
        record = folder / "compile.log"
        try:
            result = json.loads(done.stdout)
            if not isinstance(result, dict):
                raise ValueError(f"expected a JSON object, got {type(result).__name__}")
        except ValueError as exc:
            record.write_text(_compile_log(args, done, {"compiler_out": done.stdout}))
            raise BuildError(f"arduino-cli compile printed no readable JSON ({exc}): "
                             f"its output is in {record}") from None
        record.write_text(_compile_log(args, done, result))
        if done.returncode != 0 or result.get("success") is not True:
            raise BuildError(f"arduino-cli could not compile {SKETCH} for {fqbn}: "
                             f"{_first_error(result, done.returncode)} (full output in {record})")
        log.info("compiled %s for %s in %.1f s", SKETCH, fqbn, time.monotonic() - started)
        return result

    def _artifacts(self, config: SketchConfig, folder: Path, result: dict) -> Artifacts:
        """The four files and their offsets, from the compile JSON and the build path."""
        builder = result.get("builder_result") or {}
        properties = dict(p.partition("=")[::2] for p in builder.get("build_properties") or [])
        build_path = Path(builder.get("build_path") or folder / "build")
        project = properties.get("build.project_name") or f"{self.sketch.name}.ino"
        core = builder.get("build_platform") or builder.get("board_platform") or {}
        where = f"output in {folder / 'compile.log'}"
        if not core.get("install_dir"):
            raise BuildError(f"arduino-cli's compile JSON names no install_dir for {self.platform}, "
                             f"so boot_app0.bin cannot be found ({where})")
        files = {
            "bootloader": build_path / f"{project}.bootloader.bin",
            "partitions": build_path / f"{project}.partitions.bin",
            "boot_app0": Path(core["install_dir"]) / "tools" / "partitions" / "boot_app0.bin",
            "app": build_path / f"{project}.bin",
        }
        for path in files.values():
            if not path.is_file():
                raise BuildError(f"arduino-cli reported success but {path} is missing ({where})")
        chip = properties.get("build.mcu") or self.board.board
        offsets = _flash_offsets(build_path, project, chip, properties, where)
        return Artifacts(version=config.version, bootloader=files["bootloader"], partitions=files["partitions"],
                         boot_app0=files["boot_app0"], app=files["app"], **offsets, chip=chip)

    def _run(self, args: list[str]) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(args, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise BuildError(f"arduino-cli not found ({self.cli!r} is not on PATH): {_INSTALL_HINT}") from None
        except PermissionError:
            raise BuildError(f"arduino-cli at {self.cli} cannot be run (permission denied): {_INSTALL_HINT}") from None

    def _json(self, *command: str) -> dict:
        done = self._run([self.cli, *command])
        shown = " ".join(["arduino-cli", *command])
        if done.returncode != 0:
            said = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[0]
            raise BuildError(f"`{shown}` failed with exit code {done.returncode}: {said}")
        try:
            data = json.loads(done.stdout)
        except ValueError as exc:
            raise BuildError(f"`{shown}` printed no readable JSON ({exc}): is {self.cli} arduino-cli 1.x?") from None
        if not isinstance(data, dict):
            raise BuildError(f"`{shown}` printed JSON that is not an object: is {self.cli} arduino-cli 1.x?")
        return data


def _compile_log(args: list[str], done: subprocess.CompletedProcess[str], result: dict) -> str:
    return (f"$ {' '.join(args)}\nexit code {done.returncode}\n"
            f"--- compiler_out ---\n{result.get('compiler_out') or ''}\n"
            f"--- compiler_err ---\n{result.get('compiler_err') or ''}\n"
            f"--- error ---\n{result.get('error') or ''}\n"
            f"--- arduino-cli stderr ---\n{done.stderr}")


def _first_error(result: dict, code: int) -> str:
    """The compiler's first `error:` line, else arduino-cli's own error, else the exit code."""
    for line in str(result.get("compiler_err") or "").splitlines():
        if "error:" in line:
            return line.strip()
    said = str(result.get("error") or "").strip()
    return said.splitlines()[0] if said else f"exit code {code} and no error message"


_OffsetName = Literal["bootloader_offset", "partitions_offset", "boot_app0_offset", "app_offset"]


class _FlashOffsets(TypedDict, total=False):
    """The Artifacts offsets a build names; the ones it leaves out keep Artifacts' defaults."""

    bootloader_offset: int
    partitions_offset: int
    boot_app0_offset: int
    app_offset: int


def _flash_offsets(build_path: Path, project: str, chip: str, properties: dict[str, str],
                   where: str) -> _FlashOffsets:
    """Offsets from <build path>/flash_args (arduino-esp32 3.3.5 and later) when present; else
    platform.txt's fixed ones with the bootloader at build.bootloader_addr, or by chip family."""
    offsets: _FlashOffsets = {}
    named = properties.get("build.bootloader_addr")
    if named:
        offsets["bootloader_offset"] = int(named, 0)
    elif chip in BOOTLOADER_OFFSETS:
        offsets["bootloader_offset"] = BOOTLOADER_OFFSETS[chip]
    args = build_path / "flash_args"
    if args.is_file():
        names: dict[str, _OffsetName] = {
            f"{project}.bootloader.bin": "bootloader_offset", f"{project}.partitions.bin": "partitions_offset",
            "boot_app0.bin": "boot_app0_offset", f"{project}.bin": "app_offset",
        }
        for line in args.read_text().splitlines():
            words = line.split()
            if len(words) >= 2 and words[0].lower().startswith("0x") and words[1] in names:
                offsets[names[words[1]]] = int(words[0], 16)
    if "bootloader_offset" not in offsets:
        raise BuildError(f"cannot tell where the {chip} bootloader goes: no flash_args, no "
                         f"build.bootloader_addr, and the rig knows only {', '.join(BOOTLOADER_OFFSETS)} ({where})")
    return offsets
