"""How the host reaches the twin's UART0: an RFC2217 server, or a pseudo-terminal.

RFC2217 is the default because it carries DTR and RTS, so esptool's resets travel to the
reset circuit as they would through a USB bridge (pyserial's `PortManager` does the telnet
side; `_SerialLines` is the duck-typed "serial port" it drives). One client at a time, like a
real port. A pty carries bytes only, DTR/RTS ioctls fail on it
(shared/reference/esptool-rom-protocol.md, 15): a twin behind a pty has its EN and IO0 wired to
the host instead (`Wires`).
"""

from __future__ import annotations

import logging
import os
import select
import socket
import threading
import time
import tty
from pathlib import Path

# pyserial ships no type information (pyproject's mypy settings let its imports be untyped).
import serial.rfc2217

from ota_rig.virtual.chip import Chip, ResetCircuit

log = logging.getLogger(__name__)


class _SerialLines:
    """What PortManager believes is the serial port: line changes go to the reset circuit."""

    bytesize, parity, stopbits, xonxoff, rtscts, break_condition = 8, "N", 1, False, False, False
    cts = dsr = ri = cd = False

    def __init__(self, chip: Chip) -> None:
        self._chip = chip
        self._baudrate = 115200
        self.baudrate_requests = 0  # RFC2217 SET-BAUDRATE requests the client sent (one per line negotiation)

    @property
    def baudrate(self) -> int:
        return self._baudrate

    @baudrate.setter
    def baudrate(self, value: int) -> None:
        self.baudrate_requests += 1
        limit = self._chip.uart.bridge_max_baud
        if limit is not None and value > limit:
            # A port that cannot take the rate raises ValueError; pyserial's PortManager then
            # answers SET-BAUDRATE with the rate in force (serial/rfc2217.py,
            # _telnet_process_subnegotiation), and its client raises "remote rejected value
            # for option 'baudrate'" (TelnetSubnegotiation.is_ready).
            raise ValueError(f"the bridge does not take {value} baud (at most {limit})")
        self._baudrate = value  # the host's side of the line; the chip keeps its own divider

    @property
    def dtr(self) -> bool:
        return self._chip.pins.dtr

    @dtr.setter
    def dtr(self, level: bool) -> None:
        self._chip.pins.set_lines(dtr=level)

    @property
    def rts(self) -> bool:
        return self._chip.pins.rts

    @rts.setter
    def rts(self, level: bool) -> None:
        self._chip.pins.set_lines(rts=level)

    def reset_input_buffer(self) -> None:
        pass  # device bytes go straight to the socket: nothing is queued on our side

    def reset_output_buffer(self) -> None:
        self._chip.uart.discard_input()  # host bytes not yet taken by the chip


class EspPortManager(serial.rfc2217.PortManager):
    """The board's host doing esptool's reset itself, as esptool's esp_rfc2217_server does
    (esp_rfc2217_server/esp_port_manager.py): pyserial's rfc2217 client waits >= 50 ms for the
    answer to each line change (serial/rfc2217.py, TelnetSubnegotiation.wait), so DTR and RTS
    arrive far too slowly for the auto-reset circuit (espressif/esptool#383). The first DTR-on
    of esptool's reset starts the whole reset here, with esptool's own timing and both lines
    set at once (UnixTightReset's TIOCMSET); the rest of the client's line changes are dropped.
    An RTS-off outside that sequence is esptool's hard reset, done here the same way.

    Exactly what esp_rfc2217_server (esptool 5.6.0) acts on: DTR-off always deasserts DTR and
    ends the reset sequence; DTR-on outside a sequence starts the bootloader reset; RTS-off
    outside a sequence starts the hard reset; every other DTR/RTS change is dropped. Neither
    reset touches the UART's buffers (no purge). pyserial's rfc2217 client sends DTR and RTS as it
    opens the port, so each open() resets the chip: DTR-on (pyserial's default) into the loader,
    RTS-off into the firmware."""

    def __init__(self, serial_port: _SerialLines, connection: _Connection, circuit: ResetCircuit) -> None:
        self._circuit = circuit
        self._download = False
        super().__init__(serial_port, connection)

    def _telnet_process_subnegotiation(self, suboption: bytes) -> None:
        if suboption[0:1] == serial.rfc2217.COM_PORT_OPTION and suboption[1:2] == serial.rfc2217.SET_CONTROL:
            value = suboption[2:3]
            if value in (serial.rfc2217.SET_CONTROL_DTR_ON, serial.rfc2217.SET_CONTROL_DTR_OFF,
                         serial.rfc2217.SET_CONTROL_RTS_ON, serial.rfc2217.SET_CONTROL_RTS_OFF):
                # Answered, unlike esp_rfc2217_server (its clients pass ?ign_set_control): the
                # rig's own rfc2217:// URLs keep working without the option.
                self.rfc2217_send_subnegotiation(serial.rfc2217.SERVER_SET_CONTROL, value)
            if value == serial.rfc2217.SET_CONTROL_DTR_OFF:
                self._download = False
                self._circuit.set_lines(dtr=False)
                return
            if value == serial.rfc2217.SET_CONTROL_RTS_OFF and not self._download:
                threading.Thread(target=self._hard_reset, daemon=True).start()
                return
            if value == serial.rfc2217.SET_CONTROL_DTR_ON and not self._download:
                self._download = True
                threading.Thread(target=self._bootloader_reset, daemon=True).start()
                return
            if value in (serial.rfc2217.SET_CONTROL_DTR_ON, serial.rfc2217.SET_CONTROL_RTS_ON,
                         serial.rfc2217.SET_CONTROL_RTS_OFF):
                return
        super()._telnet_process_subnegotiation(suboption)

    def _bootloader_reset(self) -> None:
        """esp_pylib.serial_reset.unix_tight_bootloader_reset with esptool's delays."""
        lines = self._circuit.set_lines
        lines(dtr=False, rts=False)
        lines(dtr=True, rts=True)
        lines(dtr=False, rts=True)  # EN low
        time.sleep(0.1)
        lines(dtr=True, rts=False)  # IO0 low, EN released
        time.sleep(0.05)
        lines(dtr=False, rts=False)
        lines(dtr=False)  # UnixTightReset's trailing single DTR write: no change

    def _hard_reset(self) -> None:
        """esp_pylib.serial_reset.hard_reset as esptool's HardReset calls it (hold 0.1 s)."""
        self._circuit.set_lines(rts=True)
        time.sleep(0.1)
        self._circuit.set_lines(rts=False)


