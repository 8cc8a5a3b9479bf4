"""Run each device profile's client against an update server and keep what it saw.

For each profile: one update check as the device makes it from `--version` (the reference
sketch's setup() and one pass of loop(), with the stock core's HTTPUpdate: the verdict and the
lines come from the twin's code, ota_rig.virtual.device_client), then two probes that stop after
the answer's headers: a device far older than any release (`OLD_VERSION`) and a device already
on the offered version (when that version is known). The offered image is the body of the first
200 a device read whole; when no check downloaded one and the old device is offered one, that
device's full check downloads it. The leaf certificate's dates are read once over a plain TLS
connection. Nothing but GET requests (and TLS handshakes) ever reach the server.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import socket
import ssl
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from cryptography import x509

from ota_rig.build.virtual_builder import virtual_app
from ota_rig.device import firmware, printed_lines, profiles
from ota_rig.device.sketch_config import SketchConfig
from ota_rig.errors import RigError
from ota_rig.virtual.device_client import Connection, DeviceCheck, DeviceClient

OLD_VERSION = "0.0.0"  # older than any dotted version a server compares (and 0 as a float)
# The lines that end a check, and what the sketch calls them (ota_https.ino's comment block).
VERDICTS = ("update_ok", "no_updates", "update_failed", "cert_expired", "cert_not_yet_valid")
# esp_image_header_t.chip_id of each target: esptool 5.6 esptool/targets/<chip>.py IMAGE_CHIP_ID.
CHIP_NAMES = {0: "ESP32", 2: "ESP32-S2", 5: "ESP32-C3", 9: "ESP32-S3", 12: "ESP32-C2", 13: "ESP32-C6",
              16: "ESP32-H2", 18: "ESP32-P4", 20: "ESP32-C61", 23: "ESP32-C5", 25: "ESP32-H21", 28: "ESP32-H4"}
OTA_SLOT_SIZE = firmware.PartitionTable.from_csv(firmware.DEFAULT_PARTITIONS_CSV).find("app1").size


@dataclass(frozen=True)
class Answer:
    """The answer's status line and headers as the device read them (HTTPClient lower-cases
    nothing: names as sent), and how its body is framed."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]

    @classmethod
    def from_lines(cls, lines: list[str]) -> Answer | None:
        if not lines or not lines[0].startswith("HTTP/"):
            return None
        _, _, rest = lines[0].partition(" ")
        code, _, reason = rest.partition(" ")
        headers = tuple((name.strip(), value.strip()) for name, _, value in (line.partition(":") for line in lines[1:]))
        return cls(int(code) if code.isdigit() else 0, reason, headers)

    def header(self, name: str) -> str | None:
        return next((value for key, value in self.headers if key.lower() == name.lower()), None)

    @property
    def length(self) -> int | None:
        value = self.header("Content-Length")
        return int(value) if value is not None and value.isdigit() else None

    @property
    def framing(self) -> str:
        """Content-Length, chunked, or close-delimited (HTTP/1.0 style: the end of the connection ends
        it); none for the statuses that carry no body (RFC 9110: 1xx, 204, 304)."""
        if self.status < 200 or self.status in (204, 304):
            return "no body"
        if (self.header("Transfer-Encoding") or "").lower() == "chunked":
            return "chunked"
        return "content-length" if self.length is not None else "close-delimited"


@dataclass(frozen=True)
class Verdict:
    """The line that ended the device's check: `name` from printed_lines, its text, and for a
    failure the code and text the sketch printed. name "none" when no such line came."""

    name: str
    line: str
    code: int | None = None
    text: str = ""

    @classmethod
    def from_lines(cls, lines: list[str]) -> Verdict:
        found = cls("none", "")
        for text in lines:
            match = printed_lines.classify(text)
            if match and match[0].name in VERDICTS:
                fields = match[1]
                found = cls(match[0].name, text, int(fields["code"]) if "code" in fields else None,
                            fields.get("text", ""))
        return found


@dataclass(frozen=True)
class ServerCertificate:
    """The leaf certificate the server presents, as read over a plain TLS connection."""

    subject: str
    issuer: str
    not_before: dt.datetime
    not_after: dt.datetime

    def days_left(self, today: dt.datetime) -> float:
        return (self.not_after - today).total_seconds() / 86400


@dataclass(frozen=True)
class OfferedImage:
    """The body of a 200, as a device read it whole, and what ESP-IDF and the rig can read in it."""

    data: bytes
    x_md5: str | None

    @property
    def md5(self) -> str:
        return hashlib.md5(self.data).hexdigest()

    @property
    def problem(self) -> str | None:
        """Why ESP-IDF would not take it as an app image (None: it would parse)."""
        if not self.data or self.data[0] != firmware.IMAGE_MAGIC:
            start = self.data[:8].hex(" ") or "nothing"
            return f"it starts with {start}, not the image magic e9"
        try:
            firmware.parse_image(self.data)
        except firmware.FirmwareFormatError as err:
            return str(err)
        return None

    @property
    def chip_id(self) -> int | None:
        return firmware.parse_image(self.data).chip_id if self.problem is None else None

    @property
    def sketch_version(self) -> str | None:
        """The version a virtual build of the reference sketch carries in its constants. An
        arduino-cli build keeps its version only in the sketch's own constants, which no format
        names, and its app descriptor holds the core's lib-builder version (README, "The rule
        of fidelity"): None then."""
        if self.problem is not None:
            return None
        try:
            return SketchConfig.from_image(firmware.parse_image(self.data)).version
        except ValueError:
            return None


