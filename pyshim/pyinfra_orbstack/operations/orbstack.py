"""
Manage OrbStack machines as pyinfra state: create, start/stop, clone, rename, configure,
snapshot and restore them.

These operations run on the Mac where OrbStack lives (normally ``@local``; the Mac over
``@ssh`` works the same, see docs/operations.md). Each one reads facts, compares them
with what you asked for and yields only the ``orbctl ...`` shell commands needed, or
nothing: a second run changes nothing, and ``--dry`` shows the exact commands.

.. code:: python

    from pyinfra_orbstack.operations import orbstack

    orbstack.machine(name="A web machine", machine="web", image="debian:bookworm")
"""

from __future__ import annotations

import re
import shlex
from contextvars import ContextVar
from datetime import datetime, timedelta, timezone
from functools import wraps

import click
from pyinfra import host, logger
from pyinfra.api import OperationError, operation
from pyinfra.api.state import StateStage

from pyinfra_orbstack.facts.orbstack import (
    SNAPSHOT_STAMP_FORMAT,
    SNAPSHOT_SUFFIX,
    Config,
    ConfigValue,
    DefaultMachine,
    Machine,
    Snapshots,
    Version,
)

DEFAULT_TIMEOUT = 120  # seconds a lifecycle command may take to give a usable machine
DEFAULT_IMAGE = "ubuntu:noble"  # what orbstack.machine creates when no image is given
# orbstack.snapshot exports again only when its newest archive is this old (seconds):
# a deploy re-run the same day must not pile up archives.
DEFAULT_SNAPSHOT_MAX_AGE = 86400

# orbctl's own rules for machine names (scon's validator).
NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9.-]+$")
RESERVED_NAMES = {"default", "vm", "host", "services", "gateway", "k8s", "docker"}

# The CLI word for a distro vs the name orbctl reports in image.distro.
DISTRO_NAMES = {"arch": "archlinux", "void": "voidlinux", "alma": "almalinux", "rocky": "rockylinux"}
# orbctl stores versions after resolving these aliases.
VERSION_ALIASES = {
    "ubuntu": {"20.04": "focal", "22.04": "jammy", "24.04": "noble", "24.10": "oracular",
               "25.04": "plucky", "25.10": "questing"},
    "debian": {"10": "buster", "11": "bullseye", "12": "bookworm", "13": "trixie", "14": "forky"},
    "devuan": {"4": "chimaera", "5": "daedalus"},
}

# Global keys that only apply after OrbStack restarts (the VM's own settings).
RESTART_KEYS = {
    "cpu", "memory_mib", "rosetta", "network_proxy", "network_bridge", "network.https",
    "network.subnet4", "mount_hide_shared", "data_dir",
}


def check_machine_name(machine: str, what: str = "machine") -> str:
    """Reject names orbctl would reject, before anything runs.

    An empty name is the dangerous case: ``orbctl stop`` with no name stops all of
    OrbStack.
    """
    if not isinstance(machine, str) or not NAME_RE.match(machine):
        raise OperationError(
            f"invalid {what} name {machine!r}: OrbStack machine names are at least 2 "
            "characters of letters, digits, '-' and '.', starting with a letter or digit",
        )
    if machine in RESERVED_NAMES:
        raise OperationError(
            f"invalid {what} name {machine!r}: OrbStack reserves "
            + ", ".join(sorted(RESERVED_NAMES)),
        )
    return machine


def orbctl(*args: str) -> str:
    """An ``orbctl`` command line with every argument shell-quoted."""
    return shlex.join(["orbctl", *map(str, args)])


