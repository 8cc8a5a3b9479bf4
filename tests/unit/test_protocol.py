"""src/ota_rig/device/printed_lines.py and the reference sketch agree, both ways. The table's lines also render and
parse back, and real device lines from shared/reference/esp32-ota-device.md get the right name."""

from __future__ import annotations

import re

import pytest

from ota_rig.build.artifacts import SKETCH_DIR
from ota_rig.device import printed_lines

SKETCH = SKETCH_DIR / "ota_https.ino"
SKETCH_LINES = [line for line in printed_lines.LINES if line.source == printed_lines.SKETCH]
HOLE = "\0"  # where a value goes, in a format or a template

CONVERSION = re.compile(r"%(?:%|s|d|u|ld|lu)|%")  # the conversions report() formats may use
PRINTING = re.compile(r"\bSerial\d?\s*\.\s*(?:print|println|printf|write)\b"  # and the other ways to print:
                      r"|\b(?:printf|puts|ets_printf|log_[ewidv])\s*\(")


def strip_comments(source: str) -> str:
    """C++ source without comments. String and character literals stay as they are."""
    out, i = [], 0
    while i < len(source):
        if source.startswith("//", i):
            i = source.find("\n", i)
            i = len(source) if i < 0 else i
        elif source.startswith("/*", i):
            i = source.index("*/", i) + 2
            out.append(" ")
        elif source[i] in "\"'":
            end = literal_end(source, i)
            out.append(source[i:end])
            i = end
        else:
            out.append(source[i])
            i += 1
    return "".join(out)


def literal_end(source: str, start: int) -> int:
    quote, i = source[start], start + 1
    while source[i] != quote:
        i += 2 if source[i] == "\\" else 1
    return i + 1


def unescape(body: str) -> str:
    escapes = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"', "'": "'"}
    return re.sub(r"\\(.)", lambda m: escapes[m.group(1)], body)


def report_calls(code: str) -> tuple[list[str], list[str]]:
    """The format of every report("...") call, with adjacent literals joined, and the parameter
    lists of the report() declarations (calls without a literal first argument)."""
    formats, declarations = [], []
    for call in re.finditer(r"\breport\s*\(\s*", code):
        i = call.end()
        if code[i] != '"':
            declarations.append(code[i : code.index(")", i)])
            continue
        parts = []
        while code[i] == '"':
            end = literal_end(code, i)
            parts.append(unescape(code[i + 1 : end - 1]))
            i = end
            while code[i].isspace():
                i += 1
        formats.append("".join(parts))
    return formats, declarations


def format_shape(fmt: str) -> tuple[str, int]:
    holes = 0

    def hole(match: re.Match[str]) -> str:
        nonlocal holes
        if match.group() == "%%":
            return "%"
        if match.group() == "%":
            raise AssertionError(f"report format {fmt!r} uses a conversion other than %s %d %u %ld %lu")
        holes += 1
        return HOLE

    return CONVERSION.sub(hole, fmt), holes


def template_shape(line: printed_lines.Line) -> tuple[str, int]:
    return printed_lines._PLACEHOLDER.sub(HOLE, line.template), len(line.field_names)


def report_body(code: str) -> tuple[int, int]:
    """Where the body of `void report(const char *format, ...) {` starts and ends."""
    definition = re.search(r"\bvoid\s+report\s*\(\s*const\s+char\s*\*\s*\w+\s*,\s*\.\.\.\s*\)\s*\{", code)
    assert definition, "the sketch defines no report(const char *format, ...)"
    depth, i = 1, definition.end()
    while depth:
        depth += {"{": 1, "}": -1}.get(code[i], 0)
        i += 1
    return definition.start(), i


@pytest.fixture(scope="module")
def code() -> str:
    return strip_comments(SKETCH.read_text())


@pytest.fixture(scope="module")
def formats(code: str) -> list[str]:
    found, declarations = report_calls(code)
    assert found, "no report(\"...\") call in the sketch"
    assert all(re.fullmatch(r"const\s+char\s*\*\s*\w+\s*,\s*\.\.\.", d) for d in declarations), declarations
    return found


