/*
 * ota_https: the OTA rig's reference sketch. It asks an HTTPS server for new firmware every
 * 10 s and installs it. This is the seed tutorial's flow (shared/seeds/003) made correct and
 * secure, for arduino-esp32 2.0.x and 3.x.
 *
 * Every setting comes from ota_config.h, which the rig generates (ota_rig/build/): version, update
 * URL, CA bundle, Wi-Fi, NTP server, OTA_CHECK_DATES, OTA_INSECURE, OTA_SIGNING_KEY. No secret,
 * no CA and no key is written here.
 * Every line goes out through report(), one call for each line. Each format is an entry of
 * ota_rig/device/printed_lines.py (tests/unit/test_protocol.py checks that they match, both ways). The Python
 * twin (ota_rig/virtual/app.py) follows this flow line for line:
 *
 * setup():
 *   firmware_version; wifi_connecting, join Wi-Fi, wifi_connected;
 *   ntp_waiting, wait for a clock past 2020-01-01, ntp_synced;
 *   date_check_off                             only when OTA_CHECK_DATES is 0
 *   insecure_mode                              only when OTA_INSECURE is 1
 *   signature_required                         only when OTA_SIGNING_KEY is set
 * loop(), one update check:
 *   update_checking
 *   OTA_CHECK_DATES: connect to the URL's host and port first and read the server certificate
 *     no connection        -> update_failed (-1, "HTTP error: connection refused"), tls_error*
 *     now after not_after  -> cert_expired        (connection closed, no request sent)
 *     now before not_before-> cert_not_yet_valid  (connection closed, no request sent)
 *     otherwise            -> cert_dates_ok, then the update on that same connection
 *   no OTA_SIGNING_KEY: httpUpdate.update() with rebootOnUpdate(false):
 *     HTTP_UPDATE_FAILED     -> update_failed (the core's code and text), tls_error*
 *     HTTP_UPDATE_NO_UPDATES -> no_updates
 *     HTTP_UPDATE_OK         -> update_ok, restarting, ESP.restart() (no retry line)
 *   OTA_SIGNING_KEY: verifiedUpdate(), the sketch's own download (HTTPUpdate's request) of a
 *   signed release, a 256-byte manifest then the image (ota_rig/device/signing.py has the format):
 *     GET fails               -> update_failed (HTTPClient's code, "HTTP error: " + its text), tls_error*
 *     304                     -> no_updates
 *     404, 403, other         -> update_failed (-102, -103, -104 and HTTPUpdate's text)
 *     200 without a length    -> update_failed (-101, "Server Did Not Report Size")
 *     200, at most 256 bytes  -> signature_missing
 *     body stops              -> update_failed (6, "Update error: Stream Read Timeout")
 *     no manifest magic       -> signature_missing
 *     no DER signature        -> signature_missing
 *     signature not verified  -> signature_invalid
 *     image size not signed   -> image_mismatch
 *     signed version older    -> downgrade_refused
 *       (each of these after the 256 manifest bytes, before Update.begin(): nothing written)
 *     image too big for slot  -> update_failed (-100, "Not Enough space")
 *     Update.begin() fails    -> update_failed (Update's code, "Update error: " + its text)
 *     first byte not 0xE9     -> update_failed (-106, "Verify Bin Header Failed")
 *     Update.write() fails    -> update_failed (Update's code, "Update error: " + its text)
 *     image SHA-256 not signed-> image_mismatch
 *     all verified            -> signature_valid, then Update.end(): update_ok, restarting,
 *                                ESP.restart(); or update_failed (9, ...) if ESP-IDF's image
 *                                check fails
 *     a refusal after Update.begin() calls Update.abort(): otadata is untouched, the old
 *     firmware stays the boot one
 *   retry ("next check in 10 s"), then a 10 s delay
 *   * tls_error only when the TLS client kept an Mbed TLS error (lastError() < 0)
 *
 * The same source builds on both cores. Every call here has the same signature in 2.0.x and
 * 3.x (Mbed TLS 2.28 and 3.6 for the md, pk and asn1 calls), and 3.x keeps WiFiClientSecure as
 * a typedef of NetworkClientSecure. Two #ifs: 3.x's HTTPUpdate sends one header more
 * (x-ESP32-BASE-MAC), which the verified path sends too, and Mbed TLS's own
 * MBEDTLS_USE_PSA_CRYPTO asks for psa_crypto_init() before PK is used.
 */

