"""A farm board's power switch and wired EN/IO0, driven through labgrid's own drivers.

Besides its NetworkSerialPort, a labgrid place may hold:
- **a power switch**: one power resource, the way labgrid-client's `power` finds it (a PDU outlet,
  `NetworkPowerPort` with any of labgrid's models; a switchable USB hub port, `NetworkUSBPowerPort`
  through uhubctl; `PDUDaemonPort`, `TasmotaPowerPort`, `NetworkYKUSHPowerPort`,
  `NetworkSiSPMPowerPort`), or a digital output named `power` (a relay in the board's supply).
  With several power resources, the one named `power`.
- **wires on EN and IO0**: two digital outputs named `en` and `io0`, of any class labgrid-client's
  `io` drives (`HttpDigitalOutput`, `ModbusTCPCoil`, `NetworkSysfsGPIO`, ...). Asserted means the
  pin is pulled low, as pressing the board's button does: `en` holds the chip in reset, `io0`
  selects the ROM's download mode at the next boot. Invert a relay wired the other way in the
  exporter (`invert: true` of ModbusTCPCoil, DeditecRelais8, HIDRelay and LXAIOBusPIO, swapped
  bodies of HttpDigitalOutput; SysfsGPIO has no such parameter in labgrid 26.0.1). The names
  are the resources' names in the place: the exporter's, or given by
  `labgrid-client -p PLACE add-named-match EXPORTER/GROUP/CLASS/NAME en`.

The rig has no labgrid environment YAML. It builds a labgrid Target from the acquired place as
labgrid-client does for `power cycle` and `io high` (labgrid/remote/client.py,
ClientSession._prepare_manager and _get_target: a Target holding a RemotePlace, whose
RemotePlaceManager turns the place's acquired resources into the Target's), and binds the driver
labgrid-client picks for each resource (same file, power() and digital_io(); labgrid 26.0.1). That
happens once, while a coordinator session is open; the drivers then reach the switch themselves
(an HTTP request, a Modbus write, uhubctl over SSH), through labgrid's proxy manager like the
serial port.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

import serial

from ota_rig.bench.board import REAPPEAR_TIMEOUT, RESET_PULSE, BoardError, SerialBoard
from ota_rig.bench.labgrid_places import Coordinator, FarmError, locate

log = logging.getLogger(__name__)

# labgrid-client's choice of driver for each resource class (labgrid/remote/client.py,
# ClientSession.power() and digital_io(), labgrid 26.0.1).
POWER_DRIVERS = {
    "NetworkPowerPort": "NetworkPowerDriver",
    "NetworkUSBPowerPort": "USBPowerDriver",
    "NetworkSiSPMPowerPort": "SiSPMPowerDriver",
    "PDUDaemonPort": "PDUDaemonDriver",
    "TasmotaPowerPort": "TasmotaPowerDriver",
    "NetworkYKUSHPowerPort": "YKUSHPowerDriver",
}
OUTPUT_DRIVERS = {
    "ModbusTCPCoil": "ModbusCoilDriver",
    "WaveshareModbusTCPCoil": "WaveShareModbusCoilDriver",
    "Eth008DigitalOutput": "Eth008DigitalOutputDriver",
    "OneWirePIO": "OneWirePIODriver",
    "HttpDigitalOutput": "HttpDigitalOutputDriver",
    "NetworkDeditecRelais8": "DeditecRelaisDriver",
    "NetworkSysfsGPIO": "GpioDigitalOutputDriver",
    "NetworkLXAIOBusPIO": "LXAIOBusPIODriver",
    "NetworkHIDRelay": "HIDRelayDriver",
}
WIRES = ("en", "io0")
POWER_OUTPUT = "power"
# esptool 5.6.0's classic reset (esptool/reset.py ClassicReset -> esp_pylib/serial_reset.py
# classic_bootloader_reset) holds EN low 0.1 s (RESET_PULSE here too) and keeps IO0 low 50 ms
# after it releases EN (DEFAULT_RESET_DELAY): the chip leaves reset only once EN's RC network
# has charged, and latches IO0 then.
IO0_HOLD = 0.05


@dataclass
class Controls:
    """The labgrid drivers a place gives its board; None where the place has nothing."""

    place: str
    power: Any = None  # a labgrid PowerProtocol driver (on, off, cycle)
    en: Any = None  # labgrid DigitalOutputProtocol drivers (set(True) pulls the pin low)
    io0: Any = None
    target: Any = None  # the labgrid Target holding them

    def describe(self) -> str:
        parts = [f"power through {type(self.power).__name__}"] if self.power else []
        if self.en:
            parts.append(f"EN and IO0 through {type(self.en).__name__}")
        return ", ".join(parts) or "no power switch, no wires on EN/IO0"

    def close(self) -> None:
        if self.target is not None:
            self.target.cleanup()


def controls(coordinator: Coordinator, place: str) -> Controls:
    """The power switch and EN/IO0 outputs of `place` (acquired by this session), as labgrid
    drivers; FarmError, one sentence, for a place whose resources do not fit the conventions."""
    from labgrid import Target
    from labgrid.resource.remote import RemotePlace, RemotePlaceManager

    manager = RemotePlaceManager.get()  # what labgrid-client's _prepare_manager does
    manager.session, manager.loop = coordinator.session, coordinator.loop
    target = Target(place)
    try:
        RemotePlace(target, name=place)
    except Exception as err:  # noqa: BLE001 - labgrid's UserError or ServerError: said below
        target.cleanup()
        raise FarmError(f"cannot read the resources of the labgrid place {place} ({err})") from None
    finally:
        manager.session = None  # the resources are made; the session closes with `coordinator`
    found = Controls(place, target=target)
    try:
        # Each resource is named as in the place (the exporter's name, or add-named-match's).
        named_outputs = {resource.name: resource for resource in target.resources
                         if type(resource).__name__ in OUTPUT_DRIVERS}
        switches = [resource for resource in target.resources if type(resource).__name__ in POWER_DRIVERS]
        if len(switches) > 1:
            switches = [resource for resource in switches if resource.name == POWER_OUTPUT]
            if len(switches) != 1:
                raise FarmError(f"the labgrid place {place} has several power resources and none named "
                                f"{POWER_OUTPUT!r}; name the board's own switch {POWER_OUTPUT} "
                                "(labgrid-client add-named-match ... power)")
        if switches:
            found.power = _driver(target, POWER_DRIVERS[type(switches[0]).__name__], switches[0].name)
        elif POWER_OUTPUT in named_outputs:  # labgrid-client's way with a NetworkSysfsGPIO
            _output(target, named_outputs[POWER_OUTPUT])
            found.power = _driver(target, "DigitalOutputPowerDriver", POWER_OUTPUT)
        wired = [name for name in WIRES if name in named_outputs]
        if len(wired) == 1:
            missing = (set(WIRES) - set(wired)).pop()
            raise FarmError(f"the labgrid place {place} has a digital output named {wired[0]} but none named "
                            f"{missing}; wire both EN and IO0 (or neither)")
        if wired:
            found.en, found.io0 = (_output(target, named_outputs[name]) for name in WIRES)
    except FarmError:
        target.cleanup()
        raise
    except Exception as err:  # noqa: BLE001 - labgrid's binding and availability errors
        target.cleanup()
        raise FarmError(f"cannot use the power switch or EN/IO0 outputs of the labgrid place {place} "
                        f"({type(err).__name__}: {err})") from None
    return found


def _driver(target: Any, driver: str, supplier: str) -> Any:
    """labgrid-client's _get_driver_or_new: a driver of class `driver`, named after and bound to
    the resource or driver named `supplier`, active."""
    from labgrid import target_factory

    cls = target_factory.class_from_string(driver)
    [binding] = cls.bindings
    target.set_binding_map({binding: supplier})
    made = cls(target, name=supplier)
    target.activate(made)
    return made


def _output(target: Any, resource: Any) -> Any:
    return _driver(target, OUTPUT_DRIVERS[type(resource).__name__], resource.name)


def _call(place: str, what: str, step: Any, *args: object) -> None:
    """One driver call; BoardError, one sentence, when the switch or relay does not do it."""
    try:
        step(*args)
    except Exception as err:  # noqa: BLE001 - requests', pymodbus' and labgrid's own errors
        raise BoardError(f"the {what} of the labgrid place {place} did not respond ({type(err).__name__}: "
                         f"{err})") from None


def without_line_control(port: str) -> str:
    """`port` with pyserial's `ign_set_control`: a board reset through wires needs no DTR/RTS
    change acknowledged, and a relay in front of a UART without modem lines never acknowledges
    one (docs/hardware.md, "Resets on a farm")."""
    if "ign_set_control" in port:
        return port
    return f"{port}{'&' if '?' in port else '?'}ign_set_control"


class PlaceBoard(SerialBoard):
    """A board in a labgrid place: the place's serial port, and its power switch and EN/IO0 wires
    when it has them (else DTR/RTS resets, and no power cut, as any SerialBoard)."""

    def __init__(self, port: str, address: str, place: str, wires: Controls) -> None:
        self.controls = wires
        self.wired = wires.en is not None
        self.can_cut_power = wires.power is not None
        relocate = lambda: locate(address, place)  # noqa: E731 - SerialBoard's `locate` callable
        if self.wired:
            self.esptool_reset = ("no-reset", "no-reset")  # the rig moves EN and IO0 itself
            port = without_line_control(port)
            relocate = lambda: without_line_control(locate(address, place))  # noqa: E731
        super().__init__(port, locate=relocate, place=place)

    def open(self, timeout: float = 0.1, reappear: float = REAPPEAR_TIMEOUT,
             held_in_reset: bool = False) -> serial.SerialBase:
        """As SerialBoard's; a wired board keeps DTR and RTS released (its resets are the wires')."""
        return super().open(timeout, reappear, held_in_reset=held_in_reset and not self.wired)

    def enter_bootloader(self) -> None:
        """Wired: IO0 low through a pulse of EN, as esptool's classic reset does with DTR/RTS."""
        if not self.wired:
            return
        self._wire("io0", True)
        self._pulse_en()
        time.sleep(IO0_HOLD)
        self._wire("io0", False)

    def reset(self, line: serial.SerialBase, discard_pending: bool = False) -> None:
        if not self.wired:
            super().reset(line, discard_pending)
            return
        self._wire("io0", False)
        self._pulse_en(line if discard_pending else None)

    def _pulse_en(self, discard: serial.SerialBase | None = None) -> None:
        self._wire("en", True)
        time.sleep(RESET_PULSE)
        if discard is not None:
            discard.reset_input_buffer()
        self._wire("en", False)

    def _wire(self, name: str, asserted: bool) -> None:
        _call(self.controls.place, f"{name.upper()} output", getattr(self.controls, name).set, asserted)

    def power_cycle(self, listening: Callable[[], object] | None = None) -> bool:
        """Switch the board off and on again through the place's power driver (labgrid's `cycle`:
        off, its `delay`, on). A wired board is held in reset meanwhile, and released once
        `listening` returns: a serial bridge that lost its power with the chip (a hub port) takes
        seconds to come back, and the chip's first lines would go to nobody. False: the port
        may have stayed (a PDU on the board's own supply) or gone and come back."""
        if self.controls.power is None:
            return super().power_cycle(listening)
        if self.wired:
            self._wire("en", True)
        _call(self.controls.place, "power switch", self.controls.power.cycle)
        if self.wired:
            if listening is not None:
                listening()
            self._wire("en", False)
        return False


def place_board(port: str, address: str, place: str) -> PlaceBoard:
    """The board in `place` (acquired by this run), with what the place gives to drive it."""
    with Coordinator(address) as coordinator:
        wires = controls(coordinator, place)
    log.info("labgrid place %s: %s", place, wires.describe())
    return PlaceBoard(port, address, place, wires)