class _Connection:
    """A socket with the thread-safe write() PortManager wants."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._lock = threading.Lock()

    def write(self, data: bytes) -> None:
        with self._lock:
            self.sock.sendall(data)


class Rfc2217Server:
    """Serves the chip's UART on 127.0.0.1:port as rfc2217://; port 0 picks a free one."""

    def __init__(self, chip: Chip, port: int, host: str = "127.0.0.1", plain: bool = False) -> None:
        self.chip = chip
        self.plain = plain  # pyserial's PortManager as rfc2217_server/ser2net relay lines: no local reset
        self._listener = socket.create_server((host, port))
        self.host, self.port = self._listener.getsockname()[:2]
        self._busy = threading.Lock()

    @property
    def url(self) -> str:
        return f"rfc2217://{self.host}:{self.port}"

    def serve_forever(self) -> None:
        while True:
            try:
                sock, peer = self._listener.accept()
            except OSError:
                return  # closed
            if not self._busy.acquire(blocking=False):
                log.info("refusing %s: the port is in use", peer)
                sock.close()
                continue
            threading.Thread(target=self._serve_client, args=(sock, peer), daemon=True).start()

    def _serve_client(self, sock: socket.socket, peer: tuple) -> None:
        log.info("client %s connected", peer)
        lines = _SerialLines(self.chip)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection = _Connection(sock)
            if self.plain:
                manager = serial.rfc2217.PortManager(lines, connection)
            else:
                # esp_rfc2217_server asserts both lines when a client connects (its cli(), before
                # the Redirector): (1, 1) drives neither EN nor IO0, but the client's DTR-off as
                # it opens the port then gives (0, 1), EN low, and its RTS-off a hard reset: with
                # esp_rfc2217_server a client's open() resets the chip.
                self.chip.pins.set_lines(dtr=True, rts=True)
                manager = EspPortManager(lines, connection, self.chip.pins)

            def to_host(data: bytes) -> None:
                try:
                    connection.write(b"".join(manager.escape(data)))
                except OSError:
                    pass  # the client went away; the UART keeps talking to nobody

            self.chip.uart.connect(to_host)
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                payload = b"".join(manager.filter(data))
                if payload:
                    self.chip.uart.feed(payload)
        except OSError:
            pass
        finally:
            self.chip.uart.connect(None)
            sock.close()
            # Closing a port drops DTR and RTS (HUPCL); EN and IO0 are released.
            self.chip.pins.set_lines(dtr=False, rts=False)
            self._busy.release()
            log.info("client %s disconnected after %d SET-BAUDRATE requests", peer, lines.baudrate_requests)

    def close(self) -> None:
        self._listener.close()


def _is_pty_link(path: Path) -> bool:
    """A symlink into /dev/pts: the kind of link a twin leaves (a crashed one leaves it behind)."""
    return path.is_symlink() and os.readlink(path).startswith("/dev/pts/")


