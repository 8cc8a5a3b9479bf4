"""Boards in a labgrid farm: places acquired on labgrid's coordinator, their serial ports as RFC2217 URLs.

`--ota-board labgrid:PLACE[,PLACE...]` names places; `--ota-board labgrid:TAG=VALUE[,...]` asks for any
free places whose tags include those. The coordinator is at `LG_COORDINATOR` (labgrid's own
variable, default 127.0.0.1:20408); the holder the coordinator records is labgrid's own
`<LG_HOSTNAME or host name>/<LG_USERNAME or login name>`, so a CI job that sets LG_USERNAME is named as
such in `labgrid-client who`.

The rig speaks to the coordinator through labgrid's client session (labgrid.remote.client), never
by parsing labgrid-client's output, and turns a place's NetworkSerialPort into
`rfc2217://host:port` through labgrid's proxy manager, so an exporter reachable only over SSH
(`LG_PROXY`, or an exporter started with --isolated) gets a forwarded local port. labgrid is an
optional dependency (`pip install "esp32-ota-rig[labgrid]"`), imported only here and only when a
farm is asked for. The places are acquired all or none, and released by `release`, which only
ever releases places still held by this holder.

With a wait (`--ota-board-wait SECONDS`) the rig queues as `labgrid-client reserve --wait` does
(labgrid/remote/client.py, create_reservation and _wait_reservation): one reservation a place,
whose filter is the request's tags or, for a place by name, the `name` tag the coordinator's
scheduler gives every place (labgrid/remote/coordinator.py, schedule_reservations). It polls the
reservations (a poll refreshes one; one not polled for 60 s expires: labgrid/remote/common.py,
Reservation) until the coordinator has allocated each a place, which then only their owner may
acquire, acquires those, and cancels the reservations however the wait ends: acquired, timed
out, stopped by a signal. A SIGKILL leaves them to expire by themselves a minute later.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ota_rig.bench.board import BoardError

PREFIX = "labgrid:"
COORDINATOR_ENV = "LG_COORDINATOR"
DEFAULT_COORDINATOR = "127.0.0.1:20408"
CONNECT_TIMEOUT = 15.0  # seconds to reach the coordinator and read its places
INSTALL = ('labgrid is not installed: install the extra with pip install "esp32-ota-rig[labgrid]" '
           '(docs/hardware.md, "Board farms")')
RECORD = "labgrid-places.json"  # in the run's folder: what to release after a SIGKILL
WAIT_POLL = 0.5  # seconds between polls of the run's reservations (labgrid-client polls each second)
_TAG = re.compile(r"[a-z][a-z0-9_]*")  # labgrid's TAG_KEY


class FarmError(BoardError):
    """The farm could not give the rig its boards; one sentence."""


class WaitStopped(FarmError):
    """A signal stopped the wait for places (its reservations are cancelled)."""


@dataclass(frozen=True)
class Request:
    """What `--ota-board labgrid:...` asks for: places by name, or places by tags."""

    places: tuple[str, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        return ", ".join(self.places) or "places tagged " + ", ".join(f"{k}={v}" for k, v in self.tags.items())


@dataclass(frozen=True)
class Held:
    """Places this run holds on a coordinator, and each one's serial port."""

    coordinator: str
    holder: str  # host/user, as the coordinator records it
    places: tuple[str, ...]
    ports: tuple[str, ...]  # rfc2217://host:port, one per place

    def write(self, path: Path) -> None:
        """Write what a CI step needs to release the places after a SIGKILL (docs/hardware.md)."""
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")


def parse(board: str) -> Request:
    """The Request in `labgrid:...`; FarmError for one that names nothing."""
    items = [item.strip() for item in board[len(PREFIX):].split(",") if item.strip()]
    if not items:
        raise FarmError(f"--ota-board {board} names no place; pass labgrid:PLACE[,PLACE...] or labgrid:TAG=VALUE[,...]")
    tagged = [item for item in items if "=" in item]
    if tagged and len(tagged) != len(items):
        raise FarmError(f"--ota-board {board} mixes place names and tags; pass either labgrid:PLACE,... or "
                        "labgrid:TAG=VALUE,...")
    if not tagged:
        if len(set(items)) != len(items):
            raise FarmError(f"--ota-board {board} names a place twice; name each place once")
        return Request(places=tuple(items))
    tags = dict(item.split("=", 1) for item in items)
    bad = [key for key in tags if not _TAG.fullmatch(key)]
    if bad:
        raise FarmError(f"--ota-board {board}: {bad[0]!r} is not a labgrid tag name; use lower-case letters, "
                        "digits and _ (as labgrid-client set-tags does)")
    return Request(tags=tags)