def wait_ready(machine: str, timeout: int = DEFAULT_TIMEOUT) -> str:
    """A POSIX sh loop that waits until the machine answers a command.

    The probe (``orbctl run -m M true``) is the only thing repeated: it is safe to
    repeat, unlike the lifecycle command before it, which runs exactly once.
    """
    timeout = int(timeout)
    message = (
        f"orbstack: machine {machine} did not answer commands within {timeout}s "
        f"(probe: orbctl run -m {machine} true). Check it with: orbctl logs {machine}"
    )
    return (
        f"deadline=$(( $(date +%s) + {timeout} )); "
        f"until {orbctl('run', '-m', machine, 'true')} </dev/null >/dev/null 2>&1; do "
        'if [ "$(date +%s)" -ge "$deadline" ]; then '
        f"echo {shlex.quote(message)} >&2; exit 1; fi; "
        "sleep 1; done"
    )


def check_timeout(timeout) -> None:
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise OperationError(f"timeout must be a positive number of seconds, not {timeout!r}")


def parse_image(image: str) -> tuple[str, str | None]:
    """``"ubuntu:24.04"`` -> ``("ubuntu", "noble")``: orbctl's distro name and version."""
    word, _, version = image.partition(":")
    if not word:
        raise OperationError(f"invalid image {image!r}: expected DISTRO[:VERSION], e.g. debian:bookworm")
    distro = DISTRO_NAMES.get(word, word)
    if version:
        version = VERSION_ALIASES.get(distro, {}).get(version, version)
    return distro, version or None


def same_version(distro: str, have: str, want: str) -> bool:
    """Versions match after alias resolution on both sides (``12`` == ``bookworm``)."""
    aliases = VERSION_ALIASES.get(distro, {})
    return aliases.get(have, have).lower() == aliases.get(want, want).lower()


def image_differences(current: dict, image: str | None, arch: str | None) -> list[str]:
    """What differs between the machine and the wanted image/arch; ``None`` is not compared.

    A bare distro (``"debian"``) accepts any version of it: OrbStack resolves it to the
    latest release at creation time, so a machine made a year ago still matches.
    """
    distro, version = parse_image(image) if image else (None, None)
    differences = []
    if distro and current.get("distro") and current["distro"] != distro:
        differences.append(f"distro {current['distro']} (want {distro})")
    have_version = current.get("version")
    if version and have_version and not same_version(distro, have_version, version):
        differences.append(f"version {have_version} (want {version})")
    if arch and current.get("arch") and current["arch"] != arch:
        differences.append(f"arch {current['arch']} (want {arch})")
    return differences


def config_key(key: str, machine: str | None = None) -> str:
    """The orbctl key for a setting, per machine when ``machine`` is given.

    A machine name containing dots is quoted, as orbctl expects: ``machine."a.b".cpu``.
    """
    if machine is None:
        return key
    name = f'"{machine}"' if "." in machine else machine
    return f"machine.{name}.{key}"


def config_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


def current_setting(key: str, shown: dict[str, str]) -> str | None:
    if key in shown:
        return shown[key]
    # config show may not list every key (per-machine ones in particular): ask for it.
    return host.get_fact(ConfigValue, key=key)


SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*$", re.IGNORECASE)
SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def size_in_bytes(size, default_unit: str = "") -> int:
    """``"8G"`` -> bytes (binary units, as OrbStack's --memory/--disk read them)."""
    if isinstance(size, int):
        return size * SIZE_UNITS[default_unit]
    found = SIZE_RE.match(str(size))
    if not found:
        raise OperationError(f"invalid size {size!r}: use a number with an optional K/M/G/T unit, e.g. 8G")
    unit = found.group(2).upper() or default_unit
    return int(float(found.group(1)) * SIZE_UNITS[unit])


def _operation_title() -> str:
    """The running operation's name as pyinfra shows it ("web machine: "), if known."""
    op_hash = getattr(host, "current_op_hash", None)
    meta = getattr(host.state, "op_meta", {}).get(op_hash) if op_hash else None
    return f"{', '.join(sorted(meta.names))}: " if meta and meta.names else ""


# What an operation wants said after its planned commands (see plan_note).
_plan_notes: ContextVar[list[str] | None] = ContextVar("orbstack_plan_notes", default=None)


