"""Facts about OrbStack and its machines, read on the Mac that runs OrbStack.

Run them against the host where OrbStack lives: normally ``@local``, or the Mac
reached over ``@ssh``. They ask the ``pyinfra-orbstack`` binary (``list --json``,
``machine info --json``, ...), which knows orbctl's grammar and every version's output:
one shape, whatever OrbStack prints (``Snapshots`` only lists files). On ``@local``
that is the binary this package ships, by absolute path; on a Mac over ``@ssh`` it is
the ``pyinfra-orbstack`` on that Mac's PATH, checked to speak this package's protocol.
``--debug``/``-vvv`` shows exactly what ran.

A fact that asks about something absent (a missing machine, an unset key) returns
``None`` rather than failing the host: operations read facts before earlier
operations in the same deploy have created what they look for.
"""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

from pyinfra.api.exceptions import FactProcessError
from pyinfra.api.facts import FactBase
from pyinfra.connectors.local import LocalConnector
from pyinfra.context import ctx_host

from pyinfra_orbstack import _binary
from pyinfra_orbstack._rpc import PROTOCOL_VERSION


class OrbStackFact(FactBase):  # type: ignore[type-arg]
    """Base of our facts: named ``orbstack.X``, the name the CLI resolves."""

    abstract = True

    def __init_subclass__(cls) -> None:
        super().__init_subclass__()
        cls.name = f"orbstack.{cls.__name__}"


BINARY = _binary.BINARY_NAME

# Printed to stderr (and the fact fails) when the host has no pyinfra-orbstack: the
# commonest mistake is running these facts against an @orbstack machine instead of
# the Mac.
BINARY_MISSING = (
    f"{BINARY} not found on this host. The orbstack.* machine facts and operations run "
    "on the Mac where OrbStack is installed: target @local (or the Mac over @ssh, with "
    f"`pip install pyinfra-orbstack` done there and {BINARY} on the PATH of "
    "non-interactive shells, e.g. in ~/.zshenv), not an @orbstack/NAME machine."
)
PROTOCOL_MISMATCH = (
    f"the {BINARY} on this host speaks another protocol than this pyinfra-orbstack "
    f"(protocol {PROTOCOL_VERSION}): install the same pyinfra-orbstack version on both "
    f"sides (`{BINARY} version` shows it)"
)

def on_local_host() -> bool:
    """Whether the current pyinfra host is this machine (``@local``); outside a host
    context (a fact's command built by hand), this machine."""
    current: object = ctx_host.get()  # type: ignore[no-untyped-call]
    connector = getattr(current, "connector", None)
    return connector is None or isinstance(connector, LocalConnector)


def binary(*args: str) -> str:
    """A ``pyinfra-orbstack ARGS`` command line for the current host, every argument
    quoted: the packaged binary by absolute path on ``@local``, the one on the PATH
    elsewhere (a Mac over ``@ssh``)."""
    if on_local_host():
        try:
            program = _binary.find_binary()
        except _binary.BinaryNotFoundError as e:
            return f"echo {shlex.quote(str(e))} >&2; exit 127"
    else:
        program = BINARY
    return shlex.join([program, *map(str, args)])


def binary_guard() -> str:
    """A shell prefix that fails clearly when the host's pyinfra-orbstack is missing
    or speaks another protocol (nothing on ``@local``, which runs the packaged one)."""
    if on_local_host():
        return ""
    return (
        f"command -v {BINARY} >/dev/null 2>&1 || "
        f"{{ echo {shlex.quote(BINARY_MISSING)} >&2; exit 127; }}; "
        f'case "$({BINARY} version 2>/dev/null)" in '
        f'*"(protocol {PROTOCOL_VERSION})") ;; '
        f"*) echo {shlex.quote(PROTOCOL_MISMATCH)} >&2; exit 1;; esac; "
    )


def _json(fact: str, output: list[str]) -> Any:
    text = "\n".join(output).strip()
    try:
        return json.loads(text) if text else None
    except ValueError as e:
        raise FactProcessError(f"{fact}: {BINARY} printed invalid JSON ({e}): {text[:200]!r}") from e