def coordinator_address() -> str:
    return os.environ.get(COORDINATOR_ENV) or DEFAULT_COORDINATOR


class Coordinator:
    """A client session with the coordinator at `address` (LG_COORDINATOR by default), as a
    context manager: its places and resources as the coordinator has them when it is entered."""

    def __init__(self, address: str | None = None, timeout: float = CONNECT_TIMEOUT) -> None:
        self.address = address or coordinator_address()
        self.timeout = timeout
        self.session: Any = None

    def __enter__(self) -> "Coordinator":
        try:
            from labgrid.remote.client import ClientSession, ensure_event_loop
            from labgrid.util.proxy import proxymanager
        except ImportError:
            raise FarmError(INSTALL) from None
        self.loop = ensure_event_loop()
        try:
            target = proxymanager.get_grpc_address(self.address, default_port=20408)
            self.session = ClientSession(target, self.loop)
            self._run(self.session.start())
        except Exception as err:
            self._close()
            raise FarmError(f"cannot reach the labgrid coordinator at {self.address} ({err}); start it, or set "
                            f"{COORDINATOR_ENV} to its host:port") from None
        return self

    def __exit__(self, *exc: object) -> None:
        self._close()

    def _run(self, step: Any) -> Any:
        return self.loop.run_until_complete(asyncio.wait_for(step, self.timeout))

    def _close(self) -> None:
        if self.session is None:
            return
        session, self.session = self.session, None
        for step in (session.stop, session.close):
            try:
                self.loop.run_until_complete(asyncio.wait_for(step(), 5))
            except Exception:  # noqa: BLE001 - a session that broke down has nothing left to close
                pass

    @property
    def holder(self) -> str:
        return f"{self.session.gethostname()}/{self.session.getuser()}"

    def places(self) -> dict[str, Any]:
        return dict(self.session.places)

    def candidates(self, request: Request) -> list[str]:
        """The places that can serve `request`: those it names (FarmError for one the coordinator
        does not have), or those carrying all its tags."""
        places = self.places()
        if request.places:
            missing = [name for name in request.places if name not in places]
            if missing:
                raise FarmError(f"the labgrid coordinator at {self.address} has no place {missing[0]}; "
                                f"pass one of: {', '.join(sorted(places)) or 'none (create one with labgrid-client)'}")
            return list(request.places)
        return sorted(name for name, place in places.items()
                      if all(place.tags.get(key) == value for key, value in request.tags.items()))

    def choose(self, request: Request, count: int) -> list[str]:
        """The places to acquire for `request`: those named, or `count` free ones with its tags."""
        if request.places:
            return self.candidates(request)
        places = self.places()
        tagged = self.candidates(request)
        free = [name for name in tagged if not places[name].acquired and not places[name].reservation]
        if len(free) < count:
            held = "; ".join(f"{name} held by {places[name].acquired}" for name in tagged if places[name].acquired)
            tags = ", ".join(f"{key}={value}" for key, value in request.tags.items())
            raise FarmError(f"{len(free)} of the {len(tagged)} places tagged {tags} on {self.address} "
                            f"are free and the run needs {count}{' (' + held + ')' if held else ''}; "
                            "wait for them, or run fewer workers (-n)")
        return free[:count]

    def acquire(self, names: list[str]) -> None:
        """Acquire every place in `names`, or none: those taken are released when one fails."""
        from labgrid.remote.generated import labgrid_coordinator_pb2 as pb2

        taken: list[str] = []
        try:
            for name in names:
                place = self.session.places[name]
                if place.acquired:
                    raise FarmError(f"the labgrid place {name} is held by {place.acquired}; wait until it is "
                                    f"released, or choose another place")
                try:
                    self._run(self.session.stub.AcquirePlace(pb2.AcquirePlaceRequest(placename=name)))
                except Exception as err:  # noqa: BLE001 - grpc's AioRpcError, a timeout: said below
                    holder = self.session.places[name].acquired
                    detail = err.details() if hasattr(err, "details") else str(err)
                    why = f"held by {holder}" if holder else detail
                    raise FarmError(f"cannot acquire the labgrid place {name} ({why}); wait until it is free, "
                                    "or choose another place") from None
                taken.append(name)
            self._run(self.session.sync_with_coordinator())
        except BaseException:
            self.release(taken)
            raise

    @contextmanager
    def reservations(self, request: Request, count: int) -> Iterator[list[str]]:
        """Reservations for the places `request` asks for (one a named place, or `count` with its
        tags), whose tokens it yields; all cancelled when the block ends, however it ends."""
        from labgrid.remote.generated import labgrid_coordinator_pb2 as pb2

        candidates = self.candidates(request)
        if request.places:
            filters = [{"name": name} for name in candidates]
        elif len(candidates) < count:
            raise FarmError(f"the labgrid coordinator at {self.address} has {len(candidates)} places tagged "
                            f"{request.describe().removeprefix('places tagged ')} and the run needs {count}; tag more "
                            "places (labgrid-client -p PLACE set-tags), or run fewer workers (-n)")
        else:
            filters = [request.tags] * count
        tokens: list[str] = []
        try:
            for fltr in filters:
                made = self._run(self.session.stub.CreateReservation(pb2.CreateReservationRequest(
                    filters={"main": pb2.Reservation.Filter(filter=fltr)}, prio=0.0)))
                tokens.append(made.reservation.token)
            yield tokens
        finally:
            for token in tokens:
                try:
                    self._run(self.session.stub.CancelReservation(pb2.CancelReservationRequest(token=token)))
                except Exception:  # noqa: BLE001 - a reservation gone already (expired) needs no cancelling
                    pass

    def wait(self, request: Request, tokens: list[str], seconds: float,
             stopped: Callable[[], str | None] = lambda: None) -> list[str]:
        """Poll the reservations `tokens` until the coordinator has allocated each a place, for at
        most `seconds`: the places, in the order of the tokens. FarmError naming who holds the
        places when the time is up; WaitStopped when `stopped()` names a signal."""
        from labgrid.remote.common import Reservation, ReservationState
        from labgrid.remote.generated import labgrid_coordinator_pb2 as pb2

        deadline = time.monotonic() + seconds
        while True:
            polled = [Reservation.from_pb2(self._run(self.session.stub.PollReservation(
                pb2.PollReservationRequest(token=token))).reservation) for token in tokens]
            lost = [res for res in polled if res.state in (ReservationState.expired, ReservationState.invalid)]
            if lost:
                raise FarmError(f"the labgrid coordinator at {self.address} dropped the run's reservation for "
                                f"{request.describe()} ({lost[0].state.name}); start the run again")
            if all(res.state is not ReservationState.waiting for res in polled):
                self._run(self.session.sync_with_coordinator())
                return [res.allocations["main"][0] for res in polled]
            if stopped():
                raise WaitStopped(f"{stopped()} stopped the wait for the labgrid places ({request.describe()}) "
                                  f"on {self.address}; nothing is held or reserved")
            if time.monotonic() >= deadline:
                raise FarmError(f"waited {seconds:g} s for {request.describe()} on {self.address} and "
                                f"{self.blockers(request, polled)}; wait longer (--ota-board-wait), or choose "
                                "other places")
            self._run(asyncio.sleep(WAIT_POLL))

    def blockers(self, request: Request, polled: list[Any]) -> str:
        """Who keeps the places of `request` the reservations `polled` still wait for: a clause."""
        from labgrid.remote.generated import labgrid_coordinator_pb2 as pb2

        self._run(self.session.sync_with_coordinator())
        ours = {res.token for res in polled}
        allocated = {name for res in polled for group in res.allocations.values() for name in group}
        owners = {res.token: res.owner for res in
                  self._run(self.session.stub.GetReservations(pb2.GetReservationsRequest())).reservations}
        places = self.places()
        taken = []
        for name in self.candidates(request):
            place = places[name]
            if name in allocated:
                continue
            if place.acquired:
                taken.append(f"{name} is held by {place.acquired}")
            elif place.reservation and place.reservation not in ours:
                taken.append(f"{name} is reserved for {owners.get(place.reservation, 'another client')}")
        waiting = sum(not res.allocations for res in polled)
        got = f"got {len(polled) - waiting} of {len(polled)}: " if len(polled) > 1 else ""
        return got + ("; ".join(taken) if taken else "no place was allocated")

    def release(self, names: list[str], holder: str | None = None) -> list[str]:
        """Release each place in `names` still held by `holder` (this session's by default): a
        place someone else holds by now is left alone. The places released."""
        from labgrid.remote.generated import labgrid_coordinator_pb2 as pb2

        holder = holder or self.holder
        self._run(self.session.sync_with_coordinator())  # the coordinator's word on places just acquired
        released = []
        for name in names:
            place = self.session.places.get(name)
            if place is None or place.acquired != holder:
                continue
            self._run(self.session.stub.ReleasePlace(pb2.ReleasePlaceRequest(placename=name, fromuser=holder)))
            released.append(name)
        self._run(self.session.sync_with_coordinator())
        return released

    def port(self, name: str) -> str:
        """The rfc2217:// URL of the place's NetworkSerialPort, through labgrid's proxy manager."""
        from labgrid.resource import NetworkSerialPort
        from labgrid.util.proxy import proxymanager

        place = self.session.places[name]
        found = []
        for exporter, group, cls, resource_name in place.acquired_resources:
            if cls != "NetworkSerialPort":
                continue
            try:
                entry = self.session.resources[exporter][group][resource_name]
            except KeyError:
                continue
            if entry.avail:
                found.append(entry)
        if len(found) != 1:
            what = "no available NetworkSerialPort" if not found else f"{len(found)} NetworkSerialPorts"
            raise FarmError(f"the labgrid place {name} has {what}; give it exactly one "
                            "(labgrid-client -p PLACE add-match EXPORTER/GROUP/NetworkSerialPort/NAME)")
        args = found[0].args
        if args.get("protocol", "rfc2217") != "rfc2217":
            raise FarmError(f"the labgrid place {name}'s serial port speaks {args['protocol']}, not rfc2217; "
                            "export it with protocol: rfc2217 (ser2net's telnet(rfc2217) accepter)")
        resource = NetworkSerialPort(None, None, host=args["host"], port=args["port"])
        resource.extra = found[0].extra
        host, port = proxymanager.get_host_and_port(resource)
        return f"rfc2217://{host}:{port}"


