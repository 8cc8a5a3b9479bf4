"""Where the board finds the update server: the runner's address on the board's network.

A board on Wi-Fi reaches the runner through whichever of the runner's interfaces faces that
network. The kernel already knows which: ask it for the source address of a route toward the
board's network (a UDP socket's connect() picks the route and sends nothing). With no hint,
the default route's interface is the one a Wi-Fi access point on the LAN is reached through.

    host_address("192.168.4.0/24")   # the runner's address toward that network
    host_address()                   # the default route's source address
"""

from __future__ import annotations

import ipaddress
import socket

from ota_rig.errors import RigError

# With no hint, route toward an address reserved for documentation (RFC 5737): connect()
# consults the routing table without sending a packet, so any address off-link works.
_OFF_LINK = "192.0.2.1"


class NetworkError(RigError, RuntimeError):
    """No usable address toward the board's network; one sentence."""


def route_source(destination: str) -> str:
    """The local address the kernel would send from to reach `destination`."""
    family = socket.AF_INET6 if ":" in destination else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect((destination, 9))
        return probe.getsockname()[0]


def host_address(toward: str | None = None) -> str:
    """The runner's address a board on the network `toward` (an address or a CIDR network,
    e.g. the access point's subnet) can reach; the default route's when `toward` is None."""
    destination = _OFF_LINK
    if toward:
        try:
            network = ipaddress.ip_network(toward, strict=False)
        except ValueError as err:
            raise NetworkError(f"{toward!r} is neither an IP address nor a network such as 192.168.4.0/24") from err
        destination = str(network.network_address + 1 if network.num_addresses > 1 else network.network_address)
    try:
        address = route_source(destination)
    except OSError as err:
        where = f"the board's network {toward}" if toward else "any network (no default route)"
        raise NetworkError(
            f"this runner has no route to {where}: pass --ota-host with its address on the board's network ({err})"
        ) from err
    if ipaddress.ip_address(address).is_loopback and not ipaddress.ip_address(destination).is_loopback:
        raise NetworkError(f"the route toward {destination} leaves through loopback: pass --ota-host")
    return address
