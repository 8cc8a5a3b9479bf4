"""Device profiles: what differs between arduino-esp32 2.0.x and 3.x, as far as the rig sees it.

A profile belongs to a build: the core a sketch was compiled with. The core's precompiled
ESP-IDF libraries write their ESP-IDF version into every app's descriptor (idf_ver), and the
twin picks the profile from that field of the image it runs, so a board flashed with a 3.x
build behaves as 3.x, as a real one would.

`RealBuild` holds what an arduino-cli build of any sketch with that core and the default FQBN
(esp32:esp32:esp32, ESP32 Dev Module, default menus) writes into the image files: the app
descriptor as the core's libraries fill it, the image header's flash settings, and the
bootloader's layout. The virtual builder writes exactly these (ota_rig/build/); a unit test holds
them against recorded facts of real builds (tests/unit/test_real_builds.py, with the sources).

The 3.x profile names arduino-esp32 3.3.10 (ESP-IDF v5.5.4, its release notes), the newest 3.3.x
release the rig's sources reach. No file of a 3.3.x release could be read (no tag maps to a
stored commit, and its library archive is not reachable), so its build facts are the nearest
verified 3.x ones (arduino-esp32 3.0.x, esp32-arduino-libs idf-release/v5.1) where the layout is
the same, and the likeliest values where ESP-IDF 5.5 differs; each is marked UNVERIFIED.
Other facts: shared/reference/esp32-ota-device.md (sections 2.1, 3, 8.1, 9.4, 9.5, 12, 13).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RealBuild:
    """What every arduino-cli build with one core and the default FQBN carries, whatever the sketch."""

    # esp_app_desc_t: a const in the core's precompiled ESP-IDF library (libapp_update.a on IDF
    # 4.4, libesp_app_format.a on 5.x), compiled by esp32-arduino-lib-builder with its own
    # PROJECT_VER, project name and build time (ESP-IDF esp_app_desc.c: `.version = PROJECT_VER`).
    app_version: str
    project_name: str
    time: str
    date: str
    # ESP-IDF >= 5.4 only (esptool 5: "MMU page size is set in app description segment since
    # ESP-IDF v5.4"); reserved zeros before.
    min_efuse_blk_rev_full: int
    max_efuse_blk_rev_full: int
    mmu_page_size: int  # log2 of the MMU page
    # The bootloader ELF the default FQBN picks (bootloader_{build.boot}_{build.boot_freq}.elf:
    # the FlashMode menu's first entry, QIO, sets build.boot=qio and build.flash_mode=dio;
    # FlashFreq's first is 80m), converted by elf2image: its segments (load address, length)
    # and entry point, as the ROM prints them.
    bootloader_segments: tuple[tuple[int, int], ...]
    bootloader_entry: int
    # Header byte 2 and 3 of the app and the bootloader: elf2image --flash_mode dio
    # --flash_freq 80m --flash_size 4MB (platform.txt, boards.txt defaults). Chip revisions are
    # elf2image's defaults (Arduino passes none): min 0, max 0xFFFF (esptool 4.5.1 to 5.6).
    flash_mode: int = 2  # DIO
    flash_size_freq: int = 0x2F  # 4MB in the high nibble, 80 MHz (0xF) in the low one


@dataclass(frozen=True)
class Profile:
    name: str
    core: str  # the arduino-esp32 release modelled
    # esp_get_idf_version(): the lib-builder's IDF_VER, in x-ESP32-sdk-version and in every app
    # descriptor's idf_ver (the lib-builder builds from a modified tree: "-dirty").
    idf_version: str
    mbedtls: str
    build: RealBuild
    ip_san_matches: bool  # Mbed TLS >= 3.5 matches IP-address SANs (section 9.5)
    no_content_means_no_update: bool  # 204: NO_UPDATES on 3.x, error -104 on 2.0.14
    # HTTPUpdate's request on 3.x: x-ESP32-BASE-MAC (Network.macAddress(), the base MAC) after
    # Cache-Control, and the soft-AP MAC all zeros while the AP is off (STA mode).
    sends_base_mac: bool
    ap_mac_zero_in_sta_mode: bool
    # The core's log lines for a failed TLS start (section 8.1), without the `[ms][E][file:line]` prefix.
    tls_error_site: str  # where ssl_client.cpp's _handle_error() says the handshake failed
    ca_error_site: str  # ... and where start_ssl_client() failed to parse the CA bundle (illustrative line)
    ssl_client_line: int
    socket_error_line: int  # ssl_client.cpp's `connect on fd ...` line (illustrative: not in the reference)
    secure_client_file: str
    secure_client_line: int
    connect_failed_text: str  # format of the secure client's connect() line, one %d
    httpupdate_line: int
    httpclient_error_line: int  # HTTPClient.cpp's returnError() warning
    # The oldest TLS the client accepts ("TLSv1", "TLSv1_1", "TLSv1_2"): 2.0.14's sdkconfig keeps
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
            # The string compiled into 2.0.14's libs (platform.txt -DIDF_VER="v4.4.6-dirty", the
            # libs' esp_get_idf_version()), and the idf_ver of a public dump of an official
            # 2.0.14 ESP32 app (TISC 2024 write-up: app_version=esp-idf: v4.4.6 3572900934
            # project_name=arduino-lib-builder date=Oct  4 2023 time=16:50:20 sdk=v4.4.6-dirty).
            idf_version="v4.4.6-dirty",
            mbedtls="2.28.4",
            build=RealBuild(
                # lib-builder release/v4.4 writes PROJECT_VER as "esp-idf: <tag> <hash>"
                # (tools/sdk/versions.txt of 2.0.14: "esp-idf: v4.4.6 3572900934"); the time and
                # date are those of the classic-ESP32 libs in the dump above (the S3 libs of the
                # same release say 16:40:08).
                app_version="esp-idf: v4.4.6 3572900934",
                project_name="arduino-lib-builder",
                time="16:50:20",
                date="Oct  4 2023",
                min_efuse_blk_rev_full=0,
                max_efuse_blk_rev_full=0,
                mmu_page_size=0,
                # tools/sdk/esp32/bin/bootloader_qio_80m.elf through esptool 4.5.1 elf2image; the
                # same layout as the official bootloader in the dump above. Public boot logs:
                # "load:0x3fff0030,len:1344 / load:0x40078000,len:13964 / load:0x40080400,len:3600
                # / entry 0x400805f0" after "mode:DIO, clock div:1".
                bootloader_segments=((0x3FFF0030, 1344), (0x40078000, 13964), (0x40080400, 3600)),
                bootloader_entry=0x400805F0,
            ),
            ip_san_matches=False,
            no_content_means_no_update=False,
            sends_base_mac=False,
            ap_mac_zero_in_sta_mode=False,
            tls_error_site="start_ssl_client():273",
            ca_error_site="start_ssl_client():199",
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
            core="3.3.10",
            # UNVERIFIED: 3.3.10's release notes say ESP-IDF v5.5.4; its libs are built from the
            # release/v5.5 branch, so the real string may carry "-<n>-g<hash>" before "-dirty"
            # (the 3.0.x libs say "v5.1.3-416-gd23b7a0361-dirty").
            idf_version="v5.5.4-dirty",
            mbedtls="3.6",
            build=RealBuild(
                # UNVERIFIED for 3.3.10: the values of the 3.0.x libs (esp32-arduino-libs
                # idf-release/v5.1, libesp_app_format.a .rodata_desc: version "aaf47ab", the
                # lib-builder's git hash, project arduino-lib-builder, built 01:00:19 Mar 25 2024).
                app_version="aaf47ab",
                project_name="arduino-lib-builder",
                time="01:00:19",
                date="Mar 25 2024",
                # UNVERIFIED: ESP-IDF 5.5 fills these (esp_app_desc.c: CONFIG_ESP_EFUSE_BLOCK_REV_
                # MIN_FULL / MAX_FULL and log2 of CONFIG_MMU_PAGE_SIZE); 0, 99 and 64 KB are the
                # likeliest ESP32 values. IDF 5.1 and 5.3 leave them zero.
                min_efuse_blk_rev_full=0,
                max_efuse_blk_rev_full=99,
                mmu_page_size=16,
                # UNVERIFIED for 3.3.10: bootloader_qio_80m.elf of the 3.0.x libs (idf-release/v5.1)
                # through elf2image, whose boot log public logs show word for word ("len:1448 /
                # len:14844 / ho 0 tail 12 room 4 / len:4 / len:3356 / entry 0x4008059c").
                bootloader_segments=((0x3FFF0030, 1448), (0x40078000, 14844), (0x40080400, 4), (0x40080404, 3356)),
                bootloader_entry=0x4008059C,
            ),
            ip_san_matches=True,
            # 204 and x-ESP32-BASE-MAC: HTTPUpdate.cpp at master a5f17797; the first release with
            # each is unverified (204: arduino-esp32 #11408, May 2025, a year before 3.3.10).
            # The AP MAC: WiFiAPClass::softAPmacAddress() -> NetworkInterface::macAddress(),
            # which leaves zeros while the AP netif does not exist (NetworkInterface.cpp at the
            # commit whose NetworkClientSecure library.properties says 3.3.10, 0afa5d63).
            no_content_means_no_update=True,
            sends_base_mac=True,
            ap_mac_zero_in_sta_mode=True,
            tls_error_site="ssl_starttls_handshake():297",
            ca_error_site="start_ssl_client():250",
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