def acquire(request: Request, count: int, address: str | None = None, wait: float = 0.0,
            stopped: Callable[[], str | None] = lambda: None) -> Held:
    """Acquire the places `request` asks for (at least `count` of them), all or none: at once, or
    with `wait` seconds, through reservations the coordinator allocates (Coordinator.wait;
    `stopped()` names a signal that ends the wait)."""
    with Coordinator(address) as coordinator:
        if wait > 0:
            with coordinator.reservations(request, count) as tokens:
                names = coordinator.wait(request, tokens, wait, stopped)
                coordinator.acquire(names)
        else:
            names = coordinator.choose(request, count)
            if len(names) < count:
                raise FarmError(f"--ota-board labgrid:{','.join(names)} names {len(names)} places and -n asks for "
                                f"{count} workers; name at least {count} places, or run fewer workers")
            coordinator.acquire(names)
        try:
            ports = tuple(coordinator.port(name) for name in names)
        except BaseException:
            coordinator.release(names)
            raise
        return Held(coordinator.address, coordinator.holder, tuple(names), ports)


def release(held: Held) -> list[str]:
    """Release the places `held` names that its holder still holds; those released."""
    with Coordinator(held.coordinator) as coordinator:
        return coordinator.release(list(held.places), held.holder)


def locate(address: str, place: str) -> str:
    """The place's serial port as the coordinator has it now (an exporter may have moved it)."""
    with Coordinator(address) as coordinator:
        return coordinator.port(place)