def test_every_report_format_is_exactly_one_sketch_entry(formats: list[str]) -> None:
    for fmt in formats:
        matches = [line.name for line in SKETCH_LINES if template_shape(line) == format_shape(fmt)]
        assert len(matches) == 1, (
            f"report({fmt!r}) matches {matches or 'no'} entries of src/ota_rig/device/printed_lines.py"
        )


def test_every_sketch_entry_is_printed_by_the_sketch(formats: list[str]) -> None:
    shapes = {format_shape(fmt) for fmt in formats}
    missing = [line.name for line in SKETCH_LINES if template_shape(line) not in shapes]
    assert not missing, f"src/ota_rig/device/printed_lines.py names lines the sketch never prints: {missing}"


def test_the_sketch_prints_only_through_report(code: str) -> None:
    start, end = report_body(code)
    body, rest = code[start:end], code[:start] + code[end:]
    assert [m.group() for m in PRINTING.finditer(body)] == ["Serial.println"]
    assert [m.group() for m in PRINTING.finditer(rest)] == [], "a print outside report()"


def test_the_checks_see_through_comments_and_split_literals() -> None:
    code = strip_comments(
        '// report("commented");\nx = "a // b"; /* Serial.print(1); */\n'
        'report("Update: next check in "\n   "%d s", 10);'
    )
    assert "commented" not in code and "Serial" not in code and '"a // b"' in code
    assert report_calls(code) == (["Update: next check in %d s"], [])
    assert format_shape("Error (%d): %s, 100%%") == (f"Error ({HOLE}): {HOLE}, 100%", 2)
    with pytest.raises(AssertionError):
        format_shape("%x")


SAMPLES = {
    "version": "1.2.3",
    "ssid": "ota-rig",
    "ip": "192.168.4.2",
    "server": "pool.ntp.org",
    "time": "2025-06-01 12:00:00",
    "url": "https://192.168.4.1:8443/firmware.bin",
    "not_before": "2025-01-01 00:00:00",
    "not_after": "2026-01-01 00:00:00",
    "code": "-1",
    "text": "HTTP error: connection refused",
    "seconds": "10",
    "ms": "  2546",
    "level": "E",
    "file": "ssl_client.cpp",
    "line": "37",
    "function": "_handle_error",
    "message": "start_ssl_client: -9984",
    "tag": "esp_image",
    "date": "Jul 29 2019 12:21:46",
    "current": "1.10",
}
OVERRIDES = {
    "idf_log": {"ms": "579", "message": "Image hash failed - image is corrupt"},
    "reset": {"code": "c", "reason": "SW_CPU_RESET", "strap": "13", "mode": "SPI_FAST_FLASH_BOOT"},
}


@pytest.mark.parametrize("line", printed_lines.LINES, ids=lambda line: line.name)
def test_render_and_parse_round_trip(line: printed_lines.Line) -> None:
    samples = SAMPLES | OVERRIDES.get(line.name, {})
    values = {name: samples[name] for name in line.field_names}
    text = line.render(**values)
    assert "{" not in text and line.parse(text) == values
    assert printed_lines.render(line.name, **values) == text
    found = printed_lines.classify(text)
    assert found is not None and found[0].name == line.name, f"{text!r} is classified as {found and found[0].name}"


def test_render_names_a_missing_field() -> None:
    with pytest.raises(KeyError, match="update_failed needs \\['text'\\]"):
        printed_lines.render("update_failed", code=-1)
    with pytest.raises(KeyError, match="no protocol line named 'nope'"):
        printed_lines.line("nope")