class Binary(OrbStackFact):
    """
    The ``pyinfra-orbstack`` binary the lifecycle operations run on this host:
    ``{"version": "0.1.0", "protocol": 1}``, or ``None`` when it is not on the PATH (a
    Mac over ``@ssh`` without ``pip install pyinfra-orbstack``).
    """

    def command(self) -> str:
        if on_local_host():
            return binary("version")
        # Missing is an answer (None), not a failed fact.
        return f"if command -v {BINARY} >/dev/null 2>&1; then {BINARY} version; fi"

    def process(self, output: list[str]) -> dict[str, Any] | None:
        found = re.search(r"\S+ (\S+) \(protocol (\d+)\)", "\n".join(output))
        if not found:
            return None
        return {"version": found.group(1), "protocol": int(found.group(2))}


class Machines(OrbStackFact):
    """
    Every OrbStack machine (built-in docker/k8s excluded), keyed by name.

    .. code:: python

        {
            "web": {"name": "web", "id": "01K2G8TY5GM9C3CN95KCB4ZG8B", "state": "running",
                    "distro": "ubuntu", "version": "noble", "arch": "arm64",
                    "variant": "default", "default_user": "alice", "isolated": False,
                    "ip4": "", "ip6": "", "disk_size": None, "config": {...}},
        }

    ``orbctl list`` reports no addresses or sizes: use ``orbstack.Machine`` for those.
    """

    def command(self) -> str:
        return binary_guard() + binary("list", "--json")

    @staticmethod
    def default() -> dict[str, Any]:
        return {}

    def process(self, output: list[str]) -> dict[str, Any]:
        machines = _json("orbstack.Machines", output) or []
        return {m["name"]: m for m in machines}


class Machine(OrbStackFact):
    """
    One machine (``pyinfra-orbstack machine info NAME --json``), or ``None`` when it does
    not exist.

    Same keys as one entry of ``orbstack.Machines``, with ``ip4``/``ip6`` (empty when
    stopped) and ``disk_size`` (bytes, or ``None`` when OrbStack does not say).
    """

    def command(self, machine: str) -> str:
        return binary_guard() + binary("machine", "info", "--json", "--missing-ok", machine)

    def process(self, output: list[str]) -> dict[str, Any] | None:
        data: dict[str, Any] | None = _json("orbstack.Machine", output)
        return data or None


class MachineLocations(OrbStackFact):
    """
    Which of several Macs have a machine (``pyinfra-orbstack machine where NAME --mac
    MAC... --json``), keyed by the Macs as given: the machine as ``orbstack.Machine``
    reports it, or ``None`` where it is absent.

    .. code:: python

        {"mac-a": {"name": "web", "state": "running", ...}, "mac-b": None}

    A Mac is ``"local"`` (the host this fact runs on) or an ssh destination reached from
    that host with the user's ssh config, where ``pyinfra-orbstack`` is on the PATH
    (docs/remote.md). A Mac that cannot be reached fails the fact, naming it: where a
    machine is cannot be known then.
    """

    def command(self, machine: str, macs: tuple[str, ...] | list[str] | str) -> str:
        if isinstance(macs, str):  # the CLI's macs=local,mac-b
            macs = macs.split(",")
        return binary_guard() + binary(
            "machine", "where", "--json", *(f"--mac={mac}" for mac in macs), machine,
        )

    @staticmethod
    def default() -> dict[str, Any]:
        return {}

    def process(self, output: list[str]) -> dict[str, dict[str, Any] | None]:
        data: dict[str, dict[str, Any] | None] = _json("orbstack.MachineLocations", output) or {}
        return data


