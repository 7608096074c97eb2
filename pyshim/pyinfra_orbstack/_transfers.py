"""files.put / files.get: `file.put` and `file.get` through the binary.

Without escalation the binary moves the bytes as the connector user and replaces
the destination atomically (docs/protocol.md). With `_sudo`/`_su_user`/`_doas`/
`_dzdo` the upload is staged in a private directory in the machine and copied
into place by the target user, with commands that pyinfra's own helpers wrap
(through `run_shell`, the connector's `run_shell_command`).
"""

from __future__ import annotations

import posixpath
import secrets
import shlex
from collections.abc import Callable
from typing import Any

from pyinfra import logger
from pyinfra.api.command import StringCommand
from pyinfra.api.host import Host
from pyinfra.connectors.util import CommandOutput

from . import _rpc
from ._commands import Target
from ._shared import HostBinary
from ._spool import remove_download_parts

# The connector's run_shell_command(command, print_input=..., **arguments).
RunShell = Callable[..., "tuple[bool, CommandOutput]"]

# Arguments that make a command run as another user (or somewhere only that user
# may enter): a transfer with any of them is staged and copied by that user.
ESCALATION_ARGUMENTS = (
    "_sudo",
    "_sudo_user",
    "_use_sudo_login",
    "_preserve_sudo_env",
    "_doas",
    "_doas_user",
    "_dzdo",
    "_dzdo_user",
    "_su_user",
    "_use_su_login",
    "_preserve_su_env",
    "_su_shell",
    # Only an escalated user may be able to enter it (as with pyinfra's @ssh).
    "_chdir",
)


