"""The virtual ESP32: a process that real esptool flashes and that boots what is in its flash.

Its modules mirror the chip: chip (flash, eFuses, SPI, UART, reset pins), rom (serial loader
and flasher stub), boot (ROM banner, second-stage bootloader), app (the sketch's behaviour) and
transport (RFC2217 server, pty). Start it with `python -m rig.virtual --help`.
"""
