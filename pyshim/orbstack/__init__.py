"""``orbstack.X`` names for the pyinfra CLI.

pyinfra resolves ``pyinfra @local fact orbstack.Machines`` by importing a module called
``orbstack`` (before trying ``pyinfra.facts.orbstack``), and ``pyinfra @local
orbstack.machine machine=web`` the same way. This module only re-exports: facts
(CamelCase) from ``pyinfra_orbstack.facts`` and operations (lowercase) from
``pyinfra_orbstack.operations.orbstack``. In a deploy file, import those directly:

    from pyinfra_orbstack.operations import orbstack
    from pyinfra_orbstack.facts.orbstack import Machines
"""

from pyinfra_orbstack.facts.network import DnsLookup, Http, Network, Ping, TcpPort
from pyinfra_orbstack.facts.orbstack import (
    Binary,
    Config,
    ConfigValue,
    ConfigValues,
    DefaultMachine,
    Logs,
    Machine,
    MachineDifferences,
    MachineLocations,
    Machines,
    MachineSettings,
    Snapshots,
    SshConnection,
    Status,
    Version,
)
from pyinfra_orbstack.facts.resources import Limits, Resources
from pyinfra_orbstack.operations.orbstack import (
    clone,
    config,
    default_machine,
    default_user,
    machine,
    machine_migrated,
    rename,
    restart,
    restore,
    snapshot,
)

__all__ = [
    # facts on the Mac (target @local)
    "Machines", "Machine", "Status", "Version", "Config", "ConfigValue", "DefaultMachine",
    "SshConnection", "Logs", "Snapshots", "Binary", "ConfigValues", "MachineSettings",
    "MachineDifferences", "Limits", "MachineLocations",
    # facts inside a machine (target @orbstack/NAME)
    "Network", "Resources", "Ping", "TcpPort", "Http", "DnsLookup",
    # operations (target @local)
    "machine", "restart", "clone", "rename", "config", "default_machine", "default_user",
    "snapshot", "restore", "machine_migrated",
]
