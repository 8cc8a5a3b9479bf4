/*
 * ota_https: the OTA rig's reference sketch. It asks an HTTPS server for new firmware every
 * 10 s and installs it. This is the seed tutorial's flow (shared/seeds/003) made correct and
 * secure, for arduino-esp32 2.0.x and 3.x.
 *
 * Every setting comes from ota_config.h, which the rig generates (rig/build.py): version, update
 * URL, CA bundle, Wi-Fi, NTP server, OTA_CHECK_DATES, OTA_INSECURE. No secret and no CA is
 * written here.
 * Every line goes out through report(), one call for each line. Each format is an entry of
 * rig/protocol.py (tests/unit/test_protocol.py checks that they match, both ways). The Python
 * twin (rig/virtual/app.py) follows this flow line for line:
 *
 * setup():
 *   firmware_version; wifi_connecting, join Wi-Fi, wifi_connected;
 *   ntp_waiting, wait for a clock past 2020-01-01, ntp_synced;
 *   date_check_off                             only when OTA_CHECK_DATES is 0
 *   insecure_mode                              only when OTA_INSECURE is 1
 * loop(), one update check:
 *   update_checking
 *   OTA_CHECK_DATES: connect to the URL's host and port first and read the server certificate
 *     no connection        -> update_failed (-1, "HTTP error: connection refused"), tls_error*
 *     now after not_after  -> cert_expired        (connection closed, no request sent)
 *     now before not_before-> cert_not_yet_valid  (connection closed, no request sent)
 *     otherwise            -> cert_dates_ok, then httpUpdate on that same connection
 *   httpUpdate.update() with rebootOnUpdate(false):
 *     HTTP_UPDATE_FAILED     -> update_failed (the core's code and text), tls_error*
 *     HTTP_UPDATE_NO_UPDATES -> no_updates
 *     HTTP_UPDATE_OK         -> update_ok, restarting, ESP.restart() (no retry line)
 *   retry ("next check in 10 s"), then a 10 s delay
 *   * tls_error only when the TLS client kept an Mbed TLS error (lastError() < 0)
 *
 * The same source builds on both cores. Every call here has the same signature in 2.0.x and
 * 3.x, and 3.x keeps WiFiClientSecure as a typedef of NetworkClientSecure, so the sketch
 * needs no version #if.
 */

#include <Arduino.h>
#include <HTTPClient.h>
#include <HTTPUpdate.h>
#include <WiFi.h>
#include <WiFiClientSecure.h>
#include <stdarg.h>
#include <time.h>

#include "ota_config.h"

static const int RETRY_SECONDS = 10;
static const time_t CLOCK_IS_SET = 1577836800;    // 2020-01-01 00:00:00 UTC
static const int32_t CONNECT_TIMEOUT_MS = 5000;  // what HTTPClient passes to connect()

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

// "YYYY-MM-DD HH:MM:SS", the form rig/protocol.py parses. Zero padding makes string order
// the same as time order, so the date check compares exactly the texts it prints.
static String utcText(int year, int mon, int day, int hour, int min, int sec) {
  char text[24];
  snprintf(text, sizeof text, "%04d-%02d-%02d %02d:%02d:%02d", year, mon, day, hour, min, sec);
  return String(text);
}

static String utcText(time_t moment) {
  struct tm utc;
  gmtime_r(&moment, &utc);
  return utcText(utc.tm_year + 1900, utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec);
}

static String utcText(const mbedtls_x509_time &moment) {  // X.509 times are UTC
  return utcText(moment.year, moment.mon, moment.day, moment.hour, moment.min, moment.sec);
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

static void checkForUpdate(WiFiClientSecure &client) {
  t_httpUpdate_return result;
  if (OTA_CHECK_DATES) {
    // Check the dates on the connection that will carry the firmware. Then hand that same
    // connection to httpUpdate. HTTPClient::connect() reuses a client that is still connected.
    // Only the host/port/uri overload keeps it open, though. The URL overload's
    // http.begin(client, url) closes an open client first, because a new HTTPClient's host
    // is still empty and so differs from the URL's host. The request sent is the same either way.
    UpdateUrl url = parseUrl(OTA_UPDATE_URL);
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
    result = httpUpdate.update(client, url.host, url.port, url.path, OTA_FIRMWARE_VERSION);
  } else {
    result = httpUpdate.update(client, OTA_UPDATE_URL, OTA_FIRMWARE_VERSION);
  }

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