def plan_note(text: str) -> None:
    """Say something about the planned commands, printed after them while pyinfra
    prepares (``--dry`` and the confirmation prompt)."""
    notes = _plan_notes.get()
    if notes is not None:
        notes.append(text)


def show_plan(func):
    """Compute all of an operation's commands first, and print them while pyinfra
    prepares (``--dry`` and the confirmation prompt), not only the first one.

    pyinfra itself only reports *that* an operation will change something; for
    machine lifecycle the user wants to see exactly which orbctl commands will run.
    """

    @wraps(func)
    def planned(*args, **kwargs):
        preparing = host.state.current_stage == StateStage.Prepare
        notes: list[str] = []
        token = _plan_notes.set(notes)
        try:
            commands = list(func(*args, **kwargs))
        except OperationError as error:
            if preparing:
                raise  # pyinfra stops before running anything and prints the message
            # While executing (e.g. with -y) pyinfra would print a greenlet traceback
            # around a raised error; a failing command shows only the message.
            commands = [f"echo {shlex.quote(f'orbstack: {error}')} >&2; exit 1"]
        finally:
            _plan_notes.reset(token)
        if commands and preparing:
            title = _operation_title()
            for command in commands:
                logger.info(f"{host.print_prefix}{title}{click.style('will run:', 'cyan')} {command}")
            for note in notes:
                logger.info(f"{host.print_prefix}{title}{click.style('note:', 'cyan')} {note}")
        yield from commands

    return planned


ORBSTACK_2_1 = 2010000  # Version fact "code" of the first OrbStack with limits and isolation


def check_orbstack_2_1(**settings) -> None:
    """Refuse, before anything runs, settings this OrbStack does not have.

    Older orbctl answers them with ``unknown flag: --cpus`` or ``Unknown configuration
    key: machine.web.cpu``, which does not say that updating OrbStack is the fix.
    """
    used = [name for name, value in settings.items() if value is not None]
    if not used:
        return
    version = host.get_fact(Version) or {}
    code = version.get("code")
    if code is not None and code < ORBSTACK_2_1:
        raise OperationError(
            f"{', '.join(used)} need{'s' if len(used) == 1 else ''} OrbStack 2.1 or later; "
            f"this Mac runs OrbStack {version.get('version')}. Update OrbStack (orbctl update) "
            f"or leave {'it' if len(used) == 1 else 'them'} out",
        )


def _start(machine: str, timeout: int):
    yield orbctl("start", machine)
    yield wait_ready(machine, timeout)


def _is_running(current: dict) -> bool:
    return current.get("state") in ("running", "starting")


