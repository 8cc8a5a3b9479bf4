"""The arduino-esp32 core as the sketch sees it: Serial, millis(), delay(), ESP.restart(), the
Wi-Fi MACs, and the two log formats that reach the UART.

- The core's log macro (`log_e`, `log_w`, ...) prints `[<ms>][<L>][<file>:<line>] <function>(): `
  + the format + `\\r\\n`, when CORE_DEBUG_LEVEL admits the level (shared/reference/
  esp32-ota-device.md, section 7). Formats that end in `\\n` therefore leave an empty line.
- ESP-IDF's precompiled libraries log at ERROR in their own format, `E (<ms>) <tag>: <message>`,
  whatever the sketch's debug level.

The twin models levels 0 (none) to 2 (warn): the lines below are those the OTA path prints at
those levels. Levels 3-5 add info, debug and verbose lines the twin does not print.
"""

from __future__ import annotations

from ota_rig.device import printed_lines
from ota_rig.device.profiles import Profile
from ota_rig.virtual.chip import Chip, ResetReason

LEVELS = {"E": 1, "W": 2, "I": 3, "D": 4, "V": 5}


class Core:
    """One boot of the core: its clock starts when the app starts."""

    def __init__(self, chip: Chip, profile: Profile, debug_level: int) -> None:
        self.chip = chip
        self.profile = profile
        self.debug_level = debug_level
        self._started = chip.clock.now()
        self._epoch = 0.0  # time(NULL) - device clock: 0 until NTP sets the time

    def set_time(self, unix_time: float) -> None:
        """settimeofday() (what the SNTP client does once it has the time)."""
        self._epoch = unix_time - self.chip.clock.now()

    def unix_time(self) -> float:
        """time(NULL): the device clock since NTP set it (a time lapse moves it too)."""
        return self._epoch + self.chip.clock.now()

    def halt(self) -> None:
        """The app stops for good (until a reset): the twin cannot go on faithfully."""
        while True:
            self.chip.sleep(3600)

    def millis(self) -> int:
        return int((self.chip.clock.now() - self._started) * 1000)

    def println(self, text: str) -> None:
        self.chip.uart.print(text + "\r\n")

    def report(self, name: str, **fields: object) -> None:
        """The sketch's report(): one line of the printed-lines table."""
        self.println(printed_lines.render(name, **fields))

    def log(self, level: str, file: str, line: int, function: str, message: str) -> None:
        """The core's log macro. `message` is the formatted text, with any `\\n` it ends in."""
        if LEVELS[level] <= self.debug_level:
            self.chip.uart.print(f"[{self.millis():6d}][{level}][{file}:{line}] {function}(): {message}\r\n")

    def idf_error(self, tag: str, message: str) -> None:
        self.chip.uart.print(f"E ({self.millis()}) {tag}: {message}\r\n")

    def delay(self, seconds: float) -> None:
        self.chip.sleep(seconds)

    def restart(self) -> None:
        """ESP.restart(): prints nothing; the ROM banner that follows says SW_CPU_RESET."""
        self.chip.software_reset(ResetReason.SW_CPU_RESET)

    @property
    def base_mac(self) -> str:
        """Network.macAddress() on 3.x: the base MAC, which Network.begin() sets from the
        factory MAC in eFuse on a classic ESP32 (NetworkManager.cpp), upper-case."""
        return _mac_text(self.chip.efuses.mac)

    @property
    def sta_mac(self) -> str:
        """WiFi.macAddress(): the base MAC from eFuse, upper-case (the station uses it as is)."""
        return _mac_text(self.chip.efuses.mac)

    @property
    def ap_mac(self) -> str:
        """WiFi.softAPmacAddress() in STA mode. 2.0.x asks the Wi-Fi driver, which derives the
        soft-AP MAC from the base MAC with the last octet + 1 (a real pair: 0C:B8:15:F8:AD:1C /
        ...:1D). 3.x asks the AP's network interface, which does not exist until the AP is
        started, and returns zeros."""
        if self.profile.ap_mac_zero_in_sta_mode:
            return _mac_text(bytes(6))
        mac = bytearray(self.chip.efuses.mac)
        mac[-1] = (mac[-1] + 1) & 0xFF
        return _mac_text(mac)


def _mac_text(mac: bytes | bytearray) -> str:
    return ":".join(f"{b:02X}" for b in mac)