class PtyServer:
    """Serves the chip's UART on a pseudo-terminal, with a stable symlink to its slave side.

    `unplug()` and `plug()` model the port leaving and rejoining the host (a cable pulled, a hub
    port power-cycled, a native-USB chip re-enumerating): the pty closes under whoever has it
    open, the link goes, and a new pty appears at the same link."""

    def __init__(self, chip: Chip, link: Path) -> None:
        self.chip = chip
        self.link = Path(link)
        if (self.link.exists() or self.link.is_symlink()) and not _is_pty_link(self.link):
            raise FileExistsError(f"{self.link} exists and is not a pty link a twin made: the twin replaces only "
                                  f"its own links (into /dev/pts), so pass --pty a free path")
        self._closed = False
        self._master = self._slave = -1
        self._lock = threading.Lock()  # the UART's writes against unplugging
        self._reading = threading.Lock()  # held by serve_forever while it waits on the master
        self._wake, self._waker = os.pipe()  # a byte here ends that wait
        self.plug()

    @property
    def url(self) -> str:
        return str(self.link)

    def plug(self) -> None:
        if self._master >= 0:
            return
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no CR/LF translation: bytes pass untouched
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        self.device = os.ttyname(slave)
        if self.link.is_symlink() or self.link.exists():
            self.link.unlink()
        self.link.symlink_to(self.device)
        self.chip.uart.connect(self._to_host)

    def unplug(self) -> None:
        if self._master < 0:
            return
        self.chip.uart.connect(None)  # the UART talks to nobody until the port is back
        if self.link.is_symlink():
            self.link.unlink()
        with self._lock:
            master, slave, self._master, self._slave = self._master, self._slave, -1, -1
        # A select() waiting on the master keeps it open past close(), and the port would stay
        # up until that wait ends: wake serve_forever and close once it has let go.
        os.write(self._waker, b"\0")
        with self._reading:
            os.close(slave)
            os.close(master)  # readers of the slave side now get EIO, as from a vanished device

    def _to_host(self, data: bytes) -> None:
        with self._lock:
            self._write(data)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self._master, view) :]
            except BlockingIOError:
                # Nobody reads the other side and its buffer is full: a UART with no
                # listener loses the bytes.
                return
            except OSError:
                return

    def inject(self, data: bytes) -> None:
        """Put `data` on the host's side of the line, bytes the chip never sent (Wires' NOISE).
        A full buffer is waited out for up to a second each time: a line at 115200 baud never
        outruns a host that reads, so a test's noise reaches a reader whole."""
        with self._lock:
            view = memoryview(data)
            while view and self._master >= 0:
                try:
                    view = view[os.write(self._master, view) :]
                except BlockingIOError:
                    if not select.select([], [self._master], [], 1.0)[1]:
                        return  # nobody reads: the rest is lost, as on a real line
                except OSError:
                    return

    def serve_forever(self) -> None:
        while not self._closed:
            with self._reading:
                master = self._master
                if master >= 0:
                    self._serve(master)
            if master < 0:
                time.sleep(0.05)

    def _serve(self, master: int) -> None:
        """Wait up to 0.5 s for host bytes and hand them to the chip; unplug() cuts the wait short."""
        try:
            ready, _, _ = select.select([master, self._wake], [], [], 0.5)
            if self._wake in ready:
                os.read(self._wake, 64)
            if master in ready:
                self.chip.uart.feed(os.read(master, 65536))
        except BlockingIOError:
            pass  # readable, yet nothing to read after all

    def close(self) -> None:
        self._closed = True
        self.unplug()


class Wires:
    """EN and IO0 wired to the host, for a pty twin (a pty has no modem lines): like a board
    whose pins hang on relays or GPIOs of the test host (labgrid's DigitalOutput), and its USB
    port on a switchable hub port.

    Commands come one a line (ota_rig.virtual.twin.Bench reads them): `EN 0` holds the chip in
    reset, `EN 1` releases it (the ROM latches IO0 then), `IO0 0` / `IO0 1` drive the boot-mode pin, `USB 0`
    takes the port off the host and `USB 1` brings it back. `NOISE <hex bytes>` puts those bytes
    on the host's side of the line as if the chip had sent them: what a flaky cable, a floating
    TX pin during reset or a baud-rate mismatch delivers to the host. `CLOCK <rate> <seconds>`
    is no wire but the simulator's own control: the chip's clock runs `rate` times faster for
    its next `seconds` of device time (a time lapse, ota_rig.virtual.chip.Clock). Each command is
    answered with one line, `ok` or `error: <why>`, once it took effect.
    """

    PINS = {"EN": "en_low", "IO0": "io0_low"}

    def __init__(self, chip: Chip, port: PtyServer) -> None:
        self.chip = chip
        self.port = port

    def apply(self, command: str) -> str:
        words = command.split()
        if words[:1] == ["NOISE"]:
            try:
                self.port.inject(bytes.fromhex("".join(words[1:])))
            except ValueError:
                return f"error: {command.strip()[:80]!r} is not NOISE followed by hex bytes (NOISE ff 00 1b)"
            return "ok"
        if words[:1] == ["CLOCK"]:
            try:
                self.chip.time_lapse(*map(float, words[1:]))
            except (TypeError, ValueError) as err:
                return f"error: {command.strip()[:80]!r} is not CLOCK <rate> <device seconds> ({err})"
            return "ok"
        if len(words) != 2 or words[0] not in (*self.PINS, "USB") or words[1] not in ("0", "1"):
            return f"error: {command.strip()!r} is not one of EN 0, EN 1, IO0 0, IO0 1, USB 0, USB 1, NOISE <hex bytes>"
        if words[0] == "USB":
            self.port.plug() if words[1] == "1" else self.port.unplug()
        else:
            self.chip.pins.drive(**{self.PINS[words[0]]: words[1] == "0"})
        return "ok"