@operation()
@show_plan
def machine(
    machine: str,
    image: str | None = None,
    arch: str | None = None,
    user: str | None = None,
    user_data: str | None = None,
    present: bool = True,
    running: bool = True,
    force: bool = False,
    cpus: int | None = None,
    memory: str | int | None = None,
    disk: str | int | None = None,
    isolated: bool | None = None,
    isolate_network: bool | None = None,
    mounts: list[str] | None = None,
    timeout: int = DEFAULT_TIMEOUT,
):
    """
    Manage an OrbStack machine: whether it exists, what it runs and whether it runs.

    + machine: the machine's name
    + image: ``DISTRO[:VERSION]`` as ``orbctl create`` takes it (``debian:bookworm``,
      ``ubuntu:24.04``); a bare distro accepts any version of it. ``None`` creates
      ``ubuntu:noble`` and accepts whatever an existing machine runs, so
      ``orbstack.machine(machine="web", running=False)`` just stops ``web``
    + arch: ``arm64`` or ``amd64`` (default: the Mac's)
    + user: the default user (at creation; later changes set ``machine.NAME.username``)
    + user_data: path **on the Mac** to a cloud-init user-data file (creation only)
    + present: whether the machine should exist (``False`` deletes it, data included)
    + running: whether it should be running
    + force: recreate the machine when its distro, version, arch or isolation differ
      from the wanted ones (destroys its data); without it such a difference is an error
    + cpus: CPU limit (OrbStack 2.x)
    + memory: memory limit, e.g. ``"4G"`` or MiB as an int (OrbStack 2.x)
    + disk: disk limit, e.g. ``"32G"`` or bytes as an int (OrbStack 2.x)
    + isolated: create an isolated machine, with no access to the Mac's files (2.1+)
    + isolate_network: isolate its network from the Mac and other machines (2.1+)
    + mounts: ``HOST:GUEST`` mounts for an isolated machine (2.x); on an existing
      machine compared with ``machine.NAME.mounts`` and set when different (they apply
      when the machine next starts)
    + timeout: seconds to wait for the machine to answer commands after creating or
      starting it; the operation fails with a clear message past it

    Creating or starting a machine waits until it really runs commands
    (``orbctl run -m MACHINE true``). Limits (cpus/memory/disk) and mounts of an
    existing machine are compared with its ``machine.NAME.*`` settings and set when
    they differ.

    **Examples:**

    .. code:: python

        orbstack.machine(
            name="Debian web machine with 2 CPUs",
            machine="web",
            image="debian:bookworm",
            user="deploy",
            cpus=2,
        )

        orbstack.machine(name="Stop the db machine", machine="db", running=False)
        orbstack.machine(name="Remove the old machine", machine="old", present=False)
    """
    check_timeout(timeout)
    check_machine_name(machine)
    for value, unit in ((memory, "M"), (disk, "")):
        if value is not None:
            size_in_bytes(value, unit)  # a bad size fails here, not halfway through
    if cpus is not None and (isinstance(cpus, bool) or not isinstance(cpus, int) or cpus < 1):
        raise OperationError(f"cpus must be a positive int, not {cpus!r}")
    if present:
        check_orbstack_2_1(
            cpus=cpus, memory=memory, disk=disk, mounts=mounts,
            isolated=isolated or None, isolate_network=isolate_network or None,
        )
    current = host.get_fact(Machine, machine=machine)

    if not present:
        if current:
            yield orbctl("delete", "-f", machine)
        else:
            host.noop(f"machine {machine} does not exist")
        return

    if current:
        differences = image_differences(current, image, arch)  # image None: not compared
        config = current.get("config") or {}
        for key, wanted in (("isolated", isolated), ("isolate_network", isolate_network)):
            if wanted is not None and key in config and bool(config[key]) != wanted:
                differences.append(f"{key} {str(config[key]).lower()} (want {str(wanted).lower()})")
        if differences:
            if not force:
                raise OperationError(
                    f"machine {machine} exists with {', '.join(differences)}; pass force=True "
                    "to delete and recreate it (its data is lost), or change the wanted "
                    "image/arch (image=None accepts whatever the machine runs)",
                )
            yield orbctl("delete", "-f", machine)
            current = None

    if not current:
        argv = ["create"]
        for flag, value in (("-a", arch), ("-u", user), ("-c", user_data)):
            if value:
                argv += [flag, value]
        if isolated:
            argv.append("--isolated")
        if isolate_network:
            argv.append("--isolate-network")
        if cpus is not None:
            argv += ["--cpus", str(cpus)]
        if memory is not None:
            argv += ["--memory", f"{memory}M" if isinstance(memory, int) else str(memory)]
        if disk is not None:
            argv += ["--disk", str(disk)]
        for mount in mounts or []:
            argv += ["--mount", mount]
        argv += [image or DEFAULT_IMAGE, machine]
        yield orbctl(*argv)
        # create starts the machine; wait for it to answer before anything uses it.
        yield wait_ready(machine, timeout)
        if not running:
            yield orbctl("stop", machine)
        return

    if user and current.get("default_user") != user:
        yield orbctl("config", "set", config_key("username", machine), user)

    limits = {}
    if cpus is not None:
        limits["cpu"] = str(cpus)
    if memory is not None:
        limits["memory_mib"] = str(size_in_bytes(memory, "M") >> 20)
    if disk is not None:
        limits["disk_bytes"] = str(size_in_bytes(disk))
    if mounts is not None:
        # OrbStack 2.x keeps them as one comma-separated machine.NAME.mounts setting.
        limits["mounts"] = config_value(list(mounts))
    if limits:
        shown = host.get_fact(Config)
        for key, wanted in limits.items():
            full_key = config_key(key, machine)
            if current_setting(full_key, shown) != wanted:
                yield orbctl("config", "set", full_key, wanted)

    if running and not _is_running(current):
        yield from _start(machine, timeout)
    elif not running and _is_running(current):
        yield orbctl("stop", machine)
    elif not (user or limits):
        host.noop(f"machine {machine} is {current.get('state')}")


