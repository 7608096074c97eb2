"""
Manage OrbStack machines as pyinfra state: create, start/stop, clone, rename, configure,
snapshot and restore them, and move them between Macs.

These operations run on the Mac where OrbStack lives (normally ``@local``; the Mac over
``@ssh`` works the same, see docs/operations.md). Each one reads facts, compares them
with what you asked for and yields only the ``pyinfra-orbstack machine ...`` /
``pyinfra-orbstack config ...`` commands needed, or nothing: a second run changes
nothing, and ``--dry`` shows the exact commands. The binary applies OrbStack's rules
(names, sizes, version gates) and waits until a started machine answers commands, the
same way for these operations, the ``@orbstack`` connector and its own CLI.

.. code:: python

    from pyinfra_orbstack.operations import orbstack

    orbstack.machine(name="A web machine", machine="web", image="debian:bookworm")
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Generator, Iterator
from contextvars import ContextVar
from datetime import datetime, timedelta, timezone
from functools import wraps
from typing import Any, ParamSpec

import click
from pyinfra import logger
from pyinfra.api.exceptions import OperationError
from pyinfra.api.operation import operation
from pyinfra.api.state import StateStage
from pyinfra.context import host

from pyinfra_orbstack._rpc import PROTOCOL_VERSION
from pyinfra_orbstack.facts.orbstack import (
    BINARY_MISSING,
    PROTOCOL_MISMATCH,
    SNAPSHOT_STAMP_FORMAT,
    SNAPSHOT_SUFFIX,
    Binary,
    ConfigValues,
    DefaultMachine,
    Machine,
    MachineDifferences,
    MachineLocations,
    MachineSettings,
    Snapshots,
    binary,
    on_local_host,
)

DEFAULT_IMAGE = "ubuntu:noble"  # what orbstack.machine creates when no image is given
# orbstack.snapshot exports again only when its newest archive is this old (seconds):
# a deploy re-run the same day must not pile up archives.
DEFAULT_SNAPSHOT_MAX_AGE = 86400

def binary_problem() -> str | None:
    """On a Mac reached over ``@ssh``, what is wrong with its ``pyinfra-orbstack``
    (missing, or of another protocol version), or None. ``@local`` runs the binary
    this package ships."""
    if on_local_host():
        return None
    found = host.get_fact(Binary)
    if not found:
        return BINARY_MISSING
    if found.get("protocol") != PROTOCOL_VERSION:
        return (f"{PROTOCOL_MISMATCH}; that one is {found.get('version')} "
                f"(protocol {found.get('protocol')})")
    return None


def timeout_args(timeout: float | None) -> list[str]:
    """``--timeout Ns`` for the binary, or nothing for its default (120 s)."""
    if timeout is None:
        return []
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise OperationError(f"timeout must be a positive number of seconds, not {timeout!r}")
    return ["--timeout", f"{timeout:g}s"]


def config_value(value: object) -> str:
    """A setting's value as OrbStack stores it: booleans as ``true``/``false``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


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


P = ParamSpec("P")


def show_plan(func: Callable[P, Iterator[str]]) -> Callable[P, Generator[str, None, None]]:
    """Compute all of an operation's commands first, and print them while pyinfra
    prepares (``--dry`` and the confirmation prompt), not only the first one.

    pyinfra itself only reports *that* an operation will change something; for
    machine lifecycle the user wants to see exactly which commands will run.
    """

    @wraps(func)
    def planned(*args: P.args, **kwargs: P.kwargs) -> Generator[str, None, None]:
        preparing = host.state.current_stage == StateStage.Prepare
        notes: list[str] = []
        token = _plan_notes.set(notes)
        try:
            # A Mac without a usable binary fails its own hosts when the deploy runs:
            # the other Macs' hosts go on (raising here would stop every host).
            problem = binary_problem()
            commands = [_failing(problem)] if problem else list(func(*args, **kwargs))
            if problem and preparing:
                logger.warning(f"{host.print_prefix}{_operation_title()}"
                               f"{click.style('will fail:', 'yellow')} {problem}")
        except OperationError as error:
            if preparing:
                raise  # pyinfra stops before running anything and prints the message
            # While executing (e.g. with -y) pyinfra would print a greenlet traceback
            # around a raised error; a failing command shows only the message.
            commands = [_failing(str(error))]
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


def _failing(message: str) -> str:
    """A command that fails with message: how an operation fails one host alone."""
    return f"echo {shlex.quote(f'orbstack: {message}')} >&2; exit 1"


def _is_running(current: dict[str, Any]) -> bool:
    return current.get("state") in ("running", "starting")


