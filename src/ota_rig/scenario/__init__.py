"""One OTA scenario's parts, wired together: certificates, the update server, builds, the board,
esptool and the serial monitor, all writing their records into the scenario's folder.

    scenario = OtaScenario(folder, board, pki, builder, profile)
    listener = scenario.listen(pki.dns())                # an HTTPS listener with that certificate
    old = scenario.build("0.1", listener)                # the sketch, pointed at that listener
    scenario.offer(scenario.build("0.2", listener))      # what /update hands out
    monitor = scenario.start(old)                        # esptool writes it, the board boots it
    monitor.expect("update_ok", timeout=10)

The folder keeps everything a reader needs afterwards: serial.log (every UART line as it
arrived), server.jsonl (every connection the server saw), esptool.log, for the virtual board
twin.log and flash.bin, and, written at close, scenario.json: the scenario's facts on one
clock (ota_rig.records), for the run's results.json and report.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ota_rig.bench.board import REAPPEAR_TIMEOUT, SerialBoard
from ota_rig.bench.flash import ROM_BAUD, ChipInfo, Esptool, connected_chip, line_baud, skipped_writes
from ota_rig.bench.monitor import Monitor
from ota_rig.build import preflight
from ota_rig.build.arduino_cli import ArduinoCliBuilder
from ota_rig.build.artifacts import Artifacts
from ota_rig.build.virtual_builder import VirtualBuilder
from ota_rig.device.sketch_config import SketchConfig
from ota_rig.scenario.record import scenario_record
from ota_rig.server.app import Listener, UpdateServer
from ota_rig.server.faults import Fault
from ota_rig.server.pki import Pki, ServerCert
from ota_rig.server.records import RequestRecord, ServerLog

log = logging.getLogger(__name__)
NO_POWER_SWITCH = ("no power switch on this board, so EN was pulled instead of the power cut "
                   "(give its labgrid place a power resource: docs/hardware.md, \"Power and wired reset on a farm\")")
progress = logging.getLogger("ota_rig.progress")  # what `rig run` shows while a scenario runs


@dataclass(frozen=True)
class Step:
    """Something the rig did to the board, in seconds since the scenario began."""

    name: str  # "build", "flash", "reset", "read-back", "power cut", "time lapse"
    start: float
    end: float
    detail: str = ""


@dataclass(frozen=True)
class Offered:
    """What /update handed out: the version it claimed and the bytes it served."""

    version: str
    sha256: str
    size: int
    rate: float | None
    fault: str | None  # Fault's repr when the answer went wrong on purpose


class OtaScenario:
    """The rig around one device for one test. Close it (or use it as a context manager) to
    stop the monitor, the server and a virtual board, keeping every record."""

    def __init__(
        self,
        folder: Path,
        board: SerialBoard,
        pki: Pki,
        builder: VirtualBuilder | ArduinoCliBuilder,
        profile: str,
        wifi: tuple[str, str] | None = None,
        ports: dict[str, int] | None = None,
        baud: int | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.board = board
        self.pki = pki
        self.builder = builder
        self.profile = profile
        self.wifi = wifi  # (SSID, password) the sketch joins; None: SketchConfig's defaults
        self.ports = {} if ports is None else ports  # listener name -> port, shared by a session
        self.baud = line_baud(baud)  # esptool's --baud (ota_rig.bench.flash.line_baud)
        self.timings: dict[str, float] = defaultdict(float)  # seconds the rig itself spent, by step
        self.began = time.monotonic()  # the scenario's clock starts here
        self.began_at = datetime.datetime.now(datetime.timezone.utc)
        self.steps: list[Step] = []
        self.builds: list[tuple[SketchConfig, Artifacts]] = []
        self.offered: list[Offered] = []
        self.monitors: list[Monitor] = []  # one per start(), in order: serial.log holds them all
        self.chip_seen: ChipInfo | None = None  # as esptool described the board
        self.about: dict[str, object] = {}  # what the test runner knows (test name, board kind)
        with self._timed("server"):
            # The server listens on the address the board reaches the runner at, the one the
            # certificates name.
            self.server = UpdateServer(self.folder / "firmware", self.folder / "server.jsonl", host=pki.address)
            self.server.start()
        self.monitor: Monitor | None = None
        self._line = None
        self._chip = "esp32"  # esptool's --chip: what the last flashed build is for

    @contextmanager
    def _timed(self, step: str, detail: str = "") -> Iterator[list[str]]:
        """Count the time in `step`; a step the board sees is also a Step of the timeline, whose
        detail gets what the caller adds to the list it is given."""
        started = time.monotonic()
        if step != "server":
            progress.info("%s %s", step, detail)
        notes: list[str] = []
        try:
            yield notes
        finally:
            ended = time.monotonic()
            self.timings[step] += ended - started
            if step != "server":
                detail = "; ".join([detail, *notes]) if notes else detail
                self.steps.append(Step(step, started - self.began, ended - self.began, detail))

    def _instant(self, step: str, detail: str = "") -> None:
        now = time.monotonic() - self.began
        self.steps.append(Step(step, now, now, detail))

    # --- the server side --------------------------------------------------------------
    def listen(self, cert: ServerCert, name: str | None = None, tls_versions: tuple[str, ...] = ()) -> Listener:
        """An HTTPS listener presenting `cert` (named after it and the TLS versions, unless
        `name` says otherwise), offering only `tls_versions` if given.

        A listener keeps the port its name had in an earlier scenario of the session, when
        that port is still free: the update URL, and so the build, stays the same, and a
        build that takes minutes with arduino-cli is made once."""
        name = name or "-".join((cert.name, *tls_versions))
        with self._timed("server"):
            try:
                listener = self.server.add_listener(name, cert, self.ports.get(name, 0), tls_versions)
            except OSError:  # somebody took that port meanwhile
                listener = self.server.add_listener(name, cert, tls_versions=tls_versions)
        self.ports[name] = listener.port
        return listener

    def offer(
        self, artifacts: Artifacts, *, rate: float | None = None, fault: Fault = Fault(), image: bytes | None = None
    ) -> None:
        """Serve `artifacts`' app on /update (at `rate` bytes per second, if given), or `image`
        in its place (a tampered copy), answering with `fault` if given."""
        data = artifacts.app.read_bytes() if image is None else image
        self.server.offer(artifacts.version, data, rate=rate, fault=fault)
        self.offered.append(
            Offered(
                artifacts.version,
                hashlib.sha256(data).hexdigest(),
                len(data),
                rate,
                None if fault == Fault() else repr(fault),
            )
        )

    def wait_for_download(self, at_least: int, timeout: float) -> RequestRecord:
        """Wait until an answer has sent `at_least` body bytes, as the server sees it: a
        download in progress, or one whose connection has ended since. Its record."""
        deadline = time.monotonic() + timeout * self.board.time_scale
        while True:
            answers = self.server.sending() + self.server.log.requests()
            for request in answers:
                if request.bytes_sent >= at_least:
                    return request
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no download reached {at_least} bytes within {timeout:g} s; "
                    f"the server sent {[r.bytes_sent for r in answers]}"
                )
            time.sleep(0.01)

    @property
    def server_log(self) -> ServerLog:
        """The server's record, once the connections in flight have closed and been written."""
        self.server.wait_idle()
        return self.server.log

    # --- the device side --------------------------------------------------------------
    def build(
        self,
        version: str,
        listener: Listener | None = None,
        *,
        url: str | None = None,
        ca_bundle: str | None = None,
        **config: Any,  # more SketchConfig fields (check_dates=False, ...), of their own types
    ) -> Artifacts:
        """The reference sketch at `version`, checking `listener`'s /update (or `url`) and
        trusting the main CA (or `ca_bundle`); `config` sets other SketchConfig fields."""
        if url is None:
            assert listener is not None, "build() needs a listener or a url"
            url = self.server.url(listener.name)
        if self.wifi:
            config = {"wifi_ssid": self.wifi[0], "wifi_password": self.wifi[1], **config}
        ca = self.pki.authority().pem if ca_bundle is None else ca_bundle
        sketch = SketchConfig(version=version, update_url=url, ca_bundle=ca, profile=self.profile, **config)
        with self._timed("build", version):
            artifacts = self.builder.build(sketch)
        self.builds.append((sketch, artifacts))
        return artifacts

    def flash(self, artifacts: Artifacts) -> str:
        """Check the artifact set against the board (ota_rig.build.preflight), then write it with
        esptool, as a user would; esptool.log keeps its output. A file whose region already
        holds it is not written again (`write-flash --skip-flashed`): the flash step's detail
        names those regions ("already in flash: 0x1000 0x8000"), esptool.log says so for each."""
        preflight.check(artifacts, self.board.chip)
        self._chip = artifacts.chip
        with self._timed("flash", artifacts.version) as notes, self._esptool() as tool:
            output = tool.write(artifacts.flash_files(), skip_flashed=True)
            skipped = skipped_writes(output)
            if skipped:
                notes.append("already in flash: " + " ".join(f"0x{offset:x}" for offset in skipped))
            return output

    def start(self, artifacts: Artifacts) -> Monitor:
        """Flash `artifacts`, open the port, reset the board into them and follow its UART."""
        self.flash(artifacts)
        return self.boot(artifacts)

    def boot(self, artifacts: Artifacts) -> Monitor:
        """Open the port, reset the board into `artifacts` (which `flash` wrote) and follow its
        UART: `start` without the flashing, for a test that readies something in between."""
        self._line = self.board.open(held_in_reset=True)
        self.board.reset(self._line, discard_pending=True)
        self._instant("reset", artifacts.version)
        self.monitor = Monitor(
            self._line, self.folder / "serial.log", reopen=self._reopen_line, time_scale=self.board.time_scale
        )
        self.monitor.start()
        self.monitors.append(self.monitor)
        return self.monitor

    def _reopen_line(self):
        """The monitor lost the port (the board left the USB bus): wait for it and go on."""
        if self._line is not None:
            try:
                self._line.close()
            except Exception:  # the device is gone; closing its file may fail too
                pass
        self._line = self.board.open()
        return self._line

    def reset(self) -> None:
        """Press reset with the monitor running (everything the board says stays in the log)."""
        assert self._line is not None, "start() the board first"
        self.board.reset(self._line)
        self._instant("reset")

    def power_cut(self) -> str:
        """Cut the board's power wherever it is and bring it back, with the monitor following.

        A twin's process is killed and started again on its flash, and boots it by itself; a
        farm's board is switched off and on through its place's power switch (a PDU outlet, a
        USB hub port: ota_rig.bench.labgrid_controls), held in reset until the monitor reads its
        port again if its EN is wired. Either returns "power". A board without a power switch
        has EN pulled instead ("EN"), the nearest it gets, and the step says so: the chip stops
        mid-instruction either way and flash keeps what was written."""
        assert self.monitor is not None, "start() the board first"
        monitor = self.monitor
        if not self.board.can_cut_power:
            log.warning("%s: %s", self.folder.name, NO_POWER_SWITCH)
            self._instant("power cut", NO_POWER_SWITCH)
            self.reset()
            return "EN"
        self._instant("power cut")
        reopened = monitor.reopened

        def back(port_went: bool) -> None:
            """Wait until the monitor reads the port again: found anew if it went with the power."""
            deadline = time.monotonic() + REAPPEAR_TIMEOUT
            while monitor.reopened == reopened and (port_went or monitor.away) and not monitor.error:
                if time.monotonic() > deadline:
                    raise AssertionError(f"the monitor did not find {self.board.port} again after the power cut")
                time.sleep(0.01)

        cutting = time.monotonic()
        went = self.board.power_cycle(listening=lambda: back(False))
        self.timings["power cut"] += time.monotonic() - cutting  # the power off and on (a twin: a new process)
        back(went)
        return "power"

    def time_lapse(self, rate: float, device_seconds: float) -> float:
        """Let the board's next `device_seconds` pass `rate` times faster (a twin only);
        returns the rate in force, to scale the timeouts that wait for it."""
        rate = self.board.time_lapse(rate, device_seconds)
        self._instant("time lapse", f"{rate:g}x for {device_seconds:g} device s")
        return rate

    def read_flash(self, offset: int, size: int) -> bytes:
        """Read flash back with esptool (the monitor stops: the port is esptool's now)."""
        with self._timed("read-back", f"0x{offset:x}+0x{size:x}"), self._esptool() as tool:
            return tool.read(offset, size)

    @contextmanager
    def reading_flash(self, detail: str = "") -> Iterator[Esptool]:
        """esptool in one session for several read-backs (one connection, one stub upload):
        `read(offset, size)` for bytes a verdict needs, `holds(offset, path)` for a region that
        must hold a file, compared by MD5 on the chip (`esptool verify-flash`)."""
        with self._timed("read-back", detail), self._esptool() as tool, tool.session():
            yield tool

    @contextmanager
    def _esptool(self) -> Iterator[Esptool]:
        """esptool for the board in download mode, at the scenario's baud rate, or at the rate
        the board fell back to earlier (SerialBoard.baud_limit), or at the ROM's on a line whose
        rate changes nothing (SerialBoard.line_has_rate); esptool.log keeps its output."""
        self._close_line()
        self.board.enter_bootloader()
        before, after = self.board.esptool_reset
        baud = min(self.baud, self.board.baud_limit or self.baud) if self.board.line_has_rate else ROM_BAUD
        tool = Esptool(self.board.port, chip=self._chip, baud=baud, before=before, after=after, in_process=True,
                       reconnect=self.board.enter_bootloader)
        if not self.board.line_has_rate:
            tool.output.append(f"[rig] esptool stays at {ROM_BAUD} baud: the rate of this board's line changes "
                               "nothing (an unpaced twin's pty)\n\n")
        try:
            yield tool
        finally:
            output = "".join(tool.output)
            with (self.folder / "esptool.log").open("a") as record:
                record.write(output)
            if tool.fell_back:
                self.board.baud_limit = tool.baud
            self.chip_seen = self.chip_seen or connected_chip(output)

    def _close_line(self) -> None:
        if self.monitor is not None:
            self.monitor.stop()
        if self._line is not None:
            self._line.close()
            self._line = None

    def close(self) -> None:
        """The board first, so that no request of its is cut off by the server going away."""
        self._close_line()
        stopping = time.monotonic()
        self.board.close()
        self.timings["board stop"] = time.monotonic() - stopping
        with self._timed("server"):
            self.server.stop()
        try:
            record = scenario_record(self)
        except (OSError, ValueError, KeyError) as err:  # a record file the rig cannot read back
            log.warning("%s: no scenario record: %s", self.folder.name, err)
            record = {"record_error": f"{type(err).__name__}: {err}"}
        (self.folder / "scenario.json").write_text(json.dumps(record, indent=1))

    def __enter__(self) -> "OtaScenario":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