class Transfers:
    """One host's file transfers."""

    def __init__(self, host: Host, binary: HostBinary, target: Target, run_shell: RunShell) -> None:
        self.host = host
        self.binary = binary
        self.target = target
        self.run_shell = run_shell

    def put(
        self,
        local_path: str,
        remote_filename: str,
        remote_temp_filename: str | None,
        print_input: bool,
        arguments: dict[str, Any],
    ) -> None:
        """Upload local_path to remote_filename, as the user the arguments escalate to."""
        target_user = escalation_target(arguments)
        if target_user is None:
            self.transfer("file.put", local_path, remote_filename)
            return
        temp_root = self.temp_root(remote_temp_filename, arguments)
        self.put_escalated(local_path, remote_filename, target_user, temp_root, arguments, print_input)

    def get(
        self,
        remote_filename: str,
        local_path: str,
        remote_temp_filename: str | None,
        print_input: bool,
        arguments: dict[str, Any],
    ) -> None:
        """Download remote_filename to local_path, read as the user the arguments escalate to."""
        if escalation_target(arguments) is None:
            self.transfer("file.get", local_path, remote_filename)
            return
        temp_root = self.temp_root(remote_temp_filename, arguments)
        self.get_escalated(remote_filename, local_path, temp_root, arguments, print_input)

    def transfer(self, method: str, local_path: str, remote_path: str) -> None:
        """One plain `file.put`/`file.get` as the connector user; OSError on failure."""
        params = {
            "machine": self.target.machine,
            "user": self.target.user,
            "local_path": local_path,
            "remote_path": remote_path,
        }
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
                raise OSError(message) from None

    def temp_root(self, remote_temp_filename: str | None, arguments: dict[str, Any]) -> str:
        """Where staging directories go: where pyinfra asks for temp files.

        pyinfra derives `remote_temp_filename` from `_temp_dir` (or the machine's
        TMPDIR); @ssh stages at that very path, we in a private directory beside it.
        """
        if remote_temp_filename:
            return posixpath.dirname(remote_temp_filename) or "."
        return str(arguments.get("_temp_dir") or self.host.get_temp_dir_config())  # type: ignore[no-untyped-call]

    def put_escalated(
        self,
        local_path: str,
        remote_filename: str,
        target_user: str,
        temp_root: str,
        arguments: dict[str, Any],
        print_input: bool,
    ) -> None:
        # Upload as the connector user into a private directory, then copy into
        # place as the target user: a temp file next to the destination, renamed
        # over it, so the destination is replaced whole or not at all.
        plain_arguments = without_escalation(arguments)
        shared_with_other_user = target_user != "root"
        stage_dir = self.make_stage_dir(temp_root, plain_arguments, print_input, shared_with_other_user)
        try:
            staged = f"{stage_dir}/{secrets.token_hex(8)}"
            self.transfer("file.put", local_path, staged)
            if shared_with_other_user:
                self.check(f"chmod 0644 {shlex.quote(staged)}", plain_arguments, print_input)
            dest_dir = posixpath.dirname(remote_filename) or "."
            temp = f"{dest_dir}/.{posixpath.basename(remote_filename)}.pyinfra-{secrets.token_hex(6)}"
            q_temp, q_dest = shlex.quote(temp), shlex.quote(remote_filename)
            # A directory at the destination is an error, as with the binary's own
            # put: `mv` would quietly move the file into it.
            script = (
                f"if [ -d {q_dest} ]; then printf '%s: is a directory\\n' {q_dest} >&2; exit 1; fi && "
                f"trap {shlex.quote(f'rm -f -- {q_temp}')} EXIT && cat -- {shlex.quote(staged)} > {q_temp} && "
                f"if [ -e {q_dest} ]; then chmod \"$(stat -c %a -- {q_dest})\" {q_temp} && "
                f"{{ chown \"$(stat -c %u:%g -- {q_dest})\" {q_temp} 2>/dev/null || true; }}; fi && "
                f"mv -f -- {q_temp} {q_dest}"
            )
            # Errors name the destination, as the binary's do, not the temp file.
            self.check(script, arguments, print_input,
                       failure=f"writing {remote_filename} on {self.target.machine} failed")
        finally:
            self.remove_stage_dir(stage_dir, plain_arguments, print_input)

    def get_escalated(
        self,
        remote_filename: str,
        local_path: str,
        temp_root: str,
        arguments: dict[str, Any],
        print_input: bool,
    ) -> None:
        # The target user copies the file into a directory only it can list
        # (mode 0711, random file name), where the connector user can read it.
        name = secrets.token_hex(8)
        script = (
            f"d=$(mktemp -d {shlex.quote(temp_root + '/pyinfra-orbstack-XXXXXXXX')}) && "
            f"chmod 0711 \"$d\" && cat -- {shlex.quote(remote_filename)} > \"$d/{name}\" && "
            f"chmod 0644 \"$d/{name}\" && echo \"$d\" || {{ rm -rf \"$d\"; exit 1; }}"
        )
        output = self.check(script, arguments, print_input,
                            failure=f"reading {remote_filename} on {self.target.machine} failed")
        stage_dir = output.stdout_lines[-1]
        try:
            self.transfer("file.get", local_path, f"{stage_dir}/{name}")
        finally:
            self.remove_stage_dir(stage_dir, arguments, print_input)

    def make_stage_dir(
        self, temp_root: str, arguments: dict[str, Any], print_input: bool, shared_with_other_user: bool,
    ) -> str:
        mode = "0711" if shared_with_other_user else "0700"
        output = self.check(
            f"d=$(mktemp -d {shlex.quote(temp_root + '/pyinfra-orbstack-XXXXXXXX')}) && "
            f"chmod {mode} \"$d\" && echo \"$d\"",
            arguments,
            print_input,
        )
        return output.stdout_lines[-1]

    def remove_stage_dir(self, stage_dir: str, arguments: dict[str, Any], print_input: bool) -> None:
        try:
            ok, output = self.run_shell(
                StringCommand("rm", "-rf", shlex.quote(stage_dir)),
                print_input=print_input,
                **arguments,
            )
            if not ok:
                reason = output.stderr or output.stdout or "rm failed (was the run interrupted?)"
                logger.warning(f"{self.host.print_prefix}could not remove {stage_dir}: {reason}")
        except OSError as e:
            logger.warning(f"{self.host.print_prefix}could not remove {stage_dir}: {e}")

    def check(self, script: str, arguments: dict[str, Any], print_input: bool, failure: str = "") -> CommandOutput:
        ok, output = self.run_shell(StringCommand(script), print_input=print_input, **arguments)
        if not ok:
            detail = output.stderr or output.stdout or f"command failed: {script}"
            raise OSError(f"{failure}: {detail}" if failure else detail)
        return output


def escalation_target(arguments: dict[str, Any]) -> str | None:
    """The user an escalated command runs as, or None if it is not escalated."""
    if arguments.get("_su_user"):
        return str(arguments["_su_user"])
    for flag in ("_sudo", "_doas", "_dzdo"):
        if arguments.get(flag):
            return str(arguments.get(f"{flag}_user") or "root")
    return None


def without_escalation(arguments: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in arguments.items() if k not in ESCALATION_ARGUMENTS}
