"""Every line the device prints that the rig reads: one table, used by the sketch's test, the
twin (which prints from it) and the monitor (which parses with it).

A `Line` has a name, a template and the pattern of each field. The template is the text the
device prints with `{field}` where a value goes; the pattern that parses it is derived from the
template, so the two cannot drift. Lines come from four sources:

- `sketch`: printed by ota_rig/sketches/ota_https/ota_https.ino through its `report(...)` helper, one
  call per line (tests/unit/test_protocol.py proves the table and the .ino agree both ways);
- `core`: arduino-esp32's log macro, `[<ms>][<L>][<file>:<line>] <function>(): <message>`
  (shared/reference/esp32-ota-device.md, section 7);
- `idf`: ESP-IDF's own log format, `E (<ms>) <tag>: <message>`;
- `rom`: the ROM bootloader's banner (section 12.1).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

SKETCH, CORE, IDF, ROM = "sketch", "core", "idf", "rom"

_PLACEHOLDER = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class Line:
    """One kind of line: `template` with `{name}` placeholders, each parsed by `fields[name]`
    (default: any text)."""

    name: str
    template: str
    source: str
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def field_names(self) -> list[str]:
        return _PLACEHOLDER.findall(self.template)

    @cached_property
    def regex(self) -> re.Pattern[str]:
        parts, last = [], 0
        for match in _PLACEHOLDER.finditer(self.template):
            parts.append(re.escape(self.template[last : match.start()]))
            name = match.group(1)
            parts.append(f"(?P<{name}>{self.fields.get(name, '.*?')})")
            last = match.end()
        parts.append(re.escape(self.template[last:]))
        return re.compile("^" + "".join(parts) + "$")

    def render(self, **values: object) -> str:
        """The line as the device prints it, without the line ending."""
        missing = set(self.field_names) - set(values)
        if missing:
            raise KeyError(f"{self.name} needs {sorted(missing)}")
        return _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), self.template)

    def parse(self, text: str) -> dict[str, str] | None:
        match = self.regex.match(text)
        return match.groupdict() if match else None


_INT = r"-?\d+"
_ISO = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"

LINES: tuple[Line, ...] = (
    # --- the reference sketch ---------------------------------------------------------
    Line("firmware_version", "Firmware version {version}", SKETCH, {"version": r"\S+"}),
    Line("wifi_connecting", "WiFi: connecting to {ssid}", SKETCH),
    Line("wifi_connected", "WiFi: connected, IP address {ip}", SKETCH, {"ip": r"[\d.]+"}),
    Line("ntp_waiting", "NTP: waiting for time from {server}", SKETCH),
    Line("ntp_synced", "NTP: time is {time} UTC", SKETCH, {"time": _ISO}),
    Line("date_check_off", "Certificate date check: off (the stock core accepts any dates)", SKETCH),
    Line("insecure_mode", "TLS: setInsecure(), any server certificate is accepted: INSECURE", SKETCH),
    Line("signature_required", "Firmware signature: required, ECDSA P-256 key built in", SKETCH),
    Line("update_checking", "Update: checking {url}", SKETCH, {"url": r"\S+"}),
    Line("cert_dates_ok", "Certificate: valid {not_before} to {not_after} UTC", SKETCH,
         {"not_before": _ISO, "not_after": _ISO}),
    Line("cert_expired", "Certificate: expired on {not_after} UTC, update refused", SKETCH, {"not_after": _ISO}),
    Line("cert_not_yet_valid", "Certificate: not valid before {not_before} UTC, update refused", SKETCH,
         {"not_before": _ISO}),
    Line("update_failed", "HTTP_UPDATE_FAILD Error ({code}): {text}", SKETCH, {"code": _INT}),
    Line("tls_error", "TLS error ({code}): {text}", SKETCH, {"code": _INT}),
    Line("signature_missing", "Signature: no signed manifest before the image, update refused", SKETCH),
    Line("signature_invalid", "Signature: does not verify with the built-in key, update refused", SKETCH),
    Line("image_mismatch", "Signature: the image does not match its signed manifest, update refused", SKETCH),
    Line("downgrade_refused", "Update: signed version {version} is older than {current}, update refused", SKETCH),
    Line("signature_valid", "Signature: valid, made with the built-in key", SKETCH),
    Line("no_updates", "HTTP_UPDATE_NO_UPDATES", SKETCH),
    Line("update_ok", "HTTP_UPDATE_OK", SKETCH),
    Line("restarting", "Restarting into the new firmware", SKETCH),
    Line("retry", "Update: next check in {seconds} s", SKETCH, {"seconds": r"\d+"}),
    # --- arduino-esp32's log macro and ESP-IDF's log ----------------------------------
    Line("core_log", "[{ms}][{level}][{file}:{line}] {function}(): {message}", CORE,
         {"ms": r"\s*\d+", "level": "[EWIDV]", "file": r"[\w.\-]+", "line": r"\d+", "function": r"\w+",
          "message": ".*"}),
    Line("idf_log", "{level} ({ms}) {tag}: {message}", IDF,
         {"level": "[EWIDV]", "ms": r"\d+", "tag": r"[\w\-]+", "message": ".*"}),
    # --- the ROM ------------------------------------------------------------------------
    Line("rom_banner", "ets {date}", ROM, {"date": r"\w{3} [ \d]\d \d{4} \d\d:\d\d:\d\d"}),
    Line("reset", "rst:0x{code} ({reason}),boot:0x{strap} ({mode})", ROM,
         {"code": "[0-9a-f]+", "reason": r"\w+", "strap": "[0-9a-f]+", "mode": r".+"}),
)

BY_NAME: dict[str, Line] = {line.name: line for line in LINES}


def line(name: str) -> Line:
    """The table entry called `name`; a KeyError names the unknown line."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"no protocol line named {name!r}") from None


def render(name: str, **values: object) -> str:
    return line(name).render(**values)


def classify(text: str, table: Sequence[Line] = LINES) -> tuple[Line, dict[str, str]] | None:
    """The first entry of `table` that `text` matches, with its fields; None for any other line."""
    for entry in table:
        values = entry.parse(text)
        if values is not None:
            return entry, values
    return None