class MachineSettings(OrbStackFact):
    """
    Wanted per-machine settings of an existing machine next to their current values:
    ``[{"key": "machine.web.cpu", "value": "4", "current": "2"}]`` (``current`` is
    ``None`` when OrbStack has none). The binary turns ``memory="4G"`` into MiB,
    ``disk`` into bytes, ``mounts`` into OrbStack's one setting, and refuses them on an
    OrbStack before 2.1, so ``orbstack.machine`` compares like with like.
    """

    def command(
        self,
        machine: str,
        user: str | None = None,
        cpus: int | None = None,
        memory: int | str | None = None,
        disk: int | str | None = None,
        mounts: list[str] | tuple[str, ...] | None = None,
    ) -> str:
        args = ["machine", "settings"]
        if user:
            args += ["--user", user]
        if cpus is not None:
            args += ["--cpus", str(cpus)]
        if memory is not None:
            args += ["--memory", str(memory)]
        if disk is not None:
            args += ["--disk", str(disk)]
        if mounts is not None:
            args += [f"--mount={mount}" for mount in mounts] or ["--mount="]
        return binary_guard() + binary(*args, machine)

    @staticmethod
    def default() -> list[dict[str, Any]]:
        return []

    def process(self, output: list[str]) -> list[dict[str, Any]]:
        return list(_json("orbstack.MachineSettings", output) or [])


class MachineDifferences(OrbStackFact):
    """
    How an existing machine differs from a wanted image, arch and isolation, each as
    ``"version bullseye (want bookworm)"``: ``[]`` when it matches (or does not exist).
    The binary compares after OrbStack's own alias resolution (``debian:12`` is
    ``bookworm``); a bare distro accepts any version; what is not given is not compared.
    """

    def command(
        self,
        machine: str,
        image: str | None = None,
        arch: str | None = None,
        isolated: bool | None = None,
        isolate_network: bool | None = None,
    ) -> str:
        args = ["machine", "diff"]
        if image:
            args += ["--image", image]
        if arch:
            args += ["--arch", arch]
        for flag, wanted in (("--isolated", isolated), ("--isolate-network", isolate_network)):
            if wanted is not None:
                args.append(f"{flag}={'true' if wanted else 'false'}")
        return binary_guard() + binary(*args, machine)

    @staticmethod
    def default() -> list[str]:
        return []

    def process(self, output: list[str]) -> list[str]:
        return [str(d) for d in _json("orbstack.MachineDifferences", output) or []]


class Version(OrbStackFact):
    """
    OrbStack's version: ``{"version": "2.2.3", "code": 2020300, "commit": "..."}``, or
    ``None`` without OrbStack.

    ``code`` is major*10^6 + minor*10^4 + patch*10^2, handy for comparisons.
    """

    def command(self) -> str:
        return binary_guard() + binary("version", "--json")

    def process(self, output: list[str]) -> dict[str, Any] | None:
        data = _json("orbstack.Version", output) or {}
        orbstack: dict[str, Any] | None = data.get("orbstack")
        return orbstack

class Status(OrbStackFact):
    """
    OrbStack's own state: ``"Running"``, ``"Stopped"`` or ``"Starting"``.
    """

    def command(self) -> str:
        return binary_guard() + binary("status")

    def process(self, output: list[str]) -> str:
        return "\n".join(output).strip()


class Config(OrbStackFact):
    """
    Every OrbStack setting from ``orbctl config show``, as strings keyed by name
    (global keys such as ``cpu`` and per-machine keys such as
    ``machine.web.username``).
    """

    def command(self) -> str:
        return binary_guard() + binary("config", "show", "--json")

    @staticmethod
    def default() -> dict[str, str]:
        return {}

    def process(self, output: list[str]) -> dict[str, str]:
        return dict(_json("orbstack.Config", output) or {})


class ConfigValues(OrbStackFact):
    """
    Settings by the key you give, global or (with ``machine``) one machine's:
    ``{"cpu": {"key": "machine.web.cpu", "value": "2", "restart": False}}``. ``key`` is
    the full key orbctl uses (quoted when the machine name has dots), ``value`` is
    ``None`` when OrbStack does not know the key (or the machine does not exist yet),
    and ``restart`` says whether a change applies only after OrbStack restarts.
    """

    def command(self, keys: list[str] | tuple[str, ...], machine: str | None = None) -> str:
        args = ["config", "get", "--json"]
        if machine is not None:
            args += ["--machine", machine]
        return binary_guard() + binary(*args, *keys)

    @staticmethod
    def default() -> dict[str, Any]:
        return {}

    def process(self, output: list[str]) -> dict[str, Any]:
        return dict(_json("orbstack.ConfigValues", output) or {})


