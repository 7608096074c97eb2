"""Inventory for bare `@orbstack` (every machine on this Mac) and `@orbstack/MAC:`
(every machine on a Mac reached over SSH), grouped by state, distro and arch, and
for a remote Mac by Mac too.

`make_names_data` is static and runs while pyinfra loads the inventory, before
any State (and so before the shared binary process) exists, so this runs the
binary's one-shot `list --json` command instead.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from gevent.subprocess import PIPE, Popen
from pyinfra.api.exceptions import InventoryError

from . import _binary

LIST_TIMEOUT_SECONDS = 60

HostNameData = tuple[str, dict[str, Any], list[str]]


def list_machines(mac: str = "") -> list[dict[str, Any]]:
    """Machines on this Mac or on `mac` (an ssh destination), as `Machine` objects
    (docs/protocol.md), or InventoryError."""
    try:
        binary = _binary.find_binary()
    except _binary.BinaryNotFoundError as e:
        raise InventoryError(f"Cannot list OrbStack machines: {e}") from None

    argv = [binary, "list", "--json", *(["--mac", mac] if mac else [])]
    try:
        proc = Popen(argv, stdout=PIPE, stderr=PIPE, stdin=PIPE)
        stdout, stderr = proc.communicate(timeout=LIST_TIMEOUT_SECONDS)
    except OSError as e:
        raise InventoryError(f"Cannot run {binary}: {e}") from None
    except Exception:  # TimeoutExpired
        proc.kill()
        raise InventoryError(
            f"`{' '.join(argv)}` did not answer within {LIST_TIMEOUT_SECONDS} s: "
            "is OrbStack stuck? Try `orbctl status`.",
        ) from None

    if proc.returncode != 0:
        where = f" on Mac {mac}" if mac else ""
        raise InventoryError(f"Cannot list OrbStack machines{where}: {_error_text(stderr, proc.returncode)}")

    try:
        listed = json.loads(stdout)
    except ValueError as e:
        raise InventoryError(f"`{' '.join(argv)}` printed something that is not JSON: {e}") from None
    # Accept both a bare array and the `machines.list` result object.
    if isinstance(listed, dict):
        listed = listed.get("machines") or []
    return list(listed)


def _error_text(stderr: bytes, returncode: int) -> str:
    """The binary's error message, once, without cobra's "Error: " prefix."""
    lines: list[str] = []
    for line in stderr.decode("utf-8", "replace").splitlines():
        line = line.strip()
        line = line[len("Error: "):] if line.startswith("Error: ") else line
        if line and line not in lines:
            lines.append(line)
    return "; ".join(lines) or f"`list --json` exited with status {returncode}"


def group_name(prefix: str, value: str) -> str:
    """A group name that is a valid Python identifier (usable in group_data/ files)."""
    return f"{prefix}_" + re.sub(r"[^A-Za-z0-9_]", "_", value)


def mac_group(mac: str) -> str:
    """The group of every host on one remote Mac."""
    return group_name("orbstack_mac", mac)


def names_data_for_machine(machine: dict[str, Any], mac: str = "") -> HostNameData:
    name = machine["name"]
    data = {
        "orbstack_machine": name,
        "orbstack_distro": machine.get("distro") or "",
        "orbstack_version": machine.get("version") or "",
        "orbstack_arch": machine.get("arch") or "",
        "orbstack_default_user": machine.get("default_user") or "",
        "orbstack_ip4": machine.get("ip4") or "",
    }
    groups = ["@orbstack"]
    if mac:
        data["orbstack_mac"] = mac
        groups.append(mac_group(mac))
    for prefix_value in (machine.get("state"), machine.get("distro"), machine.get("arch")):
        if prefix_value:
            groups.append(group_name("orbstack", prefix_value))
    return f"@orbstack/{mac}:{name}" if mac else f"@orbstack/{name}", data, groups


def all_machines_names_data(mac: str = "") -> Iterator[HostNameData]:
    machines = list_machines(mac)
    if not machines:
        if mac:
            raise InventoryError(
                f"`@orbstack/{mac}:` means every OrbStack machine on Mac {mac}, and there are none: "
                f"create one (`ssh {mac} orbctl create debian NAME`) or name one with `@orbstack/{mac}:NAME` "
                "and `orbstack_image` in its data.",
            )
        raise InventoryError(
            "`@orbstack` means every OrbStack machine, and there are none: create one "
            "(`orbctl create debian NAME`) or name one with `@orbstack/NAME`.",
        )
    for machine in sorted(machines, key=lambda m: m["name"]):
        yield names_data_for_machine(machine, mac)