def _settings_to_set(
    machine: str,
    user: str | None = None,
    cpus: int | None = None,
    memory: int | str | None = None,
    disk: int | str | None = None,
    mounts: list[str] | tuple[str, ...] | None = None,
) -> list[str]:
    """``config set`` commands for the wanted per-machine settings that differ. The
    binary reads them (turning sizes into OrbStack's units, refusing limits on an
    OrbStack before 2.1, naming the keys), so this compares like with like."""
    if user is None and cpus is None and memory is None and disk is None and mounts is None:
        return []
    settings = host.get_fact(
        MachineSettings, machine=machine, user=user, cpus=cpus, memory=memory, disk=disk,
        mounts=tuple(mounts) if mounts is not None else None,
    )
    return [
        binary("config", "set", s["key"], s["value"])
        for s in settings
        if s.get("current") != s["value"]
    ]


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
    timeout: float | None = None,
) -> Iterator[str]:
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
      starting it (default: the binary's, 120 s); the operation fails with a clear
      message past it

    Creating or starting a machine waits until it really runs commands (the binary
    polls ``orbctl run -m MACHINE true``). Limits (cpus/memory/disk) and mounts of an
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
    wait = timeout_args(timeout)
    if cpus is not None and (isinstance(cpus, bool) or not isinstance(cpus, int) or cpus < 1):
        raise OperationError(f"cpus must be a positive int, not {cpus!r}")
    current = host.get_fact(Machine, machine=machine)

    if not present:
        if current:
            yield binary("machine", "delete", machine)
        else:
            host.noop(f"machine {machine} does not exist")
        return

    # Read (and so checked by the binary: sizes, OrbStack 2.1) before anything runs,
    # for a new machine too.
    settings = _settings_to_set(machine, user, cpus, memory, disk, mounts)

    if current:
        # What only recreating can change; an image of None is not compared.
        differences = host.get_fact(
            MachineDifferences, machine=machine, image=image, arch=arch, isolated=isolated,
            isolate_network=isolate_network,
        )
        if differences:
            if not force:
                raise OperationError(
                    f"machine {machine} exists with {', '.join(differences)}; pass force=True "
                    "to delete and recreate it (its data is lost), or change the wanted "
                    "image/arch (image=None accepts whatever the machine runs)",
                )
            yield binary("machine", "delete", machine)
            current = None

    if not current:
        args = ["machine", "create"]
        for flag, value in (("-a", arch), ("-u", user), ("-c", user_data)):
            if value:
                args += [flag, value]
        if isolated:
            args.append("--isolated")
        if isolate_network:
            args.append("--isolate-network")
        for flag, size in (("--cpus", cpus), ("--memory", memory), ("--disk", disk)):
            if size is not None:
                args += [flag, str(size)]
        for mount in mounts or []:
            args += ["--mount", mount]
        # The binary waits until the new machine answers commands.
        yield binary(*args, *wait, image or DEFAULT_IMAGE, machine)
        if not running:
            yield binary("machine", "stop", machine)
        return

    yield from settings

    if running and not _is_running(current):
        yield binary("machine", "start", *wait, machine)
    elif not running and _is_running(current):
        yield binary("machine", "stop", machine)
    elif not settings:
        host.noop(f"machine {machine} is {current.get('state')}")


@operation()
@show_plan
def restart(machine: str, timeout: float | None = None) -> Iterator[str]:
    """
    Restart a machine and wait until it answers commands again. Always runs (like
    ``server.reboot``).

    + machine: the machine's name
    + timeout: seconds to wait for it to answer commands (default 120)

    .. code:: python

        orbstack.restart(name="Restart web after the kernel update", machine="web")
    """
    yield binary("machine", "restart", *timeout_args(timeout), machine)


@operation()
@show_plan
def clone(
    source: str,
    machine: str,
    running: bool | None = None,
    timeout: float | None = None,
) -> Iterator[str]:
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
    wait = timeout_args(timeout)
    current = host.get_fact(Machine, machine=machine)
    if not current:
        yield binary("machine", "clone", *(["--start", *wait] if running else []), source, machine)
        return

    if running and not _is_running(current):
        yield binary("machine", "start", *wait, machine)
    elif running is False and _is_running(current):
        yield binary("machine", "stop", machine)
    else:
        host.noop(f"machine {machine} already exists")


@operation()
@show_plan
def rename(machine: str, new_name: str) -> Iterator[str]:
    """
    Rename a machine (it keeps its ID and data). Nothing to do once it is renamed.

    + machine: the current name
    + new_name: the new name

    .. code:: python

        orbstack.rename(name="web becomes web-old", machine="web", new_name="web-old")
    """
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
    yield binary("machine", "rename", machine, new_name)


@operation()
@show_plan
def config(settings: dict[str, Any], machine: str | None = None) -> Iterator[str]:
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
    current = host.get_fact(ConfigValues, keys=tuple(settings), machine=machine)
    changed, changed_restart_keys = [], []
    for key, value in settings.items():
        wanted = config_value(value)
        known = current.get(key) or {}
        if known.get("value") == wanted:
            continue
        changed.append(key)
        yield binary("config", "set", *(["--machine", machine] if machine else []), key, wanted)
        if known.get("restart"):
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
def default_machine(machine: str) -> Iterator[str]:
    """
    Make ``machine`` the default one (used by ``orb`` and ``ssh orb``).

    + machine: the machine's name

    .. code:: python

        orbstack.default_machine(name="web is the default", machine="web")
    """
    if host.get_fact(DefaultMachine) == machine:
        host.noop(f"{machine} is already the default machine")
        return
    yield binary("machine", "default", machine)


@operation()
@show_plan
def default_user(machine: str, user: str) -> Iterator[str]:
    """
    Set the user that commands in ``machine`` run as by default (``orb -m MACHINE``,
    ``ssh MACHINE@orb``). The user must exist in the machine.

    + machine: the machine's name
    + user: the Linux user name

    .. code:: python

        orbstack.default_user(name="Log in as deploy", machine="web", user="deploy")
    """
    commands = _settings_to_set(machine, user=user)
    if not commands:
        host.noop(f"{user} is already {machine}'s default user")
    yield from commands


def _seconds(value: float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


@operation()
@show_plan
def snapshot(
    machine: str,
    directory: str,
    keep: int | None = None,
    max_age: int | float | timedelta | None = DEFAULT_SNAPSHOT_MAX_AGE,
) -> Iterator[str]:
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
    elif existing and max_age is not None and _seconds(max_age) > 0:
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
        f'mkdir -p {shlex.quote(folder)} && {binary("machine", "export", machine)} "$f"'
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
    timeout: float | None = None,
) -> Iterator[str]:
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
    wait = timeout_args(timeout)
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
        yield binary("machine", "delete", machine)
    start = ["--start", *wait] if running else []
    yield binary("machine", "import", "-n", machine, *start, str(archive))


@operation()
@show_plan
def machine_migrated(
    machine: str,
    source: str,
    destination: str,
    delete_source: bool = False,
    checks: list[str] | tuple[str, ...] | None = None,
    timeout: float | None = None,
) -> Iterator[str]:
    """
    Move a machine from one Mac to another (``pyinfra-orbstack machine migrate``):
    exported on ``source``, streamed through the host this runs on (normally
    ``@local``; never stored there) and imported on ``destination``, which checks the
    archive's sha256 and that the machine's files match before the machine gets its
    name. Nothing to do once the machine is on ``destination`` (and, with
    ``delete_source``, gone from ``source``).

    + machine: the machine's name (the same on both Macs)
    + source: the Mac it is on: an ssh destination (an alias of your ssh config,
      ``[user@]host``), or ``"local"`` for the host this operation runs on
    + destination: the Mac to move it to, the same way
    + delete_source: delete it on ``source`` once ``destination`` has reported success
      (by default the source machine is kept, unchanged)
    + checks: more files (absolute paths in the machine) whose sha256 must be equal on
      both Macs, beyond ``/etc/os-release``, ``/etc/passwd`` and ``/etc/group``
    + timeout: seconds starting the machine on either Mac may take (default 120)

    A failed migration leaves the source machine as it was and nothing on the
    destination; the operation fails naming the stage (export, transfer, import,
    verification) and the Mac.

    .. code:: python

        orbstack.machine_migrated(name="web moves to the Mac mini", machine="web",
                                  source="mac-a", destination="mac-mini",
                                  delete_source=True)
    """
    for what, mac in (("source", source), ("destination", destination)):
        if not mac or mac.startswith("-") or any(c in mac for c in "\0\r\n"):
            raise OperationError(f"orbstack.machine_migrated: {what} {mac!r} is not a Mac: give an "
                                 "ssh destination (e.g. mac-mini or admin@mac-mini.lan) or \"local\"")
    if source == destination:
        raise OperationError(f"orbstack.machine_migrated: source and destination are the same Mac ({source})")
    extra = list(checks or ())
    for path in extra:
        if not isinstance(path, str) or not path.startswith("/"):
            raise OperationError(
                f"orbstack.machine_migrated: checks must be absolute paths in the machine, not {path!r}",
            )
    wait = timeout_args(timeout)

    where = host.get_fact(MachineLocations, machine=machine, macs=(source, destination))
    on_source, on_destination = where.get(source), where.get(destination)
    if on_destination:
        if on_source and delete_source:
            # Deleting the source here could destroy the only copy of a different
            # machine that happens to share the name: the binary deletes only right
            # after a destination it streamed to has reported success.
            raise OperationError(
                f"{machine} is on both {source} and {destination}; delete_source=True deletes "
                "the source only right after a migration succeeds. Check the machine on "
                f"{destination}, then delete the one on {source} (orbstack.machine with "
                "present=False run against it)",
            )
        host.noop(f"machine {machine} is already on {destination}")
        return
    if not on_source:
        # It may be created by an earlier operation of this deploy: the binary says
        # "not on Mac ..." (exit status 3) if it is still missing when this runs.
        plan_note(f"{machine} is not on {source} now")
    args = ["machine", "migrate", "--from", source, "--to", destination]
    if delete_source:
        args.append("--delete-source")
    for path in extra:
        args += ["--check", path]
    yield binary(*args, *wait, machine)
