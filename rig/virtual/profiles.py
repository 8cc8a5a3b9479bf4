"""Device profiles: what differs between arduino-esp32 2.0.x and 3.x, as far as the rig sees it.

A profile belongs to a build: the core a sketch was compiled with. The rig writes the profile's
ESP-IDF version into the app descriptor (as a real build does), and the twin picks the profile
from the descriptor of the image it runs, so a board flashed with a 3.x build behaves as 3.x.
Facts: shared/reference/esp32-ota-device.md (sections 2.1, 3, 8.1, 9.4, 9.5).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    name: str
    core: str  # the arduino-esp32 release line modelled
    idf_version: str  # esp_get_idf_version(): x-ESP32-sdk-version and the app descriptor's idf_ver
    mbedtls: str
    ip_san_matches: bool  # Mbed TLS >= 3.5 matches IP-address SANs (section 9.5)
    no_content_means_no_update: bool  # 204: NO_UPDATES on 3.x master, error -104 on 2.0.14
    # The core's log lines for a failed TLS start (section 8.1), without the `[ms][E][file:line]` prefix.
    tls_error_site: str  # where ssl_client.cpp's _handle_error() says the error happened
    ssl_client_line: int
    socket_error_line: int  # ssl_client.cpp's `connect on fd ...` line (illustrative: not in the reference)
    secure_client_file: str
    secure_client_line: int
    connect_failed_text: str  # format of the secure client's connect() line, one %d
    httpupdate_line: int
    httpclient_error_line: int  # HTTPClient.cpp's returnError() warning
    # The oldest TLS the client accepts (an mbedtls TLSVersion name): 2.0.14's sdkconfig keeps
    # CONFIG_MBEDTLS_SSL_PROTO_TLS1 and _TLS1_1 and sets no minimum; Mbed TLS 3.x has only 1.2+.
    oldest_tls: str
    # Stream::readBytes() on the secure client: 2.0.14 waits out the Stream timeout per byte
    # (timedRead); 3.x NetworkClient::readBytes() (arduino-esp32 #9824) stops when read() < 0.
    read_bytes_waits: bool
    # The Stream timeout readBytes()/peek() use: Stream's default 1000 ms. The secure client's
    # setTimeout() (HTTPClient passes 8 s) sets only its own field on 2.0.14, never Stream's.
    stream_timeout: float = 1.0
    # Stock cores never check certificate dates: CONFIG_MBEDTLS_HAVE_TIME_DATE is off (9.4).
    stack_checks_dates: bool = False


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile(
            name="arduino-esp32-2.0",
            core="2.0.14",
            idf_version="v4.4.6",
            mbedtls="2.28.4",
            ip_san_matches=False,
            no_content_means_no_update=False,
            tls_error_site="start_ssl_client():273",
            ssl_client_line=37,
            socket_error_line=108,
            secure_client_file="WiFiClientSecure.cpp",
            secure_client_line=144,
            connect_failed_text="start_ssl_client: %d",
            httpupdate_line=234,
            httpclient_error_line=1483,
            read_bytes_waits=True,
            oldest_tls="TLSv1",
        ),
        Profile(
            name="arduino-esp32-3",
            core="3.3.x",
            # 3.3.x ships ESP-IDF release/v5.5; the patch level here is illustrative.
            idf_version="v5.5.1",
            mbedtls="3.6",
            ip_san_matches=True,
            no_content_means_no_update=True,
            tls_error_site="ssl_starttls_handshake():297",
            ssl_client_line=35,
            socket_error_line=125,
            secure_client_file="NetworkClientSecure.cpp",
            secure_client_line=159,
            connect_failed_text="start_ssl_client: connect failed: %d",
            # Line numbers vary by release (the reference does not pin this one).
            httpupdate_line=278,
            httpclient_error_line=1620,
            read_bytes_waits=False,
            oldest_tls="TLSv1_2",
        ),
    )
}

DEFAULT = "arduino-esp32-2.0"


def get(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown device profile {name!r}: choose one of {', '.join(PROFILES)}") from None


def for_idf_version(idf_version: str) -> Profile:
    """The profile whose core ships `idf_version` (v4.x: 2.0.x, v5.x: 3.x)."""
    major = idf_version.lstrip("v").split(".")[0]
    return PROFILES["arduino-esp32-3"] if major == "5" else PROFILES["arduino-esp32-2.0"]