@operation()
@show_plan
def restart(machine: str, timeout: int = DEFAULT_TIMEOUT):
    """
    Restart a machine and wait until it answers commands again. Always runs (like
    ``server.reboot``).

    + machine: the machine's name
    + timeout: seconds to wait for it to answer commands

    .. code:: python

        orbstack.restart(name="Restart web after the kernel update", machine="web")
    """
    check_timeout(timeout)
    check_machine_name(machine)
    yield orbctl("restart", machine)
    yield wait_ready(machine, timeout)


@operation()
@show_plan
def clone(
    source: str,
    machine: str,
    running: bool | None = None,
    timeout: int = DEFAULT_TIMEOUT,
):
    """
    Clone ``source`` into a new machine (copy-on-write), unless ``machine`` exists.

    + source: the machine to copy (OrbStack pauses it while cloning)
    + machine: the new machine's name
    + running: ``True`` to start the clone (orbctl leaves it stopped), ``False`` to
      keep it stopped, ``None`` to leave it as it is
    + timeout: seconds to wait for a started clone to answer commands

    .. code:: python

        orbstack.clone(name="A scratch copy of web", source="web", machine="web-scratch",
                       running=True)
    """
    check_machine_name(source, "source machine")
    check_timeout(timeout)
    check_machine_name(machine)
    current = host.get_fact(Machine, machine=machine)
    if not current:
        yield orbctl("clone", source, machine)
        if running:
            yield from _start(machine, timeout)
        return

    if running and not _is_running(current):
        yield from _start(machine, timeout)
    elif running is False and _is_running(current):
        yield orbctl("stop", machine)
    else:
        host.noop(f"machine {machine} already exists")


@operation()
@show_plan
def rename(machine: str, new_name: str):
    """
    Rename a machine (it keeps its ID and data). Nothing to do once it is renamed.

    + machine: the current name
    + new_name: the new name

    .. code:: python

        orbstack.rename(name="web becomes web-old", machine="web", new_name="web-old")
    """
    check_machine_name(machine)
    check_machine_name(new_name, "new")
    if machine == new_name:
        host.noop(f"machine {machine} already has that name")
        return
    old = host.get_fact(Machine, machine=machine)
    new = host.get_fact(Machine, machine=new_name)
    if new and not old:
        host.noop(f"machine {machine} is already renamed to {new_name}")
        return
    if new and old:
        raise OperationError(
            f"cannot rename {machine} to {new_name}: a machine called {new_name} already "
            "exists; delete or rename it first",
        )
    # old may be missing now and created by an earlier operation of this deploy:
    # orbctl says "machine not found" if it is still missing when this runs.
    yield orbctl("rename", machine, new_name)


