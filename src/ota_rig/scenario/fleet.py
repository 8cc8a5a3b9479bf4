"""A fleet rehearsal: N twins, each its own process with its own MAC, flashed with the same build
of the reference sketch, powered up at once against one update server; what each did, from its
serial log.

    fleet = rehearse(FleetPlan(url, ca_pem, version="0.1", devices=20), out)
    print(fleet.table())

The build is the rig's virtual build (ota_rig.build.virtual_builder) for the server's URL and CA.
The real esptool writes it once, into the first twin, as the rig flashes any board; the others
get a copy of that twin's flash file (ota_rig.virtual keeps a chip's flash in that file across
restarts, so a copy is the same chip contents: a fleet flashed from one production image).
That costs a file copy a device, where esptool costs a process and a write through the ROM
loader each (bench/device_fleet.py measures both). Each twin then waits in its ROM loader (BOOT
held at power-up), a serial monitor follows its port, and every twin is released through its
wired EN/IO0 at the same moment: each boots its flash, checks the URL and updates, or not.

Each device's outcome comes from the lines it printed (ota_rig.device.printed_lines): `updated`
(HTTP_UPDATE_OK, then the new `Firmware version`), with the time from its release to that line;
otherwise the cause, in the device's words (`HTTP_UPDATE_FAILD (-1): HTTP error: connection
refused`, `certificate expired`, `no update (HTTP_UPDATE_NO_UPDATES)`, ...), or `no verdict
within T s`. After an update each device is watched until its new version's own check: a
second install of the same version is an update loop (ota_rig.bench.monitor.update_loops).
The count of devices and the time are bounded (MAX_DEVICES, `timeout`).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ota_rig.bench.board import VirtualBoard
from ota_rig.bench.flash import Esptool
from ota_rig.bench.monitor import Event, Monitor, update_loops
from ota_rig.build.artifacts import Artifacts
from ota_rig.build.virtual_builder import VirtualBuilder
from ota_rig.device import profiles
from ota_rig.device.sketch_config import SketchConfig

log = logging.getLogger(__name__)

MAX_DEVICES = 100  # twins at once, each a process of its own
POLL = 0.05  # seconds between looks at the monitors
GRACE = 0.3  # seconds for the lines that follow a verdict (the TLS error after a failed check)
STARTERS = 8  # twins started at once (each a Python process importing the twin)
UPDATED = "updated"
# The lines that end a check, in the device's words; anything else before them is the way there.
VERDICTS = {
    "update_ok": "HTTP_UPDATE_OK",
    "no_updates": "no update (HTTP_UPDATE_NO_UPDATES)",
    "update_failed": "HTTP_UPDATE_FAILD ({code}): {text}",
    "cert_expired": "certificate expired on {not_after} UTC, update refused",
    "cert_not_yet_valid": "certificate not valid before {not_before} UTC, update refused",
    "signature_missing": "no signed manifest, update refused",
    "signature_invalid": "signature does not verify, update refused",
    "image_mismatch": "image does not match its signed manifest, update refused",
    "downgrade_refused": "signed version {version} is older than {current}, update refused",
}


@dataclass(frozen=True)
class FleetPlan:
    """What the fleet runs: the sketch built for `url`, trusting `ca_bundle` (PEM), at `version`,
    on `devices` twins of `profile`, for at most `timeout` seconds from their release."""

    url: str
    ca_bundle: str
    version: str = "0.1"
    devices: int = 20
    profile: str = profiles.DEFAULT
    check_dates: bool = True
    timeout: float = 120.0

    def __post_init__(self) -> None:
        if not 1 <= self.devices <= MAX_DEVICES:
            raise ValueError(f"a fleet is 1 to {MAX_DEVICES} devices, not {self.devices}")
        if not self.timeout > 0:
            raise ValueError(f"a fleet's timeout is seconds above 0, not {self.timeout:g}")


@dataclass
class Device:
    """One twin's story: its outcome (`updated` or the cause), seconds from its release to the
    new version's first line, the version it runs at the end, whether it installed the same
    version twice in a row, and the check that came after its update (if it came)."""

    name: str
    mac: str
    outcome: str = ""
    seconds: float | None = None
    running: str | None = None
    update_loop: bool = False
    then: str | None = None
    serial_log: str = ""

    @property
    def done(self) -> bool:
        """Its story is told: a first check that failed, or an update and the new version's own
        check (and, when that installed again, the boot that shows the loop)."""
        if self.outcome != UPDATED:
            return bool(self.outcome)
        return self.then is not None and (self.then != VERDICTS["update_ok"] or self.update_loop)


@dataclass
class Fleet:
    """The rehearsal's result: each device, and the wall time from release to the last verdict."""

    plan: FleetPlan
    devices: list[Device]
    seconds: float
    flashing: dict[str, float] = field(default_factory=dict)  # seconds: the esptool write, the copies

    @property
    def updated(self) -> list[Device]:
        return [device for device in self.devices if device.outcome == UPDATED]

    def failures(self) -> dict[str, int]:
        """Devices that did not update, counted by cause, the commonest first."""
        counts: dict[str, int] = {}
        for device in self.devices:
            if device.outcome != UPDATED:
                counts[device.outcome] = counts.get(device.outcome, 0) + 1
        return dict(sorted(counts.items(), key=lambda item: -item[1]))

    def time_to_update(self) -> dict[str, float | None]:
        """p50, p90 and max of the updated devices' seconds from release to the new version
        (nearest rank), None when none updated."""
        times = sorted(device.seconds for device in self.updated if device.seconds is not None)

        def rank(share: float) -> float | None:
            return round(times[max(0, math.ceil(share * len(times)) - 1)], 3) if times else None

        return {"p50": rank(0.5), "p90": rank(0.9), "max": rank(1.0)}

    @property
    def updated_per_second(self) -> float | None:
        """Devices updated per second: their count over the time the last of them took."""
        last = max((device.seconds or 0.0 for device in self.updated), default=0.0)
        return round(len(self.updated) / last, 2) if last > 0 else None

    def to_json(self) -> dict[str, Any]:
        plan = {key: value for key, value in asdict(self.plan).items() if key != "ca_bundle"}
        return {
            "schema": "rig-fleet/1", **plan, "seconds": round(self.seconds, 3),
            "updated": len(self.updated), "failures": self.failures(),
            "update_loops": sum(device.update_loop for device in self.devices),
            "time_to_update": self.time_to_update(), "updated_per_second": self.updated_per_second,
            "flashing": self.flashing, "per_device": [asdict(device) for device in self.devices],
        }

    def table(self) -> str:
        """The result as a terminal reads it: one line a device, then the summary."""
        rows = [f"{'device':<10} {'MAC':<17} {'seconds':>7}  outcome"]
        for device in self.devices:
            seconds = f"{device.seconds:7.2f}" if device.seconds is not None else f"{'—':>7}"
            loop = " [update loop]" if device.update_loop else ""
            rows.append(f"{device.name:<10} {device.mac:<17} {seconds}  {device.outcome}{loop}")
        times = self.time_to_update()
        rows.append(f"{len(self.updated)} of {len(self.devices)} updated to the offer in {self.seconds:.1f} s"
                    + (f"; time to update p50 {times['p50']} s, p90 {times['p90']} s, max {times['max']} s, "
                       f"{self.updated_per_second} devices/s" if self.updated else ""))
        rows += [f"{count:>4} × {cause}" for cause, count in self.failures().items()]
        loops = sum(device.update_loop for device in self.devices)
        if loops:
            rows.append(f"{loops:>4} × update loop: installed the same version again (the server answers 200 to "
                        "a device already on its offer, as a static file server does)")
        return "\n".join(rows)