#include <Arduino.h>
#include <HTTPClient.h>
#include <HTTPUpdate.h>
#include <Update.h>
#include <WiFi.h>
#include <WiFiClientSecure.h>
#include <esp_arduino_version.h>
#include <esp_ota_ops.h>
#include <esp_partition.h>
#include <mbedtls/asn1.h>
#include <mbedtls/md.h>
#include <mbedtls/pk.h>
#if defined(MBEDTLS_USE_PSA_CRYPTO)
#include <psa/crypto.h>
#endif
#include <stdarg.h>
#include <string.h>
#include <time.h>

#include "ota_config.h"

static const int RETRY_SECONDS = 10;
static const time_t CLOCK_IS_SET = 1577836800;         // 2020-01-01 00:00:00 UTC
static const int32_t CONNECT_TIMEOUT_MS = 5000;       // what HTTPClient passes to connect()
static const uint16_t UPDATE_HTTP_TIMEOUT_MS = 8000;  // HTTPUpdate's timeout for the answer
// The signed manifest before the image (ota_rig/device/signing.py). Not the app descriptor's version: an
// arduino-cli build holds the lib-builder's version there, the same for every sketch.
static const char MANIFEST_MAGIC[] = "OTA-MANIFEST-V1";  // 16 bytes with its NUL
static const size_t MANIFEST_SIZE = 256;              // statement, then signature area
static const size_t STATEMENT_SIZE = 128;             // the signed part
static const size_t VERSION_AT = 16;                  // char[32], NUL-terminated
static const size_t VERSION_SIZE = 32;
static const size_t IMAGE_SIZE_AT = 48;               // u32, little-endian
static const size_t IMAGE_SHA256_AT = 52;             // 32 bytes
static const size_t IMAGE_CHUNK_SIZE = 1024;          // read, written, hashed at a time
static const uint8_t APP_IMAGE_MAGIC = 0xE9;          // the first byte of every app image
static const int STREAM_EMPTY_READS = 300;            // as Update.writeStream(): this many reads
static const uint32_t STREAM_EMPTY_PAUSE_MS = 100;    // that bring nothing, this far apart, end it

// OTA_UPDATE_URL split into parts, using the same rules as HTTPClient::beginInternal
// (no user@ part).
struct UpdateUrl {
  String host;
  uint16_t port;
  String path;
};

// The only place that prints. One call is one line; println ends it with "\r\n".
static void report(const char *format, ...) __attribute__((format(printf, 1, 2)));

static void report(const char *format, ...) {
  char line[256];
  va_list args;
  va_start(args, format);
  vsnprintf(line, sizeof line, format, args);
  va_end(args);
  Serial.println(line);
}

// "YYYY-MM-DD HH:MM:SS", the form ota_rig/device/printed_lines.py parses, written into `text` (returned).
// Zero padding makes string order the same as time order, so the date check compares exactly
// the texts it prints. `text` holds the longest text six ints can make, so nothing is ever cut
// and gcc's -Wformat-truncation (on with -Wall) has nothing to warn about.
static const size_t UTC_TEXT_SIZE = 6 * sizeof "-2147483648";  // 6 ints, 5 separators, NUL

static const char *utcText(char *text, int year, int mon, int day, int hour, int min, int sec) {
  snprintf(text, UTC_TEXT_SIZE, "%04d-%02d-%02d %02d:%02d:%02d", year, mon, day, hour, min, sec);
  return text;
}