@operation()
@show_plan
def config(settings: dict, machine: str | None = None):
    """
    Set OrbStack settings, global or for one machine; only keys that differ are set.

    + settings: ``{key: value}``; booleans become ``true``/``false``
    + machine: apply them to this machine (keys become ``machine.NAME.KEY``)

    Global VM settings (``cpu``, ``memory_mib``, ``rosetta``, ``network.*``,
    ``data_dir`` ...) apply after OrbStack restarts: the operation warns when it
    changed one. It does not restart OrbStack for you (that stops every machine).

    .. code:: python

        orbstack.config(name="OrbStack VM size", settings={"cpu": 4, "memory_mib": 8192})
        orbstack.config(name="web's limits", machine="web", settings={"cpu": 2})
    """
    if not isinstance(settings, dict) or not settings:
        raise OperationError("orbstack.config: settings must be a non-empty dict of {key: value}")
    if machine is not None:
        check_machine_name(machine)
    shown = host.get_fact(Config)
    changed, changed_restart_keys = [], []
    for key, value in settings.items():
        full_key = config_key(key, machine)
        wanted = config_value(value)
        if current_setting(full_key, shown) == wanted:
            continue
        changed.append(key)
        yield orbctl("config", "set", full_key, wanted)
        if machine is None and key in RESTART_KEYS:
            changed_restart_keys.append(key)
    if not changed:
        host.noop("OrbStack settings already " + ", ".join(f"{k}={config_value(v)}" for k, v in settings.items()))
    if not changed_restart_keys:
        return
    restart = (
        f"OrbStack must restart to apply {', '.join(changed_restart_keys)}: run "
        "`orbctl stop` then `orbctl start` (this stops every machine)"
    )
    if host.state.is_executing:
        # The warning proper, once, when the change really happens.
        logger.warning(f"{host.print_prefix}{restart}")
    else:
        plan_note(restart)  # --dry and the confirmation prompt say it too, after the commands


@operation()
@show_plan
def default_machine(machine: str):
    """
    Make ``machine`` the default one (used by ``orb`` and ``ssh orb``).

    + machine: the machine's name

    .. code:: python

        orbstack.default_machine(name="web is the default", machine="web")
    """
    check_machine_name(machine)
    if host.get_fact(DefaultMachine) == machine:
        host.noop(f"{machine} is already the default machine")
        return
    yield orbctl("default", machine)


@operation()
@show_plan
def default_user(machine: str, user: str):
    """
    Set the user that commands in ``machine`` run as by default (``orb -m MACHINE``,
    ``ssh MACHINE@orb``). The user must exist in the machine.

    + machine: the machine's name
    + user: the Linux user name

    .. code:: python

        orbstack.default_user(name="Log in as deploy", machine="web", user="deploy")
    """
    check_machine_name(machine)
    current = host.get_fact(Machine, machine=machine)
    if current and current.get("default_user") == user:
        host.noop(f"{user} is already {machine}'s default user")
        return
    yield orbctl("config", "set", config_key("username", machine), user)


def _seconds(value) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


