"""The sketch's Arduino-independent helpers, compiled by the host's g++ at the IDE's "All"
warning level, and run.

arduino-esp32 compiles a sketch with {compiler.warning_flags}, which arduino-cli's
`compile --warnings none|default|more|all` picks from the core's platform.txt (src/ota_rig/build/'s
docstring has the flags per core and their sources): on 2.0.x `more` is `-Wall -Werror=all`
and `all` is `-Wall -Werror=all -Wextra`, so every -Wall warning stops the build. Issue 13: the sketch's
date formatting did, with -Wformat-truncation on `char text[24]` in utcText.

What this proves: the helpers taken by name out of src/ota_rig/sketches/ota_https/ota_https.ino (the sketch's
constants, utcText, versionPart, compareVersions), with a declared-only stand-in for Arduino's
String and Mbed TLS's mbedtls_x509_time as it is in 2.28 and 3.6, compile with no warning under
`g++ -Os -c -Wall -Wextra -Werror=all -Werror` (stricter than the core: every -Wextra warning is
an error too) at -std=gnu++11 (arduino-esp32 2.0.x's C++ flags), gnu++17 and gnu++2b (3.x's
ESP-IDF 5 flags), and that utcText still prints "YYYY-MM-DD HH:MM:SS".

What it does not prove: the compiler is the host's gcc 12 (x86-64, glibc), not the cores'
xtensa-esp32-elf gcc 8.4 (2.0.x) or esp-14.2 (3.x), whose warnings differ in places; and only
the extracted helpers are compiled, not the rest of the sketch, which needs the core's headers
(WiFi, HTTPClient, Update, Mbed TLS) that no machine here has. The rest was checked by reading.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from .sketch_code import extract

HELPERS = ("utcText", "versionPart", "compareVersions")
STAND_INS = """\
#include <stdint.h>
#include <stdio.h>
#include <time.h>
class String {  // Arduino's String: the one constructor the helpers use, declared only
 public:
  String(const char *text);
};
struct mbedtls_x509_time {  // mbedtls/x509.h, 2.28 and 3.6
  int year, mon, day;
  int hour, min, sec;
};
"""
USES = """\
String nowText(time_t moment) { return utcText(moment); }
String certificateText(const mbedtls_x509_time &moment) { return utcText(moment); }
int versionOrder(const char *a, const char *b) { return compareVersions(a, b); }
"""
FLAGS = ("-Os", "-Wall", "-Wextra", "-Werror=all", "-Werror")


def compile_helpers(gxx: str, tmp_path: Path, std: str, extra: str, *args: str) -> subprocess.CompletedProcess[str]:
    unit = tmp_path / "helpers.cpp"
    unit.write_text(STAND_INS + extract(HELPERS) + extra)
    return subprocess.run([gxx, f"-std={std}", *FLAGS, *args, str(unit)], capture_output=True, text=True)


@pytest.mark.parametrize("std", ["gnu++11", "gnu++17", "gnu++2b"])
def test_the_helpers_compile_without_a_warning_at_the_all_level(gxx: str, tmp_path: Path, std: str) -> None:
    done = compile_helpers(gxx, tmp_path, std, USES, "-c", "-o", str(tmp_path / "helpers.o"))
    assert done.returncode == 0 and not done.stderr, done.stderr


def test_utc_text_prints_the_protocols_form_and_never_cuts_it(gxx: str, tmp_path: Path) -> None:
    """Run: utcText's char-buffer core for an NTP time, an X.509 date, and ints at their limits."""
    program = USES + """\
String::String(const char *text) { puts(text); }
int main() {
  nowText(1577836800);  // CLOCK_IS_SET
  certificateText(mbedtls_x509_time{2049, 12, 31, 23, 59, 59});
  certificateText(mbedtls_x509_time{-2147483647 - 1, -2147483647 - 1, 0, 7, 2147483647, 5});
  return versionOrder("0.10", "0.9") > 0 && versionOrder("1.2", "1.2.0") == 0 ? 0 : 1;
}
"""
    done = compile_helpers(gxx, tmp_path, "gnu++17", program, "-o", str(tmp_path / "helpers"))
    assert done.returncode == 0, done.stderr
    ran = subprocess.run([str(tmp_path / "helpers")], capture_output=True, text=True)
    assert ran.returncode == 0
    assert ran.stdout.splitlines() == ["2020-01-01 00:00:00", "2049-12-31 23:59:59",
                                       "-2147483648--2147483648-00 07:2147483647:05"]
