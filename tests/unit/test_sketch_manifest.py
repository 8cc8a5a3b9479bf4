"""The sketch's own C++ that checks a signed release's manifest, compiled by the host's g++
against the host's real Mbed TLS (Debian's libmbedtls-dev, 2.28.x like arduino-esp32 2.0.x's
2.28.4) and run on manifests ota_rig.device.signing wrote: the sketch's parsing, Mbed TLS's verification
and the rig's format agree, and each refusal prints the line the twin prints for it.

What this proves: signatureLength, sha256Of, statementVerifies, manifestAcceptable, versionPart
and compareVersions, taken by name out of src/ota_rig/sketches/ota_https/ota_https.ino with the ota_config.h
a build generates (SketchConfig.header()), accept what they must and refuse what they must,
with Mbed TLS's own ASN.1 parser, SHA-256, PEM key parser and ECDSA verification. What it does
not prove: the rest of installSigned() (HTTPClient, Update), Mbed TLS 3.6's build (3.x), or the
xtensa compiler.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ota_rig.device import firmware, printed_lines
from ota_rig.device.signing import MANIFEST_SIZE, STATEMENT_SIZE, VERSION_AT, VERSION_SIZE, KeyPair, sign
from ota_rig.device.sketch_config import SketchConfig

from .sketch_code import extract

MBEDTLS_HEADER = Path("/usr/include/mbedtls/pk.h")
IMAGE = firmware.build_app_image(firmware.AppDescriptor("esp-idf: v4.4.6 3572900934", "arduino-lib-builder"))
HARNESS = """\
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <mbedtls/asn1.h>
#include <mbedtls/md.h>
#include <mbedtls/pk.h>
#include "ota_config.h"

static void report(const char *format, ...) {  // the sketch's report(), on stdout
  va_list args;
  va_start(args, format);
  vprintf(format, args);
  va_end(args);
  putchar('\\n');
}

%s
int main(int argc, char **argv) {  // manifest file, image size the server sends
  uint8_t manifest[MANIFEST_SIZE];
  FILE *file = fopen(argv[1], "rb");
  if (argc != 3 || file == NULL || fread(manifest, 1, sizeof manifest, file) != sizeof manifest) {
    return 2;
  }
  fclose(file);
  return manifestAcceptable(manifest, strtoul(argv[2], NULL, 10)) ? 0 : 1;
}
"""


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeyPair:
    return KeyPair.load_or_create(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def sketch_check(gxx: str, keys: KeyPair, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sketch's manifest check, built for a device running 0.2 with `keys`' public half."""
    if not MBEDTLS_HEADER.is_file():
        pytest.skip("Mbed TLS headers missing (Debian: libmbedtls-dev; .ci/run installs it)")
    folder = tmp_path_factory.mktemp("sketch-manifest")
    config = SketchConfig(
        version="0.2", update_url="https://ota.local/update", ca_bundle="", signing_key=keys.public_pem
    )
    (folder / "ota_config.h").write_text(config.header())
    names = ("versionPart", "compareVersions", "signatureLength", "sha256Of", "statementVerifies", "manifestAcceptable")
    (folder / "check.cpp").write_text(HARNESS % extract(names))
    built = subprocess.run(
        [
            gxx,
            "-std=gnu++17",
            "-Os",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-I",
            str(folder),
            str(folder / "check.cpp"),
            "-o",
            str(folder / "check"),
            "-lmbedcrypto",
        ],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr
    return folder / "check"


def edited_version(release: bytes, version: bytes) -> bytes:
    return release[:VERSION_AT] + version.ljust(VERSION_SIZE, b"\0") + release[VERSION_AT + VERSION_SIZE :]


def cases(keys: KeyPair, other: KeyPair) -> dict[str, tuple[bytes, int, str | None]]:
    """name: (manifest bytes, image size the server sends, the protocol line the device prints
    or None when it accepts)."""
    good = sign(IMAGE, "0.3", keys)
    return {
        "newer": (good, len(IMAGE), None),
        "equal": (sign(IMAGE, "0.2", keys), len(IMAGE), None),
        "older": (sign(IMAGE, "0.1", keys), len(IMAGE), "downgrade_refused"),
        "another key": (sign(IMAGE, "0.3", other), len(IMAGE), "signature_invalid"),
        "version edited": (edited_version(sign(IMAGE, "0.1", keys), b"0.9"), len(IMAGE), "signature_invalid"),
        "unsigned image": (IMAGE, len(IMAGE) - MANIFEST_SIZE, "signature_missing"),
        "no signature": (
            good[:STATEMENT_SIZE] + bytes(MANIFEST_SIZE - STATEMENT_SIZE),
            len(IMAGE),
            "signature_missing",
        ),
        "size not signed": (good, len(IMAGE) + 16, "image_mismatch"),
    }


@pytest.mark.parametrize(
    "case",
    ["newer", "equal", "older", "another key", "version edited", "unsigned image", "no signature", "size not signed"],
)
def test_the_sketch_checks_the_manifest_as_the_twin_does(
    sketch_check: Path, keys: KeyPair, tmp_path: Path, case: str
) -> None:
    manifest, size, refusal = cases(keys, KeyPair.load_or_create(tmp_path / "other"))[case]
    (tmp_path / "manifest").write_bytes(manifest[:MANIFEST_SIZE])
    ran = subprocess.run([str(sketch_check), str(tmp_path / "manifest"), str(size)], capture_output=True, text=True)
    lines = ran.stdout.splitlines()
    if refusal is None:
        assert (ran.returncode, lines) == (0, [])
    else:
        assert ran.returncode == 1 and len(lines) == 1, ran.stdout
        line, fields = printed_lines.classify(lines[0])
        assert line.name == refusal
        if refusal == "downgrade_refused":
            assert fields == {"version": "0.1", "current": "0.2"}
