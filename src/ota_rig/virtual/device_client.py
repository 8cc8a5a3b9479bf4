"""A device's update check without a board or a twin process: the twin's own sketch flow, core,
TLS client and HTTPUpdate (app.py, arduino.py, secure_client.py, tls.py, httpupdate.py,
updater.py) on a chip whose flash is in memory and whose UART is captured, run once in the
caller's thread against any update server.

`DeviceClient(config, app)` is a chip with the default partition table and `app` (the image the
device runs: its size, MD5 and SHA-256 go into the request) in its first OTA slot, built for the
core that `config.profile` names. `check()` runs what the reference sketch's setup() and one
pass of its loop() do (with `config.check_dates`, the sketch's own date check first) and returns
the lines the device printed and every connection as the device saw it: the TLS outcome, the
request bytes in wire order, the answer's header lines and the body bytes the device read (an
offered image goes into the in-memory OTA slot, as HTTPUpdate writes it). `ask(version)` sends
the same request from a device on `version` and hangs up after the answer's headers: what a
probe needs, without downloading the body. Nothing is ever sent but the device's GET.

The one difference from the twin process: `ESP.restart()` after HTTP_UPDATE_OK ends the check
instead of booting the new image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ota_rig.device import firmware, profiles
from ota_rig.device.sketch_config import SketchConfig
from ota_rig.virtual import app as sketch
from ota_rig.virtual import tls
from ota_rig.virtual.arduino import Core
from ota_rig.virtual.chip import DEFAULT_MAC, Chip, ChipReset, EFuses, Flash, parse_mac
from ota_rig.virtual.httpupdate import HttpUpdate, RunningApp
from ota_rig.virtual.mbedtls_errors import verify_info
from ota_rig.virtual.secure_client import SecureClient


@dataclass
class Connection:
    """One connection as the device saw it. `tls_version`/`cipher` are what Mbed TLS reports
    once the handshake is done; on a refusal `error` is the Mbed TLS code and text, `alert` the
    alert the device sent (None if it sent none) and `reasons` the verification flags' lines;
    `limitation` says why the twin cannot tell what the device would do."""

    host: str
    port: int
    tls_version: str | None = None
    cipher: str | None = None
    error: tuple[int, str] | None = None
    alert: str | None = None
    reasons: list[str] = field(default_factory=list)
    limitation: str | None = None
    request: bytes = b""
    header_lines: list[str] = field(default_factory=list)  # the status line, then each header
    body: bytearray = field(default_factory=bytearray)  # what the device read of the body


@dataclass
class DeviceCheck:
    """What one check left: the UART text and the connections, in order."""

    profile: str
    version: str
    uart: str
    connections: list[Connection]

    @property
    def lines(self) -> list[str]:
        return [line.rstrip("\r") for line in self.uart.split("\n") if line.strip()]


class RecordingClient(SecureClient):
    """The sketch's WiFiClientSecure, noting each connection in `connections` as it goes."""

    def __init__(self, core: Core, ca_bundle: str | None, connections: list[Connection], address: str) -> None:
        super().__init__(core, ca_bundle)
        self.connections = connections
        self.address = address

    @property
    def _current(self) -> Connection:
        return self.connections[-1]

    def connect(self, host: str, port: int, timeout: float) -> bool:
        self.connections.append(Connection(host, port))
        try:
            connected = super().connect(host, port, timeout)
        except _Halted:
            self._current.limitation = str(self.failure)
            raise
        record = self._current
        if connected and self.session is not None:
            record.tls_version, record.cipher = self.session.version, self.session.cipher
        elif isinstance(self.failure, tls.TlsError):
            record.error = (self.failure.code, self.failure.text)
            record.alert = self.failure.alert
            record.reasons = verify_info(self.failure.flags)
        return connected

    def write(self, data: bytes) -> bool:
        self._current.request += data
        return super().write(data)

    def read_line(self, timeout: float) -> bytes | None:
        line = super().read_line(timeout)
        if line is not None and line:
            self._current.header_lines.append(line.decode("latin-1"))
        return line

    def read_bytes(self, count: int) -> bytes:
        data = super().read_bytes(count)
        self._current.body += data
        return data


class _Halted(Exception):
    """The app stopped for good (a rig limitation): the check ends there."""


class _ClientCore(Core):
    def halt(self) -> None:
        raise _Halted()


class DeviceClient:
    """One device: a chip with `mac`, running `app` from app0, built with `config`, on the
    host's network: it dials `address`, or the URL's host as the host's resolver answers. Each
    check or ask starts from the same fresh chip, as after a power-on."""

    def __init__(self, config: SketchConfig, app: bytes, mac: str = DEFAULT_MAC, address: str | None = None) -> None:
        self.config = config
        self.app = app
        self.mac = parse_mac(mac)
        self.address = address or urlsplit(config.update_url).hostname or ""
        self.table = firmware.PartitionTable.from_csv(firmware.DEFAULT_PARTITIONS_CSV)
        partition = self.table.find("app0")
        self.running = RunningApp(self.table, partition, firmware.parse_image(app, base=partition.offset), app)

    def _power_on(self) -> tuple[Core, HttpUpdate, bytearray]:
        """A new chip with the default table, boot_app0 and the app; its UART goes to the buffer."""
        chip = Chip(Flash(None), EFuses(self.mac))
        chip.flash.program(firmware.PARTITION_TABLE_OFFSET, self.table.to_bytes())
        chip.flash.program(firmware.OTADATA_OFFSET, firmware.boot_app0())
        chip.flash.program(self.running.partition.offset, self.app)
        uart = bytearray()
        chip.uart.connect(uart.extend)
        core = _ClientCore(chip, profiles.get(self.config.profile), self.config.debug_level)
        return core, HttpUpdate(core, self.running, chip_size=chip.flash.size), uart

    def _result(self, version: str, uart: bytearray, connections: list[Connection]) -> DeviceCheck:
        return DeviceCheck(self.config.profile, version, uart.decode("utf-8", "replace"), connections)

    def check(self) -> DeviceCheck:
        """setup() and one update check, as the twin's app runs them."""
        core, http_update, uart = self._power_on()
        connections: list[Connection] = []

        def new_client(core: Core, ca_bundle: str | None) -> SecureClient:
            return RecordingClient(core, ca_bundle, connections, self.address)

        sketch.setup(core, self.config)
        try:
            sketch.check_for_update(core, self.config, http_update, None, new_client)
        except (ChipReset, _Halted):
            pass  # ESP.restart() after HTTP_UPDATE_OK, or the app stopped
        return self._result(self.config.version, uart, connections)

    def ask(self, version: str) -> DeviceCheck:
        """The core's request from a device on `version`, and the answer's headers only."""
        core, http_update, uart = self._power_on()
        connections: list[Connection] = []
        parts = urlsplit(self.config.update_url)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        client = RecordingClient(core, None if self.config.insecure else self.config.ca_bundle, connections,
                                 self.address)
        try:
            http_update.get(client, parts.hostname or "", parts.port or 443, path, version)
        except _Halted:
            pass
        finally:
            client.stop()
        return self._result(version, uart, connections)