class ConfigValue(OrbStackFact):
    """
    One setting, or ``None`` when OrbStack does not know the key (or the machine it
    names does not exist yet). On OrbStack before 1.11.3, which had no ``config get``,
    the value comes from ``config show``.
    """

    def command(self, key: str) -> str:
        return binary_guard() + binary("config", "get", "--json", key)

    def process(self, output: list[str]) -> str | None:
        values = _json("orbstack.ConfigValue", output) or {}
        for entry in values.values():
            value: str | None = entry.get("value")
            return value
        return None


class DefaultMachine(OrbStackFact):
    """
    The default machine's name (the one ``orb`` and ``ssh orb`` use), or ``None`` when
    there are no machines.
    """

    def command(self) -> str:
        return binary_guard() + binary("machine", "default")

    def process(self, output: list[str]) -> str | None:
        return "\n".join(output).strip() or None


class SshConnection(OrbStackFact):
    """
    How to SSH into a machine through OrbStack's SSH proxy:
    ``{"host": "localhost", "port": 32222, "user": "web", "key": "~/.orbstack/ssh/id_ed25519",
    "command": "ssh -p 32222 -i ~/.orbstack/ssh/id_ed25519 web@localhost"}``.

    ``user`` is OrbStack's routing user: ``MACHINE`` (as the machine's default user) or
    ``USER@MACHINE``; with no machine it is ``default`` (the default machine).
    """

    def command(self, machine: str | None = None, user: str | None = None) -> str:
        args = ["ssh-info"]
        if machine:
            args += ["--machine", machine]
            if user:
                args += ["--user", user]
        return binary_guard() + binary(*args)

    def process(self, output: list[str]) -> dict[str, Any]:
        return dict(_json("orbstack.SshConnection", output) or {})


class Logs(OrbStackFact):
    """
    A machine's console log (``orbctl logs NAME``; ``all=True`` adds OrbStack's runtime
    logs), as a list of lines. Empty when the machine does not exist.
    """

    def command(self, machine: str, all: bool = False) -> str:
        return binary_guard() + binary("machine", "logs", "--missing-ok", *(["--all"] if all else []), machine)

    @staticmethod
    def default() -> list[Any]:
        return []

    def process(self, output: list[str]) -> list[str]:
        return list(output)


class Snapshots(OrbStackFact):
    """
    Archives made by ``orbstack.snapshot`` for one machine in a directory on the Mac,
    oldest first: ``[{"path": "/backups/web-20260101T120000Z.tar.zst",
    "time": "20260101T120000Z", "size": 1234}]``. Empty when there are none (or the
    directory does not exist).
    """

    def command(self, directory: str, machine: str) -> str:
        # The glob is exact (8+6 digits), so machine "web" never picks up "web-2"'s
        # archives; names sort by their UTC timestamp.
        pattern = shlex.quote(directory.rstrip("/") or "/") + "/" + snapshot_glob(machine)
        return (
            f"for f in {pattern}; do "
            '[ -f "$f" ] || continue; '
            'printf "%s\\t%s\\n" "$(wc -c < "$f" | tr -d " ")" "$f"; '
            "done"
        )

    @staticmethod
    def default() -> list[Any]:
        return []

    def process(self, output: list[str]) -> list[dict[str, Any]]:
        snapshots: list[dict[str, Any]] = []
        for line in output:
            size, sep, path = line.partition("\t")
            if not sep:
                continue
            stamp = SNAPSHOT_RE.search(path)
            snapshots.append(
                {
                    "path": path,
                    "time": stamp.group(1) if stamp else "",
                    "size": int(size) if size.isdigit() else None,
                },
            )
        return sorted(snapshots, key=lambda s: (s["time"], s["path"]))


SNAPSHOT_SUFFIX = ".tar.zst"
SNAPSHOT_RE = re.compile(r"-(\d{8}T\d{6}Z)\.tar\.zst$")
SNAPSHOT_STAMP_FORMAT = "%Y%m%dT%H%M%SZ"  # date -u +FORMAT, in the archive name


def snapshot_glob(machine: str) -> str:
    """The shell glob matching exactly machine's snapshot archives (name quoted)."""
    return shlex.quote(machine + "-") + "[0-9]" * 8 + "T" + "[0-9]" * 6 + "Z" + SNAPSHOT_SUFFIX