def rehearse(plan: FleetPlan, out: Path) -> Fleet:
    """Build, flash, start and release the fleet of `plan` under `out`; stop every twin after."""
    out = Path(out)
    config = SketchConfig(version=plan.version, update_url=plan.url, ca_bundle=plan.ca_bundle,
                          check_dates=plan.check_dates, profile=plan.profile)
    artifacts = VirtualBuilder(out / "build").build(config)
    flashing = {"esptool_write": _flash_first(artifacts, out / "device-01")}
    copied = time.monotonic()
    for number in range(2, plan.devices + 1):
        folder = out / f"device-{number:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out / "device-01" / "flash.bin", folder / "flash.bin")
    flashing["copies"] = round(time.monotonic() - copied, 3)
    boards: list[VirtualBoard] = []
    lines: list[Any] = []  # the boards' open serial ports
    monitors: list[Monitor] = []
    try:
        with ThreadPoolExecutor(STARTERS) as starting:
            boards = list(starting.map(lambda number: _start(out, number), range(1, plan.devices + 1)))
        lines += [board.open() for board in boards]
        monitors = [Monitor(line, board.workdir / "serial.log").start()
                    for line, board in zip(lines, boards, strict=True)]
        devices = [Device(board.workdir.name, _mac(number), serial_log=str(board.workdir / "serial.log"))
                   for number, board in enumerate(boards, 1)]
        released = []
        for board, line in zip(boards, lines, strict=True):  # the fleet powers up as one: BOOT let go, EN pulsed
            board.reset(line)
            released.append(time.monotonic())
        deadline = released[0] + plan.timeout
        while time.monotonic() < deadline and not all(device.done for device in devices):
            time.sleep(POLL)
            for device, monitor, start in zip(devices, monitors, released, strict=True):
                _follow(device, monitor.events, start)
        time.sleep(GRACE)  # a failed check's TLS error line follows its result line
        for device, monitor, start in zip(devices, monitors, released, strict=True):
            _follow(device, monitor.events, start)
        for device in devices:
            if not device.outcome:
                device.outcome = f"no verdict within {plan.timeout:g} s"
        return Fleet(plan, devices, time.monotonic() - released[0], flashing)
    finally:
        for monitor in monitors:
            monitor.stop()
        for line in lines:
            line.close()
        with ThreadPoolExecutor(STARTERS) as stopping:  # each close waits for its twin to flush and exit
            list(stopping.map(VirtualBoard.close, boards))
        for board in boards:
            board.flash_file.unlink(missing_ok=True)  # 4 MB a device, the same image each