static String utcText(time_t moment) {
  struct tm utc;
  gmtime_r(&moment, &utc);
  char text[UTC_TEXT_SIZE];
  return utcText(text, utc.tm_year + 1900, utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec);
}

static String utcText(const mbedtls_x509_time &moment) {  // X.509 times are UTC
  char text[UTC_TEXT_SIZE];
  return utcText(text, moment.year, moment.mon, moment.day, moment.hour, moment.min, moment.sec);
}

static UpdateUrl parseUrl(const String &url) {
  UpdateUrl parts{"", 443, "/"};
  int start = url.indexOf("://");
  start = start < 0 ? 0 : start + 3;
  int slash = url.indexOf('/', start);
  String authority = slash < 0 ? url.substring(start) : url.substring(start, slash);
  if (slash >= 0) {
    parts.path = url.substring(slash);
  }
  int colon = authority.indexOf(':');
  parts.host = colon < 0 ? authority : authority.substring(0, colon);
  if (colon >= 0) {
    parts.port = authority.substring(colon + 1).toInt();
  }
  return parts;
}

// The core's result line. If the TLS client kept an Mbed TLS error, that error follows.
// lastError() returns a negative Mbed TLS code after a failed connect. After a good one it
// returns the socket number, which is positive, so only a negative value is an error.
static void reportFailure(WiFiClientSecure &client, int code, const String &text) {
  report("HTTP_UPDATE_FAILD Error (%d): %s", code, text.c_str());
  char detail[128];
  int err = client.lastError(detail, sizeof detail);
  if (err < 0) {
    report("TLS error (%d): %s", err, detail);
  }
}

// Stock arduino-esp32 builds Mbed TLS without MBEDTLS_HAVE_TIME_DATE, so the handshake ignores
// a certificate's validity dates and accepts an expired or not-yet-valid one
// (shared/reference/esp32-ota-device.md, 9.4). The sketch checks the dates itself, against the
// NTP clock it waited for in setup().
static bool datesAcceptable(const mbedtls_x509_crt *leaf) {
  String now = utcText(time(nullptr));
  String notBefore = utcText(leaf->valid_from);
  String notAfter = utcText(leaf->valid_to);
  if (now.compareTo(notAfter) > 0) {
    report("Certificate: expired on %s UTC, update refused", notAfter.c_str());
    return false;
  }
  if (now.compareTo(notBefore) < 0) {
    report("Certificate: not valid before %s UTC, update refused", notBefore.c_str());
    return false;
  }
  report("Certificate: valid %s to %s UTC", notBefore.c_str(), notAfter.c_str());
  return true;
}

// HTTPUpdate's request headers (reference, section 2), so that the server sees the same request
// whichever path asks. HTTPClient itself sends Host and, with HTTP/1.0, Connection: close.
static void addUpdateHeaders(HTTPClient &http) {
  http.useHTTP10(true);
  http.setTimeout(UPDATE_HTTP_TIMEOUT_MS);
  http.setUserAgent("ESP32-http-Update");
  http.addHeader("Cache-Control", "no-cache");
#if ESP_ARDUINO_VERSION_MAJOR >= 3
  http.addHeader("x-ESP32-BASE-MAC", Network.macAddress());  // as 3.x's HTTPUpdate, before the Wi-Fi MACs
#endif
  http.addHeader("x-ESP32-STA-MAC", WiFi.macAddress());
  http.addHeader("x-ESP32-AP-MAC", WiFi.softAPmacAddress());
  http.addHeader("x-ESP32-free-space", String(ESP.getFreeSketchSpace()));
  http.addHeader("x-ESP32-sketch-size", String(ESP.getSketchSize()));
  String md5 = ESP.getSketchMD5();
  if (md5.length() != 0) {
    http.addHeader("x-ESP32-sketch-md5", md5);
  }
  // The running image's appended SHA-256, upper-case hex, as HTTPUpdate's getSketchSHA256().
  uint8_t sha256[32];
  if (esp_partition_get_sha256(esp_ota_get_running_partition(), sha256) == ESP_OK) {
    char hex[2 * sizeof sha256 + 1];
    for (size_t i = 0; i < sizeof sha256; i++) {
      snprintf(hex + 2 * i, 3, "%02X", sha256[i]);
    }
    http.addHeader("x-ESP32-sketch-sha256", hex);
  }
  http.addHeader("x-ESP32-chip-size", String(ESP.getFlashChipSize()));
  http.addHeader("x-ESP32-sdk-version", ESP.getSdkVersion());
  http.addHeader("x-ESP32-mode", "sketch");
  if (OTA_FIRMWARE_VERSION[0] != '\0') {
    http.addHeader("x-ESP32-version", OTA_FIRMWARE_VERSION);
  }
}

