"""The `@orbstack` pyinfra connector: a thin shim over the `pyinfra-orbstack` binary.

This class keeps pyinfra's connector contract and hands each job to its module:
`_hostdata` (the host data), `_connect` (connect and its errors), `_commands`
(commands), `_transfers` (files), `_spool` (the Mac side of files), `_shared` (the
run's one binary process), `_inventory` (bare `@orbstack`). See docs/connector.md
for use, docs/architecture.md for design.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from pyinfra.api.command import StringCommand
from pyinfra.api.exceptions import ConnectError, InventoryError
from pyinfra.api.host import Host
from pyinfra.api.output import echo
from pyinfra.api.state import State
from pyinfra.connectors.base import BaseConnector
from pyinfra.connectors.util import CommandOutput, extract_control_arguments, remove_any_sudo_askpass_file
from typing_extensions import Unpack, override

from . import _binary, _commands, _connect, _inventory, _metrics, _rpc, _shared
from ._hostdata import OrbStackConnectorData, connector_data_meta, mac_flags, publish_machine_data
from ._spool import FileOrIO, LocalDestination, LocalSource, SpoolDir
from ._transfers import Transfers

if TYPE_CHECKING:
    from pyinfra.api.arguments import ConnectorArguments

# Kept importable from here: older code and docs name them so.
OrbStackOperationError = _commands.OrbStackOperationError

RSYNC_UNSUPPORTED = (
    "The @orbstack connector does not support files.rsync: OrbStack machines are "
    "reached through orbctl, not SSH. Use files.sync instead (it uploads only the "
    "files that changed, with files.put)."
)


class OrbStackConnector(BaseConnector):
    """
    The ``@orbstack`` connector runs commands in OrbStack Linux machines, through
    the ``pyinfra-orbstack`` binary and ``orbctl``. Use ``@orbstack/NAME`` for one
    machine, or ``@orbstack`` for every machine (grouped as ``orbstack_running``,
    ``orbstack_<distro>``, ``orbstack_<arch>``). A stopped machine is started on connect.
    ``@orbstack/MAC:NAME`` and ``@orbstack/MAC:`` reach machines on another Mac over
    SSH (MAC is anything ``ssh`` accepts; grouped as ``orbstack_mac_<MAC>`` too).

    Examples:

    .. code:: shell

        # Run a deploy against the machine named "web"
        pyinfra @orbstack/web deploy.py

        # Run a command on every machine
        pyinfra @orbstack exec -- uname -a

        # Every machine on the Mac mini reached as `ssh mini-1`
        pyinfra @orbstack/mini-1: exec -- uname -a
    """

    handles_execution = True

    data_cls = OrbStackConnectorData
    data_meta = connector_data_meta
    data: OrbStackConnectorData

    def __init__(self, state: State, host: Host) -> None:
        super().__init__(state, host)
        # Kept cheap: pyinfra builds every host's connector before connecting any.
        self.machine: dict[str, Any] = {}
        self.binary = _shared.HostBinary(_shared.for_state(state, mac_flags(self.data)))
        self.spool = SpoolDir()
        self.metrics: _metrics.Recorder | None = None  # deploy metrics, when on (connect decides)

    @override
    @staticmethod
    def make_names_data(name: str | None = None) -> Iterator[tuple[str, dict[str, Any], list[str]]]:
        if name is None:
            yield from _inventory.all_machines_names_data()
            return
        # MAC:MACHINE (machine names hold no ":"; a MAC may, e.g. ssh://ci@mini:2222).
        mac, on_mac, machine = name.rpartition(":")
        if on_mac and not mac:
            raise InventoryError(
                f"Invalid @orbstack host `@orbstack/{name}`: name the Mac before the colon, "
                "as `@orbstack/MAC:MACHINE` (MAC is an ssh destination) or `@orbstack/MAC:` for every "
                "machine on it.",
            )
        if on_mac and not machine:
            yield from _inventory.all_machines_names_data(mac)
            return
        if not machine or "/" in machine:
            raise InventoryError(
                f"Invalid @orbstack host `@orbstack/{name}`: use `@orbstack/MACHINE` for one machine, "
                "`@orbstack` for all of them, or `@orbstack/MAC:MACHINE` / `@orbstack/MAC:` for machines "
                "on another Mac reached over SSH.",
            )
        if on_mac:
            yield f"@orbstack/{name}", {"orbstack_machine": machine, "orbstack_mac": mac}, [
                "@orbstack", _inventory.mac_group(mac),
            ]
            return
        yield f"@orbstack/{name}", {"orbstack_machine": name}, ["@orbstack"]

    @property
    def machine_name(self) -> str:
        return self.data["orbstack_machine"]

    @property
    def target(self) -> _commands.Target:
        return _commands.Target(
            self.machine_name, self.data["orbstack_user"] or "", self.data["orbstack_workdir"] or "",
        )

    @property
    def _local_temp_dir(self) -> str | None:  # where in-memory files are spooled (tests look)
        return self.spool.path

    @override
    def connect(self) -> None:
        self.metrics = _metrics.for_host(self.host)
        if self.metrics is None:
            self._connect()
            return
        start, replies = time.perf_counter(), list[dict[str, Any]]()
        try:
            self._connect(replies.append)
        except ConnectError:
            self.metrics.connected_host(self.host, self.machine_name, None, time.perf_counter() - start, "connect")
            raise
        self.metrics.connected_host(self.host, self.machine_name, replies[-1] if replies else None,
                                    time.perf_counter() - start, None)

    def _connect(self, on_reply: Callable[[dict[str, Any]], None] | None = None) -> None:
        try:
            client = self.binary.acquire()
        except (_binary.BinaryNotFoundError, _shared.ProtocolMismatchError, _shared.MacUnreachableError) as e:
            raise ConnectError(str(e)) from None
        except (OSError, TimeoutError) as e:
            raise ConnectError(f"could not start the pyinfra-orbstack binary: {e}") from None
        try:
            self.machine = _connect.connect_machine(client, self.host, self.data, on_reply)
        except ConnectError:
            self.binary.release()
            raise
        publish_machine_data(self.host, self.data, self.machine)

    @override
    def disconnect(self) -> None:
        # pyinfra removes its sudo askpass files right after disconnect(); done
        # here, while the binary still runs, that does not start it again.
        remove_any_sudo_askpass_file(self.host)
        last = self.metrics is not None and self.metrics.disconnected(self.host, self._binary_stats())
        self.binary.release()
        self.spool.remove()
        if last and self.metrics is not None:
            self.metrics.report()

    def _binary_stats(self) -> dict[str, Any] | None:
        """The binary's counts (metrics), asked while this host still holds it."""
        client = self.binary.shared.client
        if client is None or not client.alive:
            return None
        try:
            stats: dict[str, Any] = client.call("stats", {}, timeout=5)
        except (_rpc.RPCError, ConnectionError, TimeoutError):
            return None  # an older binary, or one that died: the shim's own figures remain
        return stats

    @override
    def run_shell_command(
        self,
        command: StringCommand | str,
        print_output: bool = False,
        print_input: bool = False,
        **arguments: Unpack[ConnectorArguments],
    ) -> tuple[bool, CommandOutput]:
        if self.metrics is None:
            return _commands.run_shell_command(
                self.state, self.host, self.binary, self.target, command, print_output, print_input, arguments,
            )
        with self.metrics.call(self.host, "command") as call:
            self.binary.timing = call
            try:
                ok, output = _commands.run_shell_command(
                    self.state, self.host, self.binary, self.target, command, print_output, print_input, arguments,
                )
            finally:
                self.binary.timing = None
            call.ok = ok
            call.output_bytes = sum(len(line.line) + 1 for line in output.combined_lines)
            return ok, output

    def _transfers(self) -> Transfers:
        return Transfers(self.state, self.host, self.binary, self.target)

    @override
    def put_file(
        self,
        filename_or_io: FileOrIO,
        remote_filename: str,
        remote_temp_filename: str | None = None,  # only its directory is used (see Transfers.temp_root)
        print_output: bool = False,
        print_input: bool = False,
        **arguments: Unpack[ConnectorArguments],
    ) -> bool:
        command_arguments: dict[str, Any] = dict(arguments)
        extract_control_arguments(command_arguments)  # type: ignore[arg-type]
        with LocalSource(self.spool, filename_or_io) as local_path:
            if self.metrics is None:
                self._transfers().put(local_path, remote_filename, remote_temp_filename, print_input,
                                      command_arguments)
            else:
                with self.metrics.call(self.host, "upload") as call, self._timed(call):
                    self._transfers().put(local_path, remote_filename, remote_temp_filename, print_input,
                                          command_arguments)
                    call.moved = os.path.getsize(local_path)
        if print_output:
            echo(f"{self.host.print_prefix}file uploaded: {remote_filename}", err=True)
        return True

    @override
    def get_file(
        self,
        remote_filename: str,
        filename_or_io: FileOrIO,
        remote_temp_filename: str | None = None,  # only its directory is used (see Transfers.temp_root)
        print_output: bool = False,
        print_input: bool = False,
        **arguments: Unpack[ConnectorArguments],
    ) -> bool:
        command_arguments: dict[str, Any] = dict(arguments)
        extract_control_arguments(command_arguments)  # type: ignore[arg-type]
        with LocalDestination(self.spool, filename_or_io) as local_path:
            if self.metrics is None:
                self._transfers().get(remote_filename, local_path, remote_temp_filename, print_input,
                                      command_arguments)
            else:
                with self.metrics.call(self.host, "download") as call, self._timed(call):
                    self._transfers().get(remote_filename, local_path, remote_temp_filename, print_input,
                                          command_arguments)
                    call.moved = os.path.getsize(local_path)
        if print_output:
            echo(f"{self.host.print_prefix}file downloaded: {remote_filename}", err=True)
        return True

    @contextmanager
    def _timed(self, call: _metrics.Call) -> Iterator[None]:
        self.binary.timing = call
        try:
            yield
        finally:
            self.binary.timing = None

    @override
    def check_can_rsync(self) -> None:
        raise NotImplementedError(RSYNC_UNSUPPORTED)

    @override
    def rsync(
        self,
        src: str,
        dest: str,
        flags: Iterable[str],
        print_output: bool = False,
        print_input: bool = False,
        **arguments: Unpack[ConnectorArguments],
    ) -> bool:
        raise NotImplementedError(RSYNC_UNSUPPORTED)