def _flash_first(artifacts: Artifacts, folder: Path) -> float:
    """Write `artifacts` into a twin at `folder` with the real esptool, as the rig flashes any
    board, and leave its flash file there; the seconds the write took."""
    with VirtualBoard(folder, transport="pty", io0_low=True) as board:
        started = time.monotonic()
        Esptool(board.port, before=board.esptool_reset[0], after=board.esptool_reset[1]).write(
            artifacts.flash_files())
        return round(time.monotonic() - started, 3)


def _start(out: Path, number: int) -> VirtualBoard:
    """Twin `number` on its copy of the flash, waiting in its ROM loader."""
    folder = out / f"device-{number:02d}"
    return VirtualBoard(folder, transport="pty", mac=_mac(number), flash=folder / "flash.bin", io0_low=True)


def _mac(number: int) -> str:
    """A factory MAC per device, in Espressif's OUI (24:6f:28, as the twin's default)."""
    return f"24:6f:28:00:{number >> 8:02x}:{number & 0xff:02x}"


def _follow(device: Device, events: list[Event], released: float) -> None:
    """Read `device`'s story so far from its monitor's events: its first check's verdict, the
    time to its new version, the check its new version made, an update loop."""
    running: str | None = None
    verdicts: list[tuple[str, str]] = []
    for event in events:
        if event.name == "firmware_version":
            running = event.fields["version"]
            if verdicts and verdicts[-1][0] == "update_ok" and device.seconds is None:
                device.seconds = round(event.t - released, 3)
        elif event.name in VERDICTS:
            verdicts.append((event.name, VERDICTS[event.name].format(**event.fields)))
        elif event.name == "tls_error" and verdicts and verdicts[-1][0] == "update_failed":
            # The sketch prints the TLS client's last error after a failed check: the real cause.
            verdicts[-1] = ("tls_error", f"{verdicts[-1][1]}; TLS error ({event.fields['code']}): "
                                         f"{event.fields['text']}")
    device.running = running
    device.update_loop = bool(update_loops(events))
    if not verdicts:
        return
    first, words = verdicts[0]
    if first != "update_ok":
        device.outcome = words
    elif device.seconds is not None:
        device.outcome = UPDATED
        device.then = verdicts[1][1] if len(verdicts) > 1 else None


def write_json(fleet: Fleet, path: Path) -> None:
    path.write_text(json.dumps(fleet.to_json(), indent=2) + "\n")