// One dotted part of a version: its leading digits as a number (anything else in the part
// counts for nothing). Moves `text` past the part and its dot.
static unsigned long versionPart(const char *&text) {
  unsigned long value = 0;
  while (*text >= '0' && *text <= '9') {
    value = value * 10 + (*text++ - '0');
  }
  while (*text != '\0' && *text != '.') {
    text++;
  }
  if (*text == '.') {
    text++;
  }
  return value;
}

// Dotted versions compared part by part as numbers ("0.10" is newer than "0.9"; a missing part
// is 0): < 0 when `a` is older than `b`, 0 when equal, > 0 when newer.
static int compareVersions(const char *a, const char *b) {
  while (*a != '\0' || *b != '\0') {
    unsigned long partA = versionPart(a);
    unsigned long partB = versionPart(b);
    if (partA != partB) {
      return partA < partB ? -1 : 1;
    }
  }
  return 0;
}

// Update's error as HTTPUpdate reports it: the code and "Update error: " + its text.
static void reportUpdateError(WiFiClientSecure &client) {
  reportFailure(client, Update.getError(), String("Update error: ") + Update.errorString());
}

// Fills `buffer` with `length` body bytes. readBytes() may bring fewer (3.x's NetworkClient
// returns as soon as nothing is buffered; 2.0.x after its Stream timeout), so this reads on as
// Update.writeStream() does; false when the body stops.
static bool readFully(Stream &body, uint8_t *buffer, size_t length) {
  int emptyReads = 0;
  for (size_t got = 0; got < length;) {
    size_t count = body.readBytes(buffer + got, length - got);
    if (count > 0) {
      got += count;
      emptyReads = 0;
      continue;
    }
    if (++emptyReads >= STREAM_EMPTY_READS) {
      return false;
    }
    delay(STREAM_EMPTY_PAUSE_MS);
  }
  return true;
}

// Reads `length` image bytes from `body` into Update.write() and the SHA-256 `sha`, one chunk
// at a time. False, after its line, when the image does not start with 0xE9, the body stops or
// Update fails.
static bool streamImage(Stream &body, size_t length, mbedtls_md_context_t *sha, WiFiClientSecure &client) {
  uint8_t chunk[IMAGE_CHUNK_SIZE];
  for (size_t done = 0; done < length;) {
    size_t want = length - done < IMAGE_CHUNK_SIZE ? length - done : IMAGE_CHUNK_SIZE;
    if (!readFully(body, chunk, want)) {
      reportFailure(client, UPDATE_ERROR_STREAM, "Update error: Stream Read Timeout");
      return false;
    }
    if (done == 0 && chunk[0] != APP_IMAGE_MAGIC) {
      reportFailure(client, HTTP_UE_BIN_VERIFY_HEADER_FAILED, "Verify Bin Header Failed");
      return false;
    }
    if (Update.write(chunk, want) != want) {
      reportUpdateError(client);
      return false;
    }
    mbedtls_md_update(sha, chunk, want);
    done += want;
  }
  return true;
}

