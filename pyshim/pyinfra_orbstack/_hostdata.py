"""The connector's host data: the keys an inventory may set, with defaults and
meanings (pyinfra type-checks them and documents them from `connector_data_meta`),
`machine.connect`'s params built from them, and the read-only keys filled in from
what OrbStack reports about the machine.
"""

from __future__ import annotations

import os
from typing import Any

from pyinfra.api.host import Host
from pyinfra.connectors.base import DataMeta
from typing_extensions import TypedDict


class OrbStackConnectorData(TypedDict, total=False):
    orbstack_machine: str
    orbstack_user: str
    orbstack_workdir: str
    orbstack_start: bool
    orbstack_connect_timeout: int
    orbstack_image: str
    orbstack_arch: str
    orbstack_cpus: int
    orbstack_memory: str
    orbstack_disk: str
    orbstack_isolated: bool
    orbstack_user_data: str
    orbstack_distro: str
    orbstack_version: str
    orbstack_default_user: str
    orbstack_ip4: str
    orbstack_mac: str
    orbstack_ssh_port: int
    orbstack_ssh_user: str
    orbstack_ssh_key: str
    orbstack_ssh_config: str
    orbstack_ssh_options: Any
    orbstack_remote_binary: str


connector_data_meta: dict[str, DataMeta] = {
    "orbstack_machine": DataMeta("Name of the OrbStack machine (set by `@orbstack/NAME`)."),
    "orbstack_user": DataMeta(
        "Linux user commands run as (before any `_sudo`/`_su_user`); "
        "default: the machine's default user.",
        "",
    ),
    "orbstack_workdir": DataMeta(
        "Directory commands start in; default: the user's home directory.",
        "",
    ),
    "orbstack_start": DataMeta("Start the machine on connect if it is stopped.", True),
    "orbstack_connect_timeout": DataMeta(
        "Seconds to wait on connect for the machine to start and answer commands "
        "(0: the binary's default, 120).",
        0,
    ),
    "orbstack_image": DataMeta(
        "Create the machine from this image (`DISTRO[:VERSION]`, e.g. `debian:bookworm`) "
        "on connect if it does not exist; without it a missing machine is an error.",
        "",
    ),
    "orbstack_arch": DataMeta(
        "The machine's CPU architecture (`arm64`/`amd64`); also the one used when "
        "`orbstack_image` creates the machine.",
        "",
    ),
    "orbstack_cpus": DataMeta("CPU limit of a machine `orbstack_image` creates (OrbStack 2.1+; 0: none).", 0),
    "orbstack_memory": DataMeta(
        "Memory limit of a machine `orbstack_image` creates, e.g. `4G` (OrbStack 2.1+).", "",
    ),
    "orbstack_disk": DataMeta(
        "Disk limit of a machine `orbstack_image` creates, e.g. `32G` (OrbStack 2.1+).", "",
    ),
    "orbstack_isolated": DataMeta(
        "Create the machine isolated from the Mac (no Mac mounts; OrbStack 2.1+).", False,
    ),
    "orbstack_user_data": DataMeta(
        "Cloud-init user data file (a path on the Mac) for a machine `orbstack_image` creates.", "",
    ),
    "orbstack_distro": DataMeta("The machine's distro, e.g. `debian` (read-only, from OrbStack).", ""),
    "orbstack_version": DataMeta(
        "The machine's distro version, e.g. `bookworm` (read-only, from OrbStack).",
        "",
    ),
    "orbstack_default_user": DataMeta("The machine's default user (read-only, from OrbStack).", ""),
    "orbstack_ip4": DataMeta("The machine's IPv4 address, once connected (read-only).", ""),
    "orbstack_mac": DataMeta(
        "The Mac the machine is on, as an ssh destination (an ssh_config alias, `user@host`, "
        "`ssh://user@host:port`); empty: this Mac. Set by `@orbstack/MAC:MACHINE` (docs/remote.md).",
        "",
    ),
    "orbstack_ssh_port": DataMeta("SSH port of `orbstack_mac` (0: ssh's own, from ssh_config or 22).", 0),
    "orbstack_ssh_user": DataMeta("SSH login user on `orbstack_mac` (empty: ssh's own).", ""),
    "orbstack_ssh_key": DataMeta("Private key file for `orbstack_mac` (empty: ssh's own, agent or config).", ""),
    "orbstack_ssh_config": DataMeta(
        "ssh config file (`ssh -F`) for `orbstack_mac` (empty: $PYINFRA_ORBSTACK_SSH_CONFIG, else ssh's default).",
        "",
    ),
    "orbstack_ssh_options": DataMeta(
        "More ssh options for `orbstack_mac`, as `{\"KEY\": \"VALUE\"}` or `[\"KEY=VALUE\"]` (ssh -o).", None,
    ),
    "orbstack_remote_binary": DataMeta(
        "pyinfra-orbstack on `orbstack_mac` (empty: found on the PATH of its non-interactive shell).", "",
    ),
}