REFERENCE_LINES = [  # shared/reference/esp32-ota-device.md, sections 7, 8.1 and 12.1
    (
        "[  2546][E][ssl_client.cpp:37] _handle_error(): [start_ssl_client():273]: (-9984) X509 - Certificate "
        "verification failed, e.g. CRL, CA or signature check failed",
        "core_log",
        {
            "level": "E",
            "file": "ssl_client.cpp",
            "function": "_handle_error",
            "message": "[start_ssl_client():273]: (-9984) X509 - Certificate verification failed, e.g. CRL, "
            "CA or signature check failed",
        },
    ),
    (
        "[  2553][E][WiFiClientSecure.cpp:144] connect(): start_ssl_client: -9984",
        "core_log",
        {"file": "WiFiClientSecure.cpp", "line": "144", "message": "start_ssl_client: -9984"},
    ),
    (
        "[  2560][E][HTTPUpdate.cpp:234] handleUpdate(): HTTP error: connection refused",
        "core_log",
        {"function": "handleUpdate", "message": "HTTP error: connection refused"},
    ),
    (
        "[  2546][E][ssl_client.cpp:35] _handle_error(): [ssl_starttls_handshake():297]: (-9984) X509 - Certificate "
        "verification failed, e.g. CRL, CA or signature check failed",
        "core_log",
        {"ms": "  2546", "line": "35"},
    ),
    (
        "[  2553][E][NetworkClientSecure.cpp:159] connect(): start_ssl_client: connect failed: -9984",
        "core_log",
        {"file": "NetworkClientSecure.cpp", "message": "start_ssl_client: connect failed: -9984"},
    ),
    (
        "[  2555][W][HTTPClient.cpp:1483] returnError(): error(-1): connection refused",
        "core_log",
        {"level": "W", "function": "returnError", "message": "error(-1): connection refused"},
    ),
    (
        "E (579) esp_image: Image hash failed - image is corrupt",
        "idf_log",
        {"level": "E", "ms": "579", "tag": "esp_image", "message": "Image hash failed - image is corrupt"},
    ),
    (
        "E (1234) esp_image: Checksum failed. Calculated 0x5b read 0x3c",
        "idf_log",
        {"tag": "esp_image", "message": "Checksum failed. Calculated 0x5b read 0x3c"},
    ),
    ("ets Jul 29 2019 12:21:46", "rom_banner", {"date": "Jul 29 2019 12:21:46"}),
    ("ets Jun  8 2016 00:22:57", "rom_banner", {"date": "Jun  8 2016 00:22:57"}),
    (
        "rst:0xc (SW_CPU_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)",
        "reset",
        {"code": "c", "reason": "SW_CPU_RESET", "strap": "13", "mode": "SPI_FAST_FLASH_BOOT"},
    ),
    (
        "rst:0x1 (POWERON_RESET),boot:0x3 (DOWNLOAD_BOOT(UART0/UART1/SDIO_REI_REO_V2))",
        "reset",
        {"code": "1", "strap": "3", "mode": "DOWNLOAD_BOOT(UART0/UART1/SDIO_REI_REO_V2)"},
    ),
    (
        "rst:0x10 (RTCWDT_RTC_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)",
        "reset",
        {"code": "10", "reason": "RTCWDT_RTC_RESET"},
    ),
    (
        "HTTP_UPDATE_FAILD Error (-1): HTTP error: connection refused",
        "update_failed",
        {"code": "-1", "text": "HTTP error: connection refused"},
    ),
    (
        "HTTP_UPDATE_FAILD Error (9): Update error: Could Not Activate The Firmware",
        "update_failed",
        {"code": "9", "text": "Update error: Could Not Activate The Firmware"},
    ),
    (
        "TLS error (-9984): X509 - Certificate verification failed, e.g. CRL, CA or signature check failed",
        "tls_error",
        {"code": "-9984"},
    ),
]


@pytest.mark.parametrize(
    ("text", "name", "fields"), REFERENCE_LINES, ids=[f"{n}-{name}" for n, (_, name, _) in enumerate(REFERENCE_LINES)]
)
def test_classify_names_real_device_lines(text: str, name: str, fields: dict[str, str]) -> None:
    found = printed_lines.classify(text)
    assert found is not None, f"{text!r} is not classified"
    line, values = found
    assert line.name == name
    assert {key: values[key] for key in fields} == fields


@pytest.mark.parametrize(
    "text",
    [
        "",
        "configsip: 0, SPIWP:0xee",
        "clk_drv:0x00,q_drv:0x00,d_drv:0x00,cs0_drv:0x00,hd_drv:0x00,wp_drv:0x00",
        "mode:DIO, clock div:2",
        "load:0x3fff0030,len:1184",
        "entry 0x400805e4",
        "waiting for download",
        "invalid header: 0xffffffff",
        "[SETUP] WAIT 4...",
        "Update start now!",
    ],
)
def test_classify_leaves_other_lines_alone(text: str) -> None:
    assert printed_lines.classify(text) is None