// The DER signature's length if the manifest's signature area holds one (a SEQUENCE) followed
// by zeros only; 0 if it holds none.
static size_t signatureLength(uint8_t *area) {
  unsigned char *p = area;
  size_t content = 0;
  if (mbedtls_asn1_get_tag(&p, area + (MANIFEST_SIZE - STATEMENT_SIZE), &content,
                           MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE) != 0) {
    return 0;
  }
  size_t length = (p - area) + content;
  for (size_t i = length; i < MANIFEST_SIZE - STATEMENT_SIZE; i++) {
    if (area[i] != 0) {
      return 0;
    }
  }
  return length;
}

// SHA-256 of `length` bytes into `digest`.
static void sha256Of(const uint8_t *data, size_t length, uint8_t digest[32]) {
  mbedtls_md(mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), data, length, digest);
}

// True if the manifest's statement is signed with the private half of OTA_SIGNING_KEY.
// A key that does not parse verifies nothing (the rig checks the key when it builds).
static bool statementVerifies(uint8_t *manifest) {
  uint8_t *area = manifest + STATEMENT_SIZE;
  size_t length = signatureLength(area);
  if (length == 0) {
    report("Signature: no signed manifest before the image, update refused");
    return false;
  }
  uint8_t digest[32];
  sha256Of(manifest, STATEMENT_SIZE, digest);
  mbedtls_pk_context key;
  mbedtls_pk_init(&key);
  // PEM must be passed with its terminating NUL: sizeof a string literal counts it.
  const unsigned char *pem = (const unsigned char *)OTA_SIGNING_KEY;
  bool valid = mbedtls_pk_parse_public_key(&key, pem, sizeof OTA_SIGNING_KEY) == 0
               && mbedtls_pk_verify(&key, MBEDTLS_MD_SHA256, digest, sizeof digest, area, length) == 0;
  mbedtls_pk_free(&key);
  if (!valid) {
    report("Signature: does not verify with the built-in key, update refused");
  }
  return valid;
}

// The manifest: signed with the built-in key, for an image of `imageSize` bytes, and of a
// version no older than this firmware. An equal version is let through: re-installing the
// running version is no downgrade (the rig's server never offers one: it answers 304).
static bool manifestAcceptable(uint8_t *manifest, size_t imageSize) {
  if (memcmp(manifest, MANIFEST_MAGIC, sizeof MANIFEST_MAGIC) != 0) {
    report("Signature: no signed manifest before the image, update refused");
    return false;
  }
  if (!statementVerifies(manifest)) {
    return false;
  }
  const uint8_t *size = manifest + IMAGE_SIZE_AT;
  uint32_t signedSize = size[0] | size[1] << 8 | size[2] << 16 | (uint32_t)size[3] << 24;
  if (signedSize != imageSize) {
    report("Signature: the image does not match its signed manifest, update refused");
    return false;
  }
  char version[VERSION_SIZE + 1] = {0};  // NUL-terminated even if the field is full
  memcpy(version, manifest + VERSION_AT, VERSION_SIZE);
  if (compareVersions(version, OTA_FIRMWARE_VERSION) < 0) {
    report("Update: signed version %s is older than %s, update refused", version, OTA_FIRMWARE_VERSION);
    return false;
  }
  return true;
}

