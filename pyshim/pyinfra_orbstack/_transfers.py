"""files.put / files.get: one `file.put` or `file.get` request to the binary each.

Without escalation the binary moves the bytes as the connector user and replaces
the destination atomically. With `_sudo`/`_su_user`/`_doas`/`_dzdo` the request
carries an escalation (docs/protocol.md): a new stage directory's path and the
command that runs `sh STAGE/run` as the target user, which pyinfra's own
`make_unix_command_for_host` builds (sudo, su, doas, askpass passwords, login
shells, preserved environments: as for any command). The binary stages, copies
and renames in the machine; a sudo that asks for a password is retried once with
the prompted password, by pyinfra's own helper, as for commands.
"""

from __future__ import annotations

import posixpath
import secrets
from typing import Any

from pyinfra.api.command import QuoteString, StringCommand
from pyinfra.api.host import Host
from pyinfra.api.output import echo
from pyinfra.api.state import State
from pyinfra.connectors.util import (
    CommandOutput,
    OutputLine,
    execute_command_with_sudo_retry,
    make_unix_command_for_host,
)

from . import _rpc
from ._commands import Target
from ._shared import HostBinary
from ._spool import remove_download_parts


class EscalationFailed(OSError):
    """The transfer's escalation command failed (e.g. sudo wants a password)."""

    def __init__(self, message: str, exit_code: int, stderr: list[str]) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.stderr = stderr


class Transfers:
    """One host's file transfers."""

    def __init__(self, state: State, host: Host, binary: HostBinary, target: Target) -> None:
        self.state = state
        self.host = host
        self.binary = binary
        self.target = target

    def put(
        self,
        local_path: str,
        remote_filename: str,
        remote_temp_filename: str | None,
        print_input: bool,
        arguments: dict[str, Any],
    ) -> None:
        """Upload local_path to remote_filename, as the user the arguments escalate to."""
        self.transfer_as("file.put", local_path, remote_filename, remote_temp_filename, print_input, arguments)

    def get(
        self,
        remote_filename: str,
        local_path: str,
        remote_temp_filename: str | None,
        print_input: bool,
        arguments: dict[str, Any],
    ) -> None:
        """Download remote_filename to local_path, read as the user the arguments escalate to."""
        self.transfer_as("file.get", local_path, remote_filename, remote_temp_filename, print_input, arguments)

    def transfer_as(
        self,
        method: str,
        local_path: str,
        remote_path: str,
        remote_temp_filename: str | None,
        print_input: bool,
        arguments: dict[str, Any],
    ) -> None:
        remote_path = self.resolve(remote_path)
        if escalation_target(arguments) is None:
            self.transfer(method, local_path, remote_path)
            return
        self.check_binary_escalates()
        temp_root = self.temp_root(remote_temp_filename, arguments)

        def execute() -> tuple[int, CommandOutput]:
            # A new stage directory on every attempt (the binary never reuses one).
            stage_dir = posixpath.join(temp_root, f"pyinfra-orbstack-{secrets.token_hex(16)}")
            # Built on every attempt, so a sudo password retry picks up the password.
            command = make_unix_command_for_host(
                self.state, self.host, StringCommand("sh", QuoteString(f"{stage_dir}/run")), **arguments,
            )
            if print_input:
                echo(f"{self.host.print_prefix}>>> {command}", err=True)  # masked
            escalation = {"command": command.get_raw_value(), "stage_dir": stage_dir}
            try:
                self.transfer(method, local_path, remote_path, escalation)
            except EscalationFailed as e:
                failed.append(e)
                return e.exit_code, CommandOutput([OutputLine("stderr", line) for line in e.stderr])
            return 0, CommandOutput([])

        failed: list[EscalationFailed] = []
        return_code, _ = execute_command_with_sudo_retry(self.host, arguments, execute)  # type: ignore[arg-type]
        if return_code != 0:
            raise OSError(str(failed[-1]))

    def resolve(self, path: str) -> str:
        """A remote path as every path the connector touches is read (docs/connector.md,
        "Relative paths"): a relative one in `orbstack_workdir` when it is set, as
        commands start there; otherwise it stays relative, and the binary resolves it
        in the connector user's home, where commands start without a workdir."""
        if self.target.workdir and not posixpath.isabs(path):
            return posixpath.join(self.target.workdir, path)
        return path

    def check_binary_escalates(self) -> None:
        """An older binary would ignore the escalation and transfer as the connector user."""
        capabilities = self.binary.shared.initialize_result.get("capabilities")
        if isinstance(capabilities, list) and "file.escalation" not in capabilities:
            raise OSError(
                "this pyinfra-orbstack binary is older than the Python package and cannot transfer "
                "files with _sudo/_su_user/_doas: reinstall both together (`pip install --force-reinstall "
                "pyinfra-orbstack`), or `make build` in a checkout",
            )

    def transfer(
        self, method: str, local_path: str, remote_path: str, escalation: dict[str, str] | None = None,
    ) -> None:
        """One `file.put`/`file.get`; OSError (EscalationFailed for the escalation) on failure."""
        params: dict[str, Any] = {
            "machine": self.target.machine,
            "user": self.target.user,
            "local_path": local_path,
            "remote_path": remote_path,
        }
        if escalation is not None:
            params["escalation"] = escalation
        with self.binary.for_call() as client:
            try:
                client.call(method, params)
            except _rpc.BinaryGoneError:
                if method == "file.get":
                    remove_download_parts(local_path, client.pid)
                raise
            except _rpc.RequestRefused as e:
                raise OSError(str(e)) from None
            except _rpc.RPCError as e:
                # The binary's message normally names the path already.
                message = e.message if remote_path in e.message else f"{remote_path}: {e.message}"
                failure = e.data.get("escalation")
                if isinstance(failure, dict):
                    raise EscalationFailed(
                        message, int(failure.get("exit_code") or 1), [str(x) for x in failure.get("stderr") or []],
                    ) from None
                raise OSError(message) from None

    def temp_root(self, remote_temp_filename: str | None, arguments: dict[str, Any]) -> str:
        """Where stage directories go: where pyinfra asks for temp files.

        pyinfra derives `remote_temp_filename` from `_temp_dir` (or the machine's
        TMPDIR); @ssh stages at that very path, we in a new directory beside it.
        """
        if remote_temp_filename:
            return self.resolve(posixpath.dirname(remote_temp_filename) or ".")
        return self.resolve(str(arguments.get("_temp_dir") or self.host.get_temp_dir_config()))  # type: ignore[no-untyped-call]


def escalation_target(arguments: dict[str, Any]) -> str | None:
    """The user an escalated command runs as, or None if it is not escalated."""
    if arguments.get("_su_user"):
        return str(arguments["_su_user"])
    for flag in ("_sudo", "_doas", "_dzdo"):
        if arguments.get(flag):
            return str(arguments.get(f"{flag}_user") or "root")
    return None