@dataclass
class ProfileCheck:
    """One profile: its check from the device's version and the probes' answers."""

    profile: profiles.Profile
    check: DeviceCheck
    old_device: DeviceCheck | None = None  # a device on OLD_VERSION (headers only, or a full check)
    current_device: DeviceCheck | None = None  # a device on the offered version (headers only)

    @property
    def verdict(self) -> Verdict:
        return Verdict.from_lines(self.check.lines)

    @property
    def update_connection(self) -> Connection | None:
        """The connection the update request went over (the last one of the check)."""
        return self.check.connections[-1] if self.check.connections else None


@dataclass
class ServerCheck:
    """Everything one `rig check-server` run saw."""

    url: str
    version: str
    mac: str
    date_check: bool
    checked_at: dt.datetime
    profiles: list[ProfileCheck] = field(default_factory=list)
    certificate: ServerCertificate | None = None
    certificate_error: str = ""
    image: OfferedImage | None = None
    offered_version: str | None = None
    offered_version_source: str = ""  # "--offered-version", "the image's sketch constants", or ""


def check_server(url: str, ca_bundle: str, version: str, *, profile_names: list[str], mac: str,
                 address: str | None = None, offered_version: str | None = None,
                 date_check: bool = False) -> ServerCheck:
    """Check `url` with each profile (see the module's docstring)."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise RigError(f"{url!r} is not an https:// URL; the device's HTTPUpdate asks only over HTTPS here")
    host, port = parts.hostname, parts.port or 443
    dial = address or _resolve(host)
    result = ServerCheck(url, version, mac, date_check, dt.datetime.now(dt.timezone.utc).replace(microsecond=0))
    clients = {}
    for name in profile_names:
        config = SketchConfig(version=version, update_url=url, ca_bundle=ca_bundle, check_dates=date_check,
                              profile=name)
        clients[name] = client = DeviceClient(config, virtual_app(config), mac=mac, address=dial)
        result.profiles.append(ProfileCheck(profiles.get(name), client.check()))
    result.certificate, result.certificate_error = _server_certificate(host, port, dial)
    result.image = _first_image(result.profiles)
    for checked in result.profiles:
        checked.old_device = clients[checked.profile.name].ask(OLD_VERSION)
    if result.image is None:  # nothing downloaded yet: the old device's own check takes the offer
        first = next((c for c in result.profiles if _status(c.old_device) == 200), None)
        if first is not None:
            first.old_device = _full_check(first, url, ca_bundle, mac, dial, date_check)
            result.image = _first_image([ProfileCheck(first.profile, first.old_device)])
    if offered_version:
        result.offered_version, result.offered_version_source = offered_version, "--offered-version"
    elif result.image is not None and result.image.sketch_version:
        result.offered_version = result.image.sketch_version
        result.offered_version_source = "the image's sketch constants"
    if result.offered_version:
        for checked in result.profiles:
            checked.current_device = clients[checked.profile.name].ask(result.offered_version)
    return result


def _full_check(checked: ProfileCheck, url: str, ca_bundle: str, mac: str, dial: str, date_check: bool) -> DeviceCheck:
    config = SketchConfig(version=OLD_VERSION, update_url=url, ca_bundle=ca_bundle, check_dates=date_check,
                          profile=checked.profile.name)
    return DeviceClient(config, virtual_app(config), mac=mac, address=dial).check()


def _status(device: DeviceCheck | None) -> int | None:
    """The status of the answer to the device's request, if one came."""
    if device is None or not device.connections:
        return None
    answer = Answer.from_lines(device.connections[-1].header_lines)
    return answer.status if answer else None


def _first_image(checks: list[ProfileCheck]) -> OfferedImage | None:
    for checked in checks:
        connection = checked.update_connection
        answer = Answer.from_lines(connection.header_lines) if connection else None
        if connection and answer and answer.status == 200 and connection.body and \
                len(connection.body) == answer.length:
            return OfferedImage(bytes(connection.body), answer.header("x-MD5"))
    return None


def _resolve(host: str) -> str:
    """The address the host's resolver gives for `host` (IPv4 first, as lwIP asks)."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise RigError(f"{host} does not resolve here; pass --address with the server's IP address") from None
    infos.sort(key=lambda info: info[0] != socket.AF_INET)
    return str(infos[0][4][0])


def _server_certificate(host: str, port: int, address: str) -> tuple[ServerCertificate | None, str]:
    """The leaf the server presents for `host` (SNI), without judging it: the device's verdicts
    come from the twin's client; this only reads the dates."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1
    context.set_ciphers("ALL:@SECLEVEL=0")
    try:
        with socket.create_connection((address, port), timeout=10) as sock, \
                context.wrap_socket(sock, server_hostname=host) as tls_sock:
            der = tls_sock.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError) as err:
        return None, f"could not read the certificate: {err}"
    if not der:
        return None, "the server presented no certificate"
    leaf = x509.load_der_x509_certificate(der)
    return ServerCertificate(leaf.subject.rfc4514_string(), leaf.issuer.rfc4514_string(),
                             leaf.not_valid_before_utc, leaf.not_valid_after_utc), ""