// The 200 answer's body: the manifest, then the image. Every check of the manifest comes before
// Update.begin(), so a refused release writes nothing. The image goes into the next OTA slot as
// it arrives, but only Update.end() makes that slot the boot partition, and it runs only after
// the image's SHA-256 matched the signed one. Once Update.begin() ran, every refusal calls
// Update.abort(), which leaves otadata alone: no refused image is ever bootable, not even for
// a moment.
static bool installSigned(Stream &body, int size, WiFiClientSecure &client) {
  if (size <= 0) {
    reportFailure(client, HTTP_UE_SERVER_NOT_REPORT_SIZE, "Server Did Not Report Size");
    return false;
  }
  if ((size_t)size <= MANIFEST_SIZE) {
    report("Signature: no signed manifest before the image, update refused");
    return false;
  }
#if defined(MBEDTLS_USE_PSA_CRYPTO)
  psa_crypto_init();  // PK (and maybe MD) then run through PSA; calling it again is harmless
#endif
  uint8_t manifest[MANIFEST_SIZE];
  if (!readFully(body, manifest, MANIFEST_SIZE)) {
    reportFailure(client, UPDATE_ERROR_STREAM, "Update error: Stream Read Timeout");
    return false;
  }
  size_t length = size - MANIFEST_SIZE;
  if (!manifestAcceptable(manifest, length)) {
    return false;
  }
  if (length > ESP.getFreeSketchSpace()) {
    reportFailure(client, HTTP_UE_TOO_LESS_SPACE, "Not Enough space");
    return false;
  }
  if (!Update.begin(length)) {
    reportUpdateError(client);
    return false;
  }
  uint8_t digest[32] = {0};  // stays zeros, which no signed hash matches, if hashing cannot start
  mbedtls_md_context_t sha;
  mbedtls_md_init(&sha);
  mbedtls_md_setup(&sha, mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), 0);
  mbedtls_md_starts(&sha);
  bool streamed = streamImage(body, length, &sha, client);
  mbedtls_md_finish(&sha, digest);
  mbedtls_md_free(&sha);
  if (!streamed) {
    Update.abort();
    return false;
  }
  if (memcmp(digest, manifest + IMAGE_SHA256_AT, sizeof digest) != 0) {
    report("Signature: the image does not match its signed manifest, update refused");
    Update.abort();
    return false;
  }
  report("Signature: valid, made with the built-in key");
  if (!Update.end()) {  // all bytes are in; ESP-IDF checks the image, then switches otadata
    reportUpdateError(client);
    return false;
  }
  return true;
}

// The verified update. httpUpdate cannot be used here: its Update.end() makes the new slot the
// boot partition before update() returns, so a power cut before any check of ours would boot
// an unverified image. HTTPClient asks with HTTPUpdate's request, and the answers HTTPUpdate
// knows are reported with its codes; the x-MD5 header is not used (the signature covers more).
static void verifiedUpdate(WiFiClientSecure &client, const UpdateUrl &url) {
  HTTPClient http;
  // The host/port/uri overload keeps a connection the date check opened (see checkForUpdate).
  http.begin(client, url.host, url.port, url.path, true);
  addUpdateHeaders(http);
  int code = http.GET();
  bool installed = false;
  if (code <= 0) {
    reportFailure(client, code, String("HTTP error: ") + HTTPClient::errorToString(code));
  } else if (code == HTTP_CODE_NOT_MODIFIED) {
    report("HTTP_UPDATE_NO_UPDATES");
  } else if (code == HTTP_CODE_NOT_FOUND) {
    reportFailure(client, HTTP_UE_SERVER_FILE_NOT_FOUND, "File Not Found (404)");
  } else if (code == HTTP_CODE_FORBIDDEN) {
    reportFailure(client, HTTP_UE_SERVER_FORBIDDEN, "Forbidden (403)");
  } else if (code != HTTP_CODE_OK) {
    reportFailure(client, HTTP_UE_SERVER_WRONG_HTTP_CODE, "Wrong HTTP Code");
  } else {
    installed = installSigned(http.getStream(), http.getSize(), client);
  }
  http.end();
  if (installed) {
    report("HTTP_UPDATE_OK");
    report("Restarting into the new firmware");
    Serial.flush();  // the lines must leave the UART before the reset
    ESP.restart();
  }
}

