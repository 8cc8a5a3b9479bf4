"""The virtual ESP32: a process that real esptool flashes and that boots what is in its flash.

Its modules mirror the chip and the software on it: chip (flash, eFuses, SPI, UART, reset
pins), rom (serial loader and flasher stub), boot (ROM banner, second-stage bootloader), app (the
reference sketch), the parts of arduino-esp32 it uses (arduino: Serial and the log formats;
httpupdate: HTTPClient and HTTPUpdate; updater: Update and otadata; secure_client:
WiFiClientSecure), tls (ssl_client.cpp on Mbed TLS: the connection), certificate_check (Mbed
TLS's verification of the server's chain), mbedtls_errors (its error codes and texts), x509
(its certificate parser), transport (RFC2217 server, pty with wired EN/IO0), twin (a board in
the process, from power-on to power-off, and the next one in its place); the profiles
(2.0.x vs 3.x) are ota_rig.device.profiles. Start it with `python -m ota_rig.virtual --help`.

It reads only what the real sketch and core read: the sketch's constants where the compiled
sketch keeps them, the core from the ESP-IDF version its libraries put in the app descriptor.
A virtual build (ota_rig.build) carries exactly what an arduino-cli build of the same sketch
carries, so the twin can rely on nothing a real board would not have.
"""
