"""The network of an OrbStack machine (an ``@orbstack/NAME`` host): ``orbstack.Network``.

Minimal images often lack ``ip``: the fact then reads ``/proc`` and ``/sys``.

``Ping``, ``TcpPort``, ``Http`` and ``DnsLookup`` moved to
``pyinfra_orbstack.facts.linux`` (they are not OrbStack-specific). The names here and
``orbstack.Ping`` etc. are deprecated aliases, kept for the 0.x releases: they work as
before and log a warning saying where the fact went.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import Any

from pyinfra import logger
from pyinfra.api.util import memoize

from pyinfra_orbstack.facts import linux
from pyinfra_orbstack.facts.orbstack import OrbStackFact


def _tagged(tag: str, path: str) -> str:
    """Print every line of a file prefixed with '@tag ' (pure sh: no sed needed)."""
    return (
        f'[ -r {path} ] && while IFS= read -r l || [ -n "$l" ]; '
        f'do printf "%s\\n" "@{tag} $l"; done < {path}; '
    )


class Network(OrbStackFact):
    """
    The machine's network: interfaces (MAC, state, MTU, IPv4/IPv6 addresses), routes,
    DNS servers and its ``.orb.local`` name.

    .. code:: python

        {
            "hostname": "web",
            "orb_name": "web.orb.local",
            "interfaces": {"eth0": {"mac": "02:42:ac:11:00:02", "state": "up", "mtu": 1500,
                                    "ipv4": ["192.168.139.10/24"], "ipv6": ["fd07:b51a:cc66::2/64"]}},
            "ipv4": ["192.168.139.10"], "ipv6": ["fd07:b51a:cc66::2"],   # loopback excluded
            "routes": [{"family": 4, "destination": "default", "gateway": "192.168.139.1",
                        "interface": "eth0"}],
            "dns_servers": ["192.168.139.1"], "dns_search": [],
            "source": "ip",   # or "proc" when the ip command is missing
        }
    """

    def command(self) -> str:
        return (
            'printf "@hostname %s\\n" "$(cat /proc/sys/kernel/hostname 2>/dev/null || hostname)"; '
            "for d in /sys/class/net/*; do "
            '[ -e "$d/address" ] || continue; '
            'printf "@link %s %s %s %s\\n" "${d##*/}" "$(cat "$d/address")" '
            '"$(cat "$d/operstate" 2>/dev/null)" "$(cat "$d/mtu" 2>/dev/null)"; '
            "done; "
            "if command -v ip >/dev/null 2>&1; then "
            "echo '@source ip'; "
            "ip -o addr show | while IFS= read -r l; do printf '%s\\n' \"@addr $l\"; done; "
            "ip -4 route show | while IFS= read -r l; do printf '%s\\n' \"@route4 $l\"; done; "
            "ip -6 route show 2>/dev/null | while IFS= read -r l; do printf '%s\\n' \"@route6 $l\"; done; "
            "else "
            "echo '@source proc'; "
            + _tagged("inet6", "/proc/net/if_inet6")
            + _tagged("proute", "/proc/net/route")
            + _tagged("fib", "/proc/net/fib_trie")
            + _tagged("proute6", "/proc/net/ipv6_route")
            + "fi; "
            + _tagged("resolv", "/etc/resolv.conf")
            + "true"
        )

    def process(self, output: list[str]) -> dict[str, Any]:
        return parse_network(output)


def parse_network(output: list[str]) -> dict[str, Any]:
    tagged: dict[str, list[str]] = {}
    for line in output:
        if line.startswith("@"):
            tag, _, rest = line[1:].partition(" ")
            tagged.setdefault(tag, []).append(rest)

    hostname = (tagged.get("hostname") or [""])[0].strip()
    interfaces: dict[str, dict[str, Any]] = {}
    for link in tagged.get("link", []):
        bits = link.split() + ["", "", "", ""]
        interfaces[bits[0]] = {
            "mac": bits[1],
            "state": bits[2],
            "mtu": int(bits[3]) if bits[3].isdigit() else None,
            "ipv4": [],
            "ipv6": [],
        }

    def iface(name: str) -> dict[str, Any]:
        return interfaces.setdefault(
            name,
            {"mac": "", "state": "", "mtu": None, "ipv4": [], "ipv6": []},
        )

    routes: list[dict[str, Any]] = []
    source = (tagged.get("source") or ["proc"])[0].strip()
    if source == "ip":
        for line in tagged.get("addr", []):
            bits = line.split()
            if len(bits) >= 4 and bits[2] in ("inet", "inet6"):
                name = bits[1].split("@")[0]
                iface(name)["ipv4" if bits[2] == "inet" else "ipv6"].append(bits[3])
        for family, tag in ((4, "route4"), (6, "route6")):
            for line in tagged.get(tag, []):
                routes.append(_parse_ip_route(family, line))
    else:
        _parse_proc(tagged, iface, routes)

    dns, search = [], []
    for line in tagged.get("resolv", []):
        bits = line.split()
        if len(bits) >= 2 and bits[0] == "nameserver":
            dns.append(bits[1])
        elif bits and bits[0] in ("search", "domain"):
            search.extend(bits[1:])

    def addresses(family: str) -> list[str]:
        return [
            cidr.split("/")[0]
            for name, data in interfaces.items()
            if name != "lo"
            for cidr in data[family]
        ]

    return {
        "hostname": hostname,
        "orb_name": f"{hostname}.orb.local" if hostname else "",
        "interfaces": interfaces,
        "ipv4": addresses("ipv4"),
        "ipv6": addresses("ipv6"),
        "routes": routes,
        "dns_servers": dns,
        "dns_search": search,
        "source": source,
    }


def _parse_ip_route(family: int, line: str) -> dict[str, Any]:
    bits = line.split()
    route = {"family": family, "destination": bits[0] if bits else "", "gateway": "", "interface": ""}
    for key, field in (("via", "gateway"), ("dev", "interface")):
        if key in bits[:-1]:
            route[field] = bits[bits.index(key) + 1]
    return route


def _hex_ipv4(value: str) -> str:
    # /proc/net/route prints addresses as little-endian hex.
    return str(ipaddress.IPv4Address(bytes.fromhex(value)[::-1]))


def _parse_proc(
    tagged: dict[str, list[str]], iface: Callable[[str], dict[str, Any]], routes: list[dict[str, Any]],
) -> None:
    subnets = []  # (network, interface) from directly connected routes
    for line in tagged.get("proute", []):
        bits = line.split()
        if len(bits) < 8 or bits[0] == "Iface":
            continue
        dest, gateway, mask = _hex_ipv4(bits[1]), _hex_ipv4(bits[2]), _hex_ipv4(bits[7])
        network = ipaddress.IPv4Network(f"{dest}/{mask}", strict=False)
        routes.append(
            {
                "family": 4,
                "destination": "default" if network.prefixlen == 0 else str(network),
                "gateway": "" if gateway == "0.0.0.0" else gateway,
                "interface": bits[0],
            },
        )
        if gateway == "0.0.0.0" and network.prefixlen:
            subnets.append((network, bits[0]))

    # fib_trie lists every local address as "|-- A.B.C.D" followed by "/32 host LOCAL";
    # the interface is the one whose connected subnet holds it.
    fib = tagged.get("fib", [])
    seen = set()
    for i, line in enumerate(fib[:-1]):
        found = re.search(r"\|--\s+(\d+\.\d+\.\d+\.\d+)$", line)
        # "/32 host LOCAL" is one address; "/8 host LOCAL" (127.0.0.0) is a local subnet.
        if not found or "/32 host LOCAL" not in fib[i + 1]:
            continue
        address = ipaddress.IPv4Address(found.group(1))
        if address in seen:
            continue
        seen.add(address)
        if address.is_loopback:
            iface("lo")["ipv4"].append(f"{address}/8")
            continue
        for network, name in sorted(subnets, key=lambda s: -s[0].prefixlen):
            if address in network:
                iface(name)["ipv4"].append(f"{address}/{network.prefixlen}")
                break

    for line in tagged.get("inet6", []):
        bits = line.split()
        if len(bits) >= 6:
            address6 = ipaddress.IPv6Address(bytes.fromhex(bits[0]))
            iface(bits[5])["ipv6"].append(f"{address6}/{int(bits[2], 16)}")

    for line in tagged.get("proute6", []):
        bits = line.split()
        if len(bits) < 10 or bits[9] == "lo":
            continue
        dest6 = ipaddress.IPv6Address(bytes.fromhex(bits[0]))
        prefix = int(bits[1], 16)
        gateway6 = ipaddress.IPv6Address(bytes.fromhex(bits[4]))
        routes.append(
            {
                "family": 6,
                "destination": "default" if prefix == 0 else f"{dest6}/{prefix}",
                "gateway": "" if gateway6.is_unspecified else str(gateway6),
                "interface": bits[9],
            },
        )




@memoize
def _warn_moved(name: str) -> None:
    logger.warning(
        f"orbstack.{name} is deprecated and will be removed in a later release: "
        f"use pyinfra_orbstack.facts.linux.{name} (on the CLI: `fact pyinfra_orbstack.facts.linux.{name}`)",
    )


class Ping(linux.Ping):
    """Deprecated alias of ``pyinfra_orbstack.facts.linux.Ping``."""

    def command(self, target: str, count: int = 1, timeout: int = 2) -> str:
        _warn_moved("Ping")
        return super().command(target, count, timeout)


class TcpPort(linux.TcpPort):
    """Deprecated alias of ``pyinfra_orbstack.facts.linux.TcpPort``."""

    def command(self, target: str, port: int, timeout: int = 3) -> str:
        _warn_moved("TcpPort")
        return super().command(target, port, timeout)


class Http(linux.Http):
    """Deprecated alias of ``pyinfra_orbstack.facts.linux.Http``."""

    def command(self, url: str, timeout: int = 5) -> str:
        _warn_moved("Http")
        return super().command(url, timeout)


class DnsLookup(linux.DnsLookup):
    """Deprecated alias of ``pyinfra_orbstack.facts.linux.DnsLookup``."""

    def command(self, hostname: str, type: str = "A") -> str:
        _warn_moved("DnsLookup")
        return super().command(hostname, type)


# Set after the classes exist: FactBase names every subclass after its module.
for _alias in (Ping, TcpPort, Http, DnsLookup):
    _alias.name = f"orbstack.{_alias.__name__}"
