"""Facts about OrbStack and its machines, read on the Mac that runs OrbStack.

Run them against the host where ``orbctl`` lives: normally ``@local``, or the Mac
reached over ``@ssh``. Every command is a plain ``orbctl ...`` shell string, so
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

from pyinfra.api import FactBase
from pyinfra.api.exceptions import FactProcessError


class OrbStackFact(FactBase):
    """Base of our facts: named ``orbstack.X``, the name the CLI resolves."""

    abstract = True

    def __init_subclass__(cls) -> None:
        super().__init_subclass__()
        cls.name = f"orbstack.{cls.__name__}"


# Printed to stderr (and the fact fails) when the host has no orbctl: the commonest
# mistake is running these facts against an @orbstack machine instead of the Mac.
ORBCTL_MISSING = (
    "orbctl not found on this host. The orbstack.* machine facts and operations run on "
    "the Mac where OrbStack is installed: target @local (or the Mac over @ssh), "
    "not an @orbstack/NAME machine. Over @ssh, put orbctl on the PATH of non-interactive "
    "shells (e.g. in ~/.zshenv: the directory `command -v orbctl` prints in Terminal)."
)


def orbctl_guard() -> str:
    """A shell prefix that fails clearly when orbctl is not on the PATH."""
    return (
        "command -v orbctl >/dev/null 2>&1 || "
        f"{{ echo {shlex.quote(ORBCTL_MISSING)} >&2; exit 127; }}; "
    )


def tolerate(argv: list[str], *absent_markers: str) -> str:
    """Run argv; print its output on success.

    When it fails with one of ``absent_markers`` in its output, print nothing and
    succeed (the fact becomes ``None``); any other failure is passed through, so the
    user sees orbctl's own message.
    """
    cases = "|".join(f"*{shlex.quote(marker)}*" for marker in absent_markers)
    return (
        orbctl_guard()
        + f"out=$({shlex.join(argv)} 2>&1); rc=$?; "
        + 'if [ "$rc" -eq 0 ]; then printf "%s\\n" "$out"; '
        + f'else case "$out" in {cases}) ;; '
        + '*) printf "%s\\n" "$out" >&2; exit "$rc";; esac; fi'
    )


def _json_from_lines(fact: str, output: list[str]) -> Any:
    text = "\n".join(output).strip()
    # orbctl draws no spinner when piped, but tolerate a stray line before the JSON.
    starts = [i for i in (text.find("{"), text.find("[")) if i >= 0]
    if text == "null":
        return None
    if not starts:
        raise FactProcessError(f"{fact}: orbctl printed no JSON: {text[:200]!r}")
    try:
        return json.loads(text[min(starts) :])
    except ValueError as e:
        raise FactProcessError(f"{fact}: orbctl printed invalid JSON ({e}): {text[:200]!r}")


def machine_from_record(record: dict[str, Any], info: dict[str, Any] | None = None) -> dict:
    """Flatten an orbctl ContainerRecord (and ContainerInfo extras) into one dict.

    The keys match the ``Machine`` type of docs/protocol.md, plus ``config`` (every key
    orbctl reported under ``config``, including 2.x additions such as
    ``isolate_network``).
    """
    image = record.get("image") or {}
    config = record.get("config") or {}
    info = info or {}
    return {
        "name": record.get("name", ""),
        "id": record.get("id", ""),
        "state": record.get("state", ""),
        "distro": image.get("distro", ""),
        "version": image.get("version", ""),
        "arch": image.get("arch", ""),
        "variant": image.get("variant", ""),
        "default_user": config.get("default_username", ""),
        "isolated": bool(config.get("isolated", record.get("isolated", False))),
        "ip4": info.get("ip4", "") or "",
        "ip6": info.get("ip6", "") or "",
        "disk_size": info.get("disk_size"),
        "config": dict(config),
    }


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
        return orbctl_guard() + "orbctl list -f json"

    @staticmethod
    def default() -> dict:
        return {}

    def process(self, output: list[str]) -> dict:
        records = _json_from_lines("orbstack.Machines", output) or []  # null before v0.15
        return {r["name"]: machine_from_record(r) for r in records if not r.get("builtin")}


class Machine(OrbStackFact):
    """
    One machine (``orbctl info NAME -f json``), or ``None`` when it does not exist.

    Same keys as one entry of ``orbstack.Machines``, with ``ip4``/``ip6`` (empty when
    stopped) and ``disk_size`` (bytes, or ``None`` when OrbStack does not say).
    """

    def command(self, machine: str) -> str:
        return tolerate(["orbctl", "info", machine, "-f", "json"], "machine not found")

    def process(self, output: list[str]) -> dict | None:
        data = _json_from_lines("orbstack.Machine", output)
        if not data:
            return None
        if "record" in data:  # v1.10+: {"record": ..., "disk_size": ..., "ip4": ...}
            return machine_from_record(data["record"], data)
        return machine_from_record(data)  # v1.9 and older printed the bare record


class Status(OrbStackFact):
    """
    OrbStack's own state: ``"Running"``, ``"Stopped"`` or ``"Starting"``.
    """

    def command(self) -> str:
        # status exits 1 (Stopped) or 2 (Starting): those are answers, not failures.
        return orbctl_guard() + 'orbctl status; rc=$?; [ "$rc" -le 2 ] || exit "$rc"'

    def process(self, output: list[str]) -> str:
        return "\n".join(output).strip()


class Version(OrbStackFact):
    """
    OrbStack's version: ``{"version": "2.2.3", "code": 2020300, "commit": "..."}``.

    ``code`` is major*10^6 + minor*10^4 + patch*10^2, handy for comparisons.
    """

    def command(self) -> str:
        return orbctl_guard() + "orbctl version"

    def process(self, output: list[str]) -> dict:
        text = "\n".join(output)
        version = re.search(r"Version:\s*(\S+)(?:\s*\((\d+)\))?", text)
        commit = re.search(r"Commit:\s*(.+)", text)
        if not version:
            raise FactProcessError(f"orbstack.Version: unexpected orbctl version output: {text!r}")
        return {
            "version": version.group(1),
            "code": int(version.group(2)) if version.group(2) else None,
            "commit": commit.group(1).strip() if commit else "",
        }


def parse_config_show(output: list[str]) -> dict[str, str]:
    config: dict[str, str] = {}
    for line in output:
        key, sep, value = line.partition(":")
        if sep and key.strip():
            config[key.strip()] = value.strip()
    return config


class Config(OrbStackFact):
    """
    Every OrbStack setting from ``orbctl config show``, as strings keyed by name
    (global keys such as ``cpu`` and per-machine keys such as
    ``machine.web.username``).
    """

    def command(self) -> str:
        return orbctl_guard() + "orbctl config show"

    @staticmethod
    def default() -> dict:
        return {}

    def process(self, output: list[str]) -> dict[str, str]:
        return parse_config_show(output)


class ConfigValue(OrbStackFact):
    """
    One setting (``orbctl config get KEY``), or ``None`` when OrbStack does not know the
    key (or the machine it names does not exist yet, or OrbStack predates ``config get``).
    """

    def command(self, key: str) -> str:
        return tolerate(
            ["orbctl", "config", "get", key],
            "not found",
            "Unknown configuration key",
            'unknown command "get"',  # before 1.11.3 there was no config get
        )

    def process(self, output: list[str]) -> str | None:
        lines = [line for line in output if line.strip()]
        if len(lines) == 1 and ":" not in lines[0]:
            return lines[0].strip()
        # 1.11.3's config get ignored KEY and printed every "key: value" line.
        return None


class DefaultMachine(OrbStackFact):
    """
    The default machine's name (the one ``orb`` and ``ssh orb`` use), or ``None`` when
    there are no machines.
    """

    def command(self) -> str:
        return tolerate(["orbctl", "default"], "no machines found")

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
        routing = ""
        if machine:
            routing = f"{user}@{machine}" if user else machine
        # process() never sees the arguments, so the command echoes the routing user.
        return orbctl_guard() + f"orbctl ssh && echo {shlex.quote('Routing: ' + routing)}"

    def process(self, output: list[str]) -> dict:
        text = "\n".join(output)

        def field(name: str, default: str) -> str:
            found = re.search(rf"^\s*{name}:[ \t]*(\S*)", text, re.MULTILINE)
            return found.group(1) if found and found.group(1) else default

        details = {
            "host": field("Host", "localhost"),
            "port": int(field("Port", "32222")),
            "user": field("Routing", field("User", "default")),
            "key": field("Private key", "~/.orbstack/ssh/id_ed25519"),
        }
        details["command"] = " ".join(
            [
                "ssh",
                "-p",
                str(details["port"]),
                "-i",
                _shell_path(details["key"]),
                shlex.quote(f"{details['user']}@{details['host']}"),
            ],
        )
        return details


def _shell_path(path: str) -> str:
    """Quote a path for pasting into a shell, leaving a leading ``~/`` expandable."""
    if path.startswith("~/"):
        return "~/" + shlex.quote(path[2:])
    return shlex.quote(path)


class Logs(OrbStackFact):
    """
    A machine's console log (``orbctl logs NAME``; ``all=True`` adds OrbStack's runtime
    logs), as a list of lines. Empty when the machine does not exist.
    """

    def command(self, machine: str, all: bool = False) -> str:
        argv = ["orbctl", "logs", machine] + (["--all"] if all else [])
        return tolerate(argv, "machine not found")

    @staticmethod
    def default() -> list:
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
    def default() -> list:
        return []

    def process(self, output: list[str]) -> list[dict]:
        snapshots = []
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