static void checkForUpdate(WiFiClientSecure &client) {
  UpdateUrl url = parseUrl(OTA_UPDATE_URL);
  if (OTA_CHECK_DATES) {
    // Check the dates on the connection that will carry the firmware. Then hand that same
    // connection to the update. HTTPClient::connect() reuses a client that is still connected.
    // Only the host/port/uri overload keeps it open, though. The URL overload's
    // http.begin(client, url) closes an open client first, because a new HTTPClient's host
    // is still empty and so differs from the URL's host. The request sent is the same either way.
    const mbedtls_x509_crt *leaf = nullptr;
    if (client.connect(url.host.c_str(), url.port, CONNECT_TIMEOUT_MS)) {
      leaf = client.getPeerCertificate();  // the server's own certificate, first in its chain
    }
    if (leaf == nullptr) {
      client.stop();
      // Report what httpUpdate itself reports when its connect fails.
      reportFailure(client, HTTPC_ERROR_CONNECTION_REFUSED,
                    String("HTTP error: ") + HTTPClient::errorToString(HTTPC_ERROR_CONNECTION_REFUSED));
      return;
    }
    if (!datesAcceptable(leaf)) {
      client.stop();
      return;
    }
  }
  if (OTA_SIGNING_KEY[0] != '\0') {
    verifiedUpdate(client, url);
    return;
  }

  t_httpUpdate_return result = OTA_CHECK_DATES
    ? httpUpdate.update(client, url.host, url.port, url.path, OTA_FIRMWARE_VERSION)
    : httpUpdate.update(client, OTA_UPDATE_URL, OTA_FIRMWARE_VERSION);
  switch (result) {
    case HTTP_UPDATE_FAILED:
      reportFailure(client, httpUpdate.getLastError(), httpUpdate.getLastErrorString());
      break;
    case HTTP_UPDATE_NO_UPDATES:
      report("HTTP_UPDATE_NO_UPDATES");
      break;
    case HTTP_UPDATE_OK:
      report("HTTP_UPDATE_OK");
      report("Restarting into the new firmware");
      Serial.flush();  // the lines must leave the UART before the reset
      ESP.restart();
      break;
  }
}

void setup() {
  Serial.begin(115200);
  report("Firmware version %s", OTA_FIRMWARE_VERSION);

  report("WiFi: connecting to %s", OTA_WIFI_SSID);
  WiFi.mode(WIFI_STA);
  WiFi.begin(OTA_WIFI_SSID, OTA_WIFI_PASSWORD);
  while (WiFi.status() != WL_CONNECTED) {
    delay(500);
  }
  report("WiFi: connected, IP address %s", WiFi.localIP().toString().c_str());

  // A date check needs the real time. Get UTC from NTP before the first TLS connection.
  report("NTP: waiting for time from %s", OTA_NTP_SERVER);
  configTime(0, 0, OTA_NTP_SERVER);
  while (time(nullptr) < CLOCK_IS_SET) {
    delay(500);
  }
  report("NTP: time is %s UTC", utcText(time(nullptr)).c_str());
  if (!OTA_CHECK_DATES) {
    report("Certificate date check: off (the stock core accepts any dates)");
  }
  if (OTA_INSECURE) {
    report("TLS: setInsecure(), any server certificate is accepted: INSECURE");
  }
  if (OTA_SIGNING_KEY[0] != '\0') {
    report("Firmware signature: required, ECDSA P-256 key built in");
  }
}

void loop() {
  report("Update: checking %s", OTA_UPDATE_URL);
  WiFiClientSecure client;
  // Trust only the CA bundle the rig built in. setCACert() makes the verification required:
  // any failure of the chain or the name ends the handshake. OTA_INSECURE exists only to show
  // what setInsecure() lets in (any server, so anybody in the middle): never ship it.
  if (OTA_INSECURE) {
    client.setInsecure();
  } else {
    client.setCACert(OTA_CA_BUNDLE);
  }
  // Without this, httpUpdate restarts inside update() and never returns HTTP_UPDATE_OK, so
  // the result would never be printed (reference, section 6). This sketch prints first, then
  // restarts.
  httpUpdate.rebootOnUpdate(false);
  checkForUpdate(client);
  report("Update: next check in %d s", RETRY_SECONDS);
  delay(RETRY_SECONDS * 1000UL);
}