@operation()
@show_plan
def snapshot(
    machine: str,
    directory: str,
    keep: int | None = None,
    max_age: int | float | timedelta | None = DEFAULT_SNAPSHOT_MAX_AGE,
):
    """
    Export a machine to a timestamped archive on the Mac, and prune old ones.

    + machine: the machine to export
    + directory: where the archives go, on the Mac (created if missing); each is
      ``MACHINE-YYYYMMDDTHHMMSSZ.tar.zst`` (UTC)
    + keep: keep only the newest ``keep`` archives of this machine (older ones are
      deleted, counting the new one; also when no export is due)
    + max_age: seconds (or a ``timedelta``); export only when the newest archive is at
      least this old. The default, one day, makes a deploy run several times a day take
      one snapshot a day, and its second run change nothing. ``0`` exports on every run;
      ``None`` exports only when the machine has no archive at all there (like
      ``files.download`` without ``cache_time``).

    .. code:: python

        orbstack.snapshot(name="Daily web backup", machine="web",
                          directory="/Users/me/orb-backups", keep=7)
        orbstack.snapshot(name="Backup before the upgrade", machine="web",
                          directory="/Users/me/orb-backups", max_age=0)
    """
    check_machine_name(machine)
    if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
        raise OperationError(f"orbstack.snapshot: keep must be a positive int, not {keep!r}")
    if max_age is not None and (
        isinstance(max_age, bool)
        or not isinstance(max_age, (int, float, timedelta))
        or _seconds(max_age) < 0
    ):
        raise OperationError(
            "orbstack.snapshot: max_age must be seconds >= 0 or a timedelta (0: every run; "
            f"None: only when there is no snapshot), not {max_age!r}",
        )
    existing = host.get_fact(Snapshots, directory=directory, machine=machine)

    fresh = None  # why no export is needed, if it is not
    if existing and max_age is None:
        fresh = f"{machine} already has a snapshot (max_age=None): {existing[-1]['path']}"
    elif existing and _seconds(max_age) > 0:
        newest = existing[-1]
        taken = datetime.strptime(newest["time"], SNAPSHOT_STAMP_FORMAT).replace(tzinfo=timezone.utc)
        age = (datetime.now(timezone.utc) - taken).total_seconds()
        if age < _seconds(max_age):
            fresh = (
                f"newest snapshot of {machine} is {int(age)}s old, younger than "
                f"max_age={int(_seconds(max_age))}s: {newest['path']}"
            )
    if fresh:
        # keep is state too: lowering it prunes even when no export is due.
        stale = existing[: max(0, len(existing) - keep)] if keep is not None else []
        if stale:
            yield shlex.join(["rm", "-f", "--", *(s["path"] for s in stale)])
        else:
            host.noop(fresh)
        return

    folder = directory.rstrip("/") or "/"
    # The timestamp is taken by the Mac's shell when the export runs, so --dry shows
    # the exact command. Never overwrite: a second snapshot within the same second
    # would replace an archive that the pruning below may then delete.
    target = (
        f"{shlex.quote(folder)}/{shlex.quote(machine + '-')}"
        f'"$(date -u +{SNAPSHOT_STAMP_FORMAT})"{SNAPSHOT_SUFFIX}'
    )
    yield (
        f"f={target}; "
        'if [ -e "$f" ]; then echo "orbstack: $f already exists (one snapshot per second)" >&2; '
        "exit 1; fi; "
        f'mkdir -p {shlex.quote(folder)} && orbctl export {shlex.quote(machine)} "$f"'
    )

    if keep is not None:
        stale = existing[: max(0, len(existing) + 1 - keep)]
        if stale:
            yield shlex.join(["rm", "-f", "--", *(s["path"] for s in stale)])


@operation()
@show_plan
def restore(
    machine: str,
    archive: str | None = None,
    directory: str | None = None,
    force: bool = False,
    running: bool = True,
    timeout: int = DEFAULT_TIMEOUT,
):
    """
    Import a machine from an archive (``orbctl export`` / ``orbstack.snapshot``).

    + machine: the name the restored machine gets
    + archive: the archive's path on the Mac, or
    + directory: take the newest ``orbstack.snapshot`` archive of ``machine`` there
      (nothing to do when there is none)
    + force: replace an existing machine of that name (deleting it first); without it
      an existing machine is left alone, so "restore if missing" is the default
    + running: start the restored machine and wait until it answers commands
    + timeout: seconds to wait for it

    .. code:: python

        # Bring web back from its newest snapshot if it is gone, then manage it as usual
        orbstack.restore(name="Restore web if missing", machine="web",
                         directory="/Users/me/orb-backups")
        orbstack.machine(name="web", machine="web", image="debian:bookworm")
    """
    check_timeout(timeout)
    check_machine_name(machine)
    if (archive is None) == (directory is None):
        raise OperationError("orbstack.restore: give exactly one of archive= or directory=")
    current = host.get_fact(Machine, machine=machine)
    if current and not force:
        host.noop(f"machine {machine} exists; pass force=True to replace it from the archive")
        return

    if directory is not None:
        snapshots = host.get_fact(Snapshots, directory=directory, machine=machine)
        if not snapshots:
            host.noop(f"no snapshot of {machine} in {directory}: nothing to restore")
            return
        archive = snapshots[-1]["path"]

    if current:
        yield orbctl("delete", "-f", machine)
    yield orbctl("import", "-n", machine, archive)
    if running:
        yield from _start(machine, timeout)
