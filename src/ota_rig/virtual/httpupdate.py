"""arduino-esp32's HTTPUpdate over HTTPClient: the request the device sends and what it does with
every answer (shared/reference/esp32-ota-device.md, sections 2-5).

`HttpUpdate.update(client, url, version)` sends `GET <path> HTTP/1.0` with exactly the core's
headers, reads the answer with the 8 s header timeout, and maps it as 2.0.14's handleUpdate()
does: 200 with a positive Content-Length, a slot it fits in and a first byte 0xE9 is streamed
into `Update` (updater.py); 304 means no update; 403/404/others are errors -103/-102/-104; any
connect failure is -1; 3.x takes 204 for no update too. The answer's x-MD5 is the only digest
header read: 3.x master also reads x-SHA256 (arduino-esp32 PR #12824, August 2026), after the
3.3.10 the 3.x profile names. The result is one of FAILED, NO_UPDATES, OK, with `last_error` and
`last_error_string` as getLastError()/getLastErrorString() give them. Line numbers in the log
lines are those the reference gives where it gives one, otherwise illustrative.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from urllib.parse import urlsplit

from ota_rig.device.firmware import Image, Partition, PartitionTable
from ota_rig.virtual.arduino import Core
from ota_rig.virtual.secure_client import SecureClient
from ota_rig.virtual.updater import Updater, next_update_partition

log = logging.getLogger(__name__)

FAILED, NO_UPDATES, OK = 0, 1, 2

HEADER_TIMEOUT = 8.0  # HTTPUpdate's default HTTP timeout (8000 ms)
CONNECT_TIMEOUT = 5.0  # HTTPClient's connect timeout, which overrides the secure client's
PEEK_DELAY = 0.1  # handleUpdate() waits this long before peeking at the first body byte

HTTPCLIENT_ERRORS = {
    -1: "connection refused", -2: "send header failed", -3: "send payload failed", -4: "not connected",
    -5: "connection lost", -6: "no stream", -7: "no HTTP server", -8: "too less ram",
    -9: "Transfer-Encoding not supported", -10: "Stream write error", -11: "read Timeout",
}
UPDATE_ERRORS = {
    -100: "Not Enough space", -101: "Server Did Not Report Size", -102: "File Not Found (404)",
    -103: "Forbidden (403)", -104: "Wrong HTTP Code", -105: "Wrong MD5", -106: "Verify Bin Header Failed",
    -107: "New Binary Does Not Fit Flash Size", -108: "Partition Could Not be Found",
}
CONNECTION_REFUSED, CONNECTION_LOST, NO_HTTP_SERVER, ENCODING, READ_TIMEOUT, SEND_HEADER_FAILED = (
    -1,
    -5,
    -7,
    -9,
    -11,
    -2,
)
TOO_LESS_SPACE, NO_SIZE, NOT_FOUND, FORBIDDEN, WRONG_CODE, FAULTY_MD5, BAD_HEADER, NO_PARTITION = (
    -100,
    -101,
    -102,
    -103,
    -104,
    -105,
    -106,
    -108,
)


@dataclass
class RunningApp:
    """What the updater reports about the firmware it runs (the x-ESP32-sketch-* headers)."""

    table: PartitionTable
    partition: Partition
    image: Image
    image_bytes: bytes

    @property
    def sketch_md5(self) -> str:
        return hashlib.md5(self.image_bytes).hexdigest()

    @property
    def sketch_sha256(self) -> str:
        return self.image_bytes[-32:].hex().upper() if self.image.hash_appended else ""


@dataclass
class Response:
    code: int  # the status, or a negative HTTPClient error
    length: int = -1
    md5: str = ""


class HttpUpdate:
    """The global `httpUpdate` object; `rebootOnUpdate(false)` is the reference sketch's choice."""

    def __init__(self, core: Core, running: RunningApp, chip_size: int) -> None:
        self.core = core
        self.running = running
        self.chip_size = chip_size
        self.last_error = 0  # 2.0.14 never resets it at the start of an update
        self.updater: Updater | None = None

    @property
    def last_error_string(self) -> str:
        code = self.last_error
        if code == 0:
            return ""
        if code > 0:
            return f"Update error: {self.updater_error_text}"
        if code > -100:
            return f"HTTP error: {HTTPCLIENT_ERRORS.get(code, '')}"
        return UPDATE_ERRORS.get(code, "")

    def _log(self, level: str, line_offset: int, message: str, function: str = "handleUpdate") -> None:
        self.core.log(level, "HTTPUpdate.cpp", self.core.profile.httpupdate_line + line_offset, function, message)

    def update(self, client: SecureClient, url: str, current_version: str) -> int:
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            log.info("http.begin() refuses %r", url)
            return FAILED
        host, port = parts.hostname, parts.port or 443
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        response = self.get(client, host, port, path, current_version)
        try:
            return self._handle(client, response)
        finally:
            client.stop()  # http.end()

    def get(self, client: SecureClient, host: str, port: int, path: str, version: str) -> Response:
        """HTTPClient.GET() as handleUpdate() sets it up: connect unless `client` is still
        connected, the request with the core's headers, the answer's status and headers. The
        sketch's verified update (verified_update.py) asks the same way."""
        if not client.connected and not client.connect(host, port, CONNECT_TIMEOUT):
            return self._http_error(CONNECTION_REFUSED)
        if not client.write(self._request(host, port, path, version)):
            return self._http_error(SEND_HEADER_FAILED)
        return self._read_header(client)

    def _request(self, host: str, port: int, path: str, version: str) -> bytes:
        """GET with the core's header set, in wire order (section 2; 3.x adds the base MAC
        after Cache-Control: HTTPUpdate.cpp at a5f17797)."""
        next_slot = next_update_partition(self.running.table, self.running.partition)
        base_mac = [("x-ESP32-BASE-MAC", self.core.base_mac)] if self.core.profile.sends_base_mac else []
        headers = [
            ("Host", host if port in (80, 443) else f"{host}:{port}"),
            ("User-Agent", "ESP32-http-Update"),
            ("Connection", "close"),
            ("Cache-Control", "no-cache"),
            *base_mac,
            ("x-ESP32-STA-MAC", self.core.sta_mac),
            ("x-ESP32-AP-MAC", self.core.ap_mac),
            ("x-ESP32-free-space", str(next_slot.size if next_slot else 0)),
            ("x-ESP32-sketch-size", str(len(self.running.image_bytes))),
            ("x-ESP32-sketch-md5", self.running.sketch_md5),
            ("x-ESP32-sketch-sha256", self.running.sketch_sha256),
            ("x-ESP32-chip-size", str(self.chip_size)),
            ("x-ESP32-sdk-version", self.core.profile.idf_version),
            ("x-ESP32-mode", "sketch"),
            ("x-ESP32-version", version),
        ]
        lines = [f"GET {path} HTTP/1.0"] + [f"{name}: {value}" for name, value in headers if value]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def _read_header(self, client: SecureClient) -> Response:
        """HTTPClient::handleHeaderResponse(): status line, then headers up to the empty line."""
        response = Response(code=0)
        transfer_encoding = ""
        while True:
            line = client.read_line(HEADER_TIMEOUT)
            if line is None:
                return self._http_error(CONNECTION_LOST if not client.connected else READ_TIMEOUT)
            text = line.decode("latin-1")
            if not text:
                break
            if text.startswith("HTTP/1.") and response.code == 0:
                status = text[9:].split(" ", 1)[0]
                response.code = int(status) if status.isdigit() else 0
                continue
            name, _, value = text.partition(":")
            name, value = name.strip().lower(), value.strip()
            if name == "content-length":
                response.length = int(value) if value.isdigit() else 0
            elif name == "x-md5":
                response.md5 = value
            elif name == "transfer-encoding":
                transfer_encoding = value.lower()
        if transfer_encoding and transfer_encoding not in ("identity", "chunked"):
            return self._http_error(ENCODING)
        if transfer_encoding == "chunked":
            response.length = -1
        if response.code <= 0:
            return self._http_error(NO_HTTP_SERVER)
        return response

    def _http_error(self, code: int) -> Response:
        """HTTPClient::returnError(): a warning, and the negative code as GET()'s result."""
        self.core.log(
            "W",
            "HTTPClient.cpp",
            self.core.profile.httpclient_error_line,
            "returnError",
            f"error({code}): {HTTPCLIENT_ERRORS[code]}",
        )
        return Response(code=code)

    def _handle(self, client: SecureClient, response: Response) -> int:
        """handleUpdate() after GET: the status switch (section 3)."""
        code = response.code
        if code <= 0:
            self._log("E", 0, f"HTTP error: {HTTPCLIENT_ERRORS[code]}\n")
            self.last_error = code
            return FAILED
        if code == 200:
            return self._handle_ok(client, response)
        if code == 304 or (code == 204 and self.core.profile.no_content_means_no_update):
            return NO_UPDATES
        if code == 404:
            self.last_error = NOT_FOUND
        elif code == 403:
            self.last_error = FORBIDDEN
        else:
            self.last_error = WRONG_CODE
            self._log("E", 82, f"HTTP Code is ({code})\n")
        return FAILED

    def _handle_ok(self, client: SecureClient, response: Response) -> int:
        if response.length <= 0:
            self.last_error = NO_SIZE
            self._log("E", 76, "Content-Length was 0 or wasn't set by Server?!\n")
            return FAILED
        target = next_update_partition(self.running.table, self.running.partition)
        if target is None:
            self.last_error = NO_PARTITION
            return FAILED
        if response.length > target.size:
            self.last_error = TOO_LESS_SPACE
            self._log("E", 30, f"FreeSketchSpace to low ({target.size}) needed: {response.length}\n")
            return FAILED
        self.core.delay(PEEK_DELAY)
        if client.peek() != 0xE9:
            self.last_error = BAD_HEADER
            self._log("E", 47, "Magic header does not start with 0xE9\n")
            return FAILED
        if self._run_update(client, response):
            return OK
        self._log("E", 67, "Update failed\n")
        return FAILED

    def _run_update(self, client: SecureClient, response: Response) -> bool:
        """runUpdate(): Update.begin, setMD5, writeStream, end; each failure logged and kept."""
        self.updater = updater = Updater(self.core.chip, self.running.table, self.running.partition)
        if not updater.begin(response.length):
            return self._update_failed(updater, "Update.begin failed! ({})\n", 130)
        if response.md5 and not updater.set_md5(response.md5):
            self.last_error = FAULTY_MD5
            self._log("E", 137, f"Update.setMD5 failed! ({response.md5})\n", "runUpdate")
            return False
        if updater.write_stream(client.read_bytes) != response.length:
            return self._update_failed(updater, "Update.writeStream failed! ({})\n", 145)
        if not updater.end():
            for tag, message in updater.idf_errors:
                self.core.idf_error(tag, message)
            return self._update_failed(updater, "Update.end failed! ({})\n", 155)
        return True

    def _update_failed(self, updater: Updater, message: str, line_offset: int) -> bool:
        self.last_error = updater.error
        self._log("E", line_offset, message.format(updater.error_text), "runUpdate")
        return False

    @property
    def updater_error_text(self) -> str:
        return self.updater.error_text if self.updater else "UNKNOWN"
