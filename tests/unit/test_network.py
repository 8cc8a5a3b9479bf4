"""The runner's address on the board's network, checked against the kernel's routing table
(/proc/net/route) and by binding to it: an address the runner does not own cannot be bound."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

import pytest

from ota_rig.bench.network import NetworkError, host_address


def link_networks() -> list[ipaddress.IPv4Network]:
    """IPv4 networks the kernel reaches directly (no gateway), loopback excepted."""
    rows = Path("/proc/net/route").read_text().splitlines()[1:]
    networks = []
    for row in rows:
        _, destination, gateway, _, _, _, _, mask, *_ = row.split()
        if int(gateway, 16) == 0 and int(mask, 16):
            # The table holds addresses in the host's (little-endian) byte order.
            net = ipaddress.IPv4Address(bytes.fromhex(destination)[::-1])
            bits = bin(int(mask, 16)).count("1")
            networks.append(ipaddress.IPv4Network(f"{net}/{bits}"))
    return [net for net in networks if not net.is_loopback]


def bindable(address: str) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET) as probe:
        probe.bind((address, 0))
    return True


def test_toward_a_directly_connected_network_the_runner_picks_its_own_address_on_it() -> None:
    networks = link_networks()
    if not networks:
        pytest.skip("this machine has no directly connected network besides loopback")
    for network in networks:
        address = host_address(str(network))
        assert ipaddress.ip_address(address) in network and bindable(address)


def test_with_no_hint_the_default_route_decides_and_never_gives_loopback() -> None:
    try:
        address = host_address()
    except NetworkError as err:
        assert "no default route" in str(err) and "--ota-host" in str(err)
        return
    assert not ipaddress.ip_address(address).is_loopback and bindable(address)


def test_a_loopback_network_is_reached_from_loopback() -> None:
    assert host_address("127.0.0.0/8") == "127.0.0.1"


def test_a_hint_that_is_no_address_is_one_sentence() -> None:
    with pytest.raises(NetworkError, match=r"^'wlan0' is neither an IP address nor a network such as 192.168.4.0/24$"):
        host_address("wlan0")