# Read-only keys and the `Machine` field (docs/protocol.md) each is read from.
MACHINE_DATA_FIELDS = (
    ("orbstack_distro", "distro"),
    ("orbstack_version", "version"),
    ("orbstack_arch", "arch"),
    ("orbstack_default_user", "default_user"),
    ("orbstack_ip4", "ip4"),
)


def connect_params(data: OrbStackConnectorData) -> dict[str, Any]:
    """`machine.connect`'s params for a host with this data."""
    params: dict[str, Any] = {
        "machine": data["orbstack_machine"],
        # Whose commands follow: the binary starts their command session while connecting.
        "user": data["orbstack_user"] or "",
        "start": bool(data["orbstack_start"]),
        "timeout": data["orbstack_connect_timeout"],
        "create": None,
    }
    if data["orbstack_image"]:
        create: dict[str, Any] = {
            "image": data["orbstack_image"],
            "arch": data["orbstack_arch"] or None,
            "user": data["orbstack_user"] or None,
        }
        # Only what the inventory sets, so older binaries and OrbStacks see no new keys.
        if data["orbstack_isolated"]:
            create["isolated"] = True
        if data["orbstack_cpus"]:
            create["cpus"] = data["orbstack_cpus"]
        if data["orbstack_memory"]:
            create["memory"] = data["orbstack_memory"]
        if data["orbstack_disk"]:
            create["disk"] = data["orbstack_disk"]
        if data["orbstack_user_data"]:
            # A file on the Mac the binary runs on: made absolute here only for this Mac.
            user_data = data["orbstack_user_data"]
            create["user_data"] = user_data if data["orbstack_mac"] else os.path.abspath(os.path.expanduser(user_data))
        params["create"] = create
    return params


def publish_machine_data(host: Host, data: OrbStackConnectorData, machine: dict[str, Any]) -> None:
    """Make what OrbStack reported readable as host.data.orbstack_ip4 and so on."""
    for key, field in MACHINE_DATA_FIELDS:
        value = machine.get(field)
        if value:
            setattr(host.data, key, value)
            data[key] = value  # type: ignore[literal-required]  # keys of MACHINE_DATA_FIELDS


def mac_flags(data: OrbStackConnectorData) -> tuple[str, ...]:
    """`serve`'s flags that reach the host's Mac (none for this Mac): the binary owns ssh."""
    mac = data["orbstack_mac"]
    if not mac:
        return ()
    flags = ["--mac", mac]
    if data["orbstack_ssh_port"]:
        flags += ["--ssh-port", str(data["orbstack_ssh_port"])]
    for key, flag in (("orbstack_ssh_user", "--ssh-user"), ("orbstack_ssh_key", "--ssh-key"),
                      ("orbstack_ssh_config", "--ssh-config"), ("orbstack_remote_binary", "--remote-binary")):
        value = data[key]  # type: ignore[literal-required]  # keys of this tuple
        if value:
            flags += [flag, os.path.expanduser(value) if key in ("orbstack_ssh_key", "orbstack_ssh_config") else value]
    for option in ssh_options(data["orbstack_ssh_options"]):
        flags += ["--ssh-option", option]
    return tuple(flags)


def ssh_options(options: Any) -> list[str]:
    """`orbstack_ssh_options` as KEY=VALUE strings (the binary checks each)."""
    if not options:
        return []
    if isinstance(options, dict):
        return [f"{key}={value}" for key, value in options.items()]
    if isinstance(options, str):
        return [options]
    return [str(option) for option in options]
