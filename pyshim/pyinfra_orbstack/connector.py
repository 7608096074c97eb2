"""The `@orbstack` pyinfra connector: a thin shim over the `pyinfra-orbstack` binary.

Commands are built with pyinfra's own helpers (sudo, su, env, chdir, shell) and
sent to the binary, which runs them in the machine through orbctl and streams
their output back. See docs/connector.md for use, docs/architecture.md for design.
"""

from __future__ import annotations

import base64
import os
import posixpath
import re
import secrets
import shlex
import shutil
import signal
import stat
import tempfile
from io import IOBase
from typing import TYPE_CHECKING, Any, Iterator

import gevent
from typing_extensions import TypedDict, Unpack, override

from pyinfra import logger
from pyinfra.api.command import StringCommand
from pyinfra.api.exceptions import ConnectError, InventoryError
from pyinfra.api.output import echo, format_text
from pyinfra.api.util import get_file_io
from pyinfra.connectors.base import BaseConnector, DataMeta
from pyinfra.connectors.util import (
    CommandOutput,
    OutputLine,
    execute_command_with_sudo_retry,
    extract_control_arguments,
    make_unix_command_for_host,
    remove_any_sudo_askpass_file,
)

from . import _binary, _inventory, _rpc, _shared

if TYPE_CHECKING:
    from pyinfra.api.arguments import ConnectorArguments

DEFAULT_CONNECT_TIMEOUT = 120

# Extra time the binary gets past a command's own timeout to kill it inside the
# machine (SIGTERM, then SIGKILL after 2 s) and reply, before we give up on it.
TIMEOUT_GRACE_SECONDS = 10

# Spooling IO objects to disk in chunks, yielding to other greenlets in between.
SPOOL_CHUNK_BYTES = 1 << 20

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


RSYNC_UNSUPPORTED = (
    "The @orbstack connector does not support files.rsync: OrbStack machines are "
    "reached through orbctl, not SSH. Use files.sync instead (it uploads only the "
    "files that changed, with files.put)."
)


class OrbStackOperationError(OSError):
    """A request the binary could not carry out (pyinfra reports OSErrors per host)."""


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
        "Seconds to wait on connect for the machine to start and answer commands.",
        DEFAULT_CONNECT_TIMEOUT,
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
}


class OrbStackConnector(BaseConnector):
    """
    The ``@orbstack`` connector runs commands in OrbStack Linux machines, through
    the ``pyinfra-orbstack`` binary and ``orbctl``. Use ``@orbstack/NAME`` for one
    machine, or ``@orbstack`` for every machine (grouped as ``orbstack_running``,
    ``orbstack_<distro>``, ``orbstack_<arch>``). A stopped machine is started on connect.

    Examples:

    .. code:: shell

        # Run a deploy against the machine named "web"
        pyinfra @orbstack/web deploy.py

        # Run a command on every machine
        pyinfra @orbstack exec -- uname -a
    """

    handles_execution = True

    data_cls = OrbStackConnectorData
    data_meta = connector_data_meta

    def __init__(self, state, host):
        super().__init__(state, host)
        # Kept cheap: pyinfra builds every host's connector before connecting any.
        self.machine: dict[str, Any] = {}
        self._shared = _shared.for_state(state)
        self._holds_binary = False
        self._local_temp_dir: str | None = None

    @override
    @staticmethod
    def make_names_data(name=None) -> Iterator[tuple[str, dict, list[str]]]:
        if name is None:
            yield from _inventory.all_machines_names_data()
            return
        if not name or "/" in name:
            raise InventoryError(
                f"Invalid @orbstack host `@orbstack/{name}`: use `@orbstack/MACHINE` "
                "for one machine or `@orbstack` for all of them.",
            )
        yield f"@orbstack/{name}", {"orbstack_machine": name}, ["@orbstack"]

    @property
    def machine_name(self) -> str:
        return self.data["orbstack_machine"]

    # -- connect / disconnect

    @override
    def connect(self) -> None:
        client = self._acquire_binary()
        try:
            reply = client.call(
                "machine.connect",
                self._connect_params(),
                timeout=self.data["orbstack_connect_timeout"] + TIMEOUT_GRACE_SECONDS,
            )
        except _rpc.RPCError as e:
            self._release_binary()
            raise ConnectError(self._connect_error_message(e)) from None
        except (ConnectionError, TimeoutError) as e:
            self._release_binary()
            raise ConnectError(f"OrbStack machine `{self.machine_name}`: {e}") from None

        self.machine = reply.get("machine") or {}
        state = self.machine.get("state", "running")
        if state != "running":
            self._release_binary()
            raise ConnectError(
                f"OrbStack machine `{self.machine_name}` is {state} and `orbstack_start` is off: "
                f"start it (`orbctl start {self.machine_name}`) or drop `orbstack_start=False`.",
            )
        if reply.get("created"):
            logger.info(f"{self.host.print_prefix}Created OrbStack machine: {self.machine_name}")
        elif reply.get("started"):
            logger.info(f"{self.host.print_prefix}Started stopped OrbStack machine: {self.machine_name}")
        problem = self._check_user_and_workdir(client)
        if problem:
            self._release_binary()
            raise ConnectError(problem)
        self._publish_machine_data()

    def _check_user_and_workdir(self, client: _rpc.RPCClient) -> str | None:
        """What is wrong with `orbstack_user`/`orbstack_workdir`, if either is set.

        Checked once here, as @ssh checks its login: otherwise every command would
        fail (no such user) or, worse, run in `/` (orbctl's fallback for a missing
        directory).
        """
        user, workdir = self.data["orbstack_user"], self.data["orbstack_workdir"]
        if not user and not workdir:
            return None
        name = self.machine_name
        command = f"test -d {shlex.quote(workdir)} || exit 3" if workdir else "true"
        try:
            result = client.call(
                "command.run",
                {"machine": name, "command": command, "user": user or "", "workdir": ""},
                timeout=self.data["orbstack_connect_timeout"] + TIMEOUT_GRACE_SECONDS,
            )
        except _rpc.RPCError as e:
            if e.code == _rpc.BAD_ARGUMENT:
                default = self.machine.get("default_user")
                return (
                    f"OrbStack machine `{name}`: {e.message}: create that user, or set "
                    f"`orbstack_user` to one that exists"
                    f"{f' (or drop it to use the default user, {default})' if default else ''}."
                )
            return f"OrbStack machine `{name}`: {e.message}"
        except (ConnectionError, TimeoutError) as e:
            return f"OrbStack machine `{name}`: {e}"
        if int(result["exit_code"]) != 0:
            return (
                f"OrbStack machine `{name}` has no directory {workdir} (`orbstack_workdir`): "
                "create it, or point `orbstack_workdir` at an existing directory."
            )
        return None

    @override
    def disconnect(self) -> None:
        # pyinfra removes its sudo askpass files right after disconnect(); done
        # here, while the binary still runs, that does not start it again.
        remove_any_sudo_askpass_file(self.host)
        self._release_binary()
        if self._local_temp_dir:
            shutil.rmtree(self._local_temp_dir, ignore_errors=True)
            self._local_temp_dir = None

    def _connect_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            "machine": self.machine_name,
            "start": bool(self.data["orbstack_start"]),
            "timeout": self.data["orbstack_connect_timeout"],
            "create": None,
        }
        if self.data["orbstack_image"]:
            create: dict[str, Any] = {
                "image": self.data["orbstack_image"],
                "arch": self.data["orbstack_arch"] or None,
                "user": self.data["orbstack_user"] or None,
            }
            # Only what the inventory sets, so older binaries and OrbStacks see no new keys.
            if self.data["orbstack_isolated"]:
                create["isolated"] = True
            if self.data["orbstack_cpus"]:
                create["cpus"] = self.data["orbstack_cpus"]
            for key in ("memory", "disk"):
                if self.data[f"orbstack_{key}"]:
                    create[key] = self.data[f"orbstack_{key}"]
            if self.data["orbstack_user_data"]:
                create["user_data"] = os.path.abspath(os.path.expanduser(self.data["orbstack_user_data"]))
            params["create"] = create
        return params

    def _acquire_binary(self) -> _rpc.RPCClient:
        if self._holds_binary:  # connecting again (e.g. after server.reboot)
            client = self._shared.client
            if client is not None and client.alive:
                return client
            self._release_binary()
        try:
            client = self._shared.acquire()
        except _binary.BinaryNotFoundError as e:
            raise ConnectError(str(e)) from None
        except _shared.ProtocolMismatchError as e:
            raise ConnectError(str(e)) from None
        except (OSError, TimeoutError) as e:
            raise ConnectError(f"could not start the pyinfra-orbstack binary: {e}") from None
        self._holds_binary = True
        return client

    def _release_binary(self) -> None:
        if self._holds_binary:
            self._holds_binary = False
            self._shared.release()

    def _connect_error_message(self, error: _rpc.RPCError) -> str:
        name = self.machine_name
        if error.code == _rpc.ORBCTL_NOT_FOUND:
            searched_list = error.data.get("searched") or []
            if len(searched_list) == 1 and searched_list[0].startswith("PYINFRA_ORBSTACK_ORBCTL="):
                # The user chose a path: say that path is wrong, not "install OrbStack".
                return (
                    f"{error.message}: point PYINFRA_ORBSTACK_ORBCTL at OrbStack's orbctl "
                    "(`command -v orbctl` shows it), or unset it to search $PATH."
                )
            searched = ", ".join(searched_list)
            return (
                f"orbctl was not found{f' (looked in {searched})' if searched else ''}: "
                "install OrbStack from https://orbstack.dev, or set PYINFRA_ORBSTACK_ORBCTL "
                "to orbctl's path."
            )
        if error.code == _rpc.ORBSTACK_NOT_RUNNING:
            return (
                f"OrbStack is not running and could not be started ({error.message}): "
                "open the OrbStack app or run `orbctl start`, then try again."
            )
        if error.code == _rpc.MACHINE_NOT_FOUND:
            available = error.data.get("available") or []
            existing = (
                f"existing machines: {', '.join(available)}" if available else "there are no machines yet"
            )
            if not _valid_machine_name(name):
                # Suggesting `orbctl create` would only lead to orbctl refusing the name.
                return (
                    f"No OrbStack machine named `{name}` ({existing}); `{name}` is not even a valid "
                    "machine name (letters, digits, `-` and `.`, at least 2 characters, starting "
                    "with a letter or digit; not a reserved word): check the spelling."
                )
            return (
                f"No OrbStack machine named `{name}` ({existing}). Create it with "
                f"`orbctl create debian {name}`, or set `orbstack_image` in its inventory "
                "data to let pyinfra create it."
            )
        if error.code == _rpc.NOT_READY:
            return (
                f"OrbStack machine `{name}` did not become ready within "
                f"{self.data['orbstack_connect_timeout']} s ({error.message}): check "
                f"`orbctl logs {name}`, or raise `orbstack_connect_timeout`."
            )
        if error.code == _rpc.BAD_ARGUMENT:
            return f"Invalid OrbStack machine `{name}`: {error.message}"
        if (error.data.get("orbctl_args") or [""])[0] == "start":
            return (
                f"Could not start OrbStack machine `{name}`: {error.message} "
                f"(see `orbctl logs {name}`)."
            )
        return f"OrbStack machine `{name}`: {error.message}"

    def _publish_machine_data(self) -> None:
        # Facts and deploys can read these (host.data.orbstack_ip4 and so on).
        for key, field in (
            ("orbstack_distro", "distro"),
            ("orbstack_version", "version"),
            ("orbstack_arch", "arch"),
            ("orbstack_default_user", "default_user"),
            ("orbstack_ip4", "ip4"),
        ):
            value = self.machine.get(field)
            if value:
                setattr(self.host.data, key, value)
                self.data[key] = value

    # -- commands

    @override
    def run_shell_command(
        self,
        command: StringCommand | str,
        print_output: bool = False,
        print_input: bool = False,
        **arguments: Unpack[ConnectorArguments],
    ) -> tuple[bool, CommandOutput]:
        control = extract_control_arguments(arguments)
        timeout = control.get("_timeout")
        success_exit_codes = control.get("_success_exit_codes")
        # _get_pty is accepted and ignored: orbctl connects the command to pipes.
        stdin_b64 = _encode_stdin(control.get("_stdin"))

        def execute_command() -> tuple[int, CommandOutput]:
            # Rebuilt on every call so a sudo password retry picks up the password.
            unix_command = make_unix_command_for_host(self.state, self.host, command, **arguments)
            logger.debug("--> Running command on %s: %s", self.host.name, unix_command)  # masked
            if print_input:
                echo(f"{self.host.print_prefix}>>> {unix_command}", err=True)
            return self._run(unix_command.get_raw_value(), stdin_b64, timeout, print_output)

        return_code, output = execute_command_with_sudo_retry(self.host, arguments, execute_command)
        if success_exit_codes:
            return return_code in success_exit_codes, output
        return return_code == 0, output

    def _run(
        self,
        raw_command: str,
        stdin_b64: str | None,
        timeout: float | None,
        print_output: bool,
    ) -> tuple[int, CommandOutput]:
        lines: list[OutputLine] = []
        prefix = self.host.print_prefix

        def on_output(stream: str, line: str) -> None:
            lines.append(OutputLine(stream, line))
            if print_output:
                shown = format_text(line, "red") if stream == "stderr" else line
                echo(f"{prefix}{shown}", err=True)

        params: dict[str, Any] = {
            "machine": self.machine_name,
            "command": raw_command,
            "user": self.data["orbstack_user"] or "",
            "workdir": self.data["orbstack_workdir"] or "",
        }
        if stdin_b64 is not None:
            params["stdin_b64"] = stdin_b64
        if timeout:
            params["timeout"] = timeout

        with self._binary_for_call() as client:
            try:
                result = client.call(
                    "command.run",
                    params,
                    timeout=timeout + TIMEOUT_GRACE_SECONDS if timeout else None,
                    on_output=on_output,
                )
            except _rpc.BinaryGoneError as e:
                if not e.interrupted:
                    raise
                # Ctrl-C reached the binary and this command with pyinfra: report
                # the command as interrupted (128+SIGINT), as @local reports its own.
                return 128 + signal.SIGINT, CommandOutput(lines)
            except _rpc.RequestRefused as e:
                raise OrbStackOperationError(f"`{self.machine_name}`: {e}") from None
            except _rpc.RPCError as e:
                if e.code == _rpc.TIMEOUT:
                    raise TimeoutError(
                        f"command timed out after {timeout} s and was killed in "
                        f"machine `{self.machine_name}`",
                    ) from None
                raise OrbStackOperationError(f"`{self.machine_name}`: {e.message}") from None
        return int(result["exit_code"]), CommandOutput(lines)

    def _binary_for_call(self):
        """The shared binary; a host that already disconnected borrows it for one call.

        pyinfra runs `rm` of its sudo askpass file after disconnect().
        """
        return _BinaryLease(self)

    # -- files

    @override
    def put_file(
        self,
        filename_or_io: str | IOBase,
        remote_filename: str,
        remote_temp_filename: str | None = None,  # only its directory is used (see _temp_root)
        print_output: bool = False,
        print_input: bool = False,
        **arguments: Unpack[ConnectorArguments],
    ) -> bool:
        command_arguments = dict(arguments)
        extract_control_arguments(command_arguments)
        target_user = _escalation_target(command_arguments)

        with self._local_source(filename_or_io) as local_path:
            if target_user is None:
                self._transfer("file.put", local_path, remote_filename)
            else:
                temp_root = self._temp_root(remote_temp_filename, command_arguments)
                self._put_escalated(local_path, remote_filename, target_user, temp_root,
                                    command_arguments, print_input)

        if print_output:
            echo(f"{self.host.print_prefix}file uploaded: {remote_filename}", err=True)
        return True

    @override
    def get_file(
        self,
        remote_filename: str,
        filename_or_io: str | IOBase,
        remote_temp_filename: str | None = None,  # only its directory is used (see _temp_root)
        print_output: bool = False,
        print_input: bool = False,
        **arguments: Unpack[ConnectorArguments],
    ) -> bool:
        command_arguments = dict(arguments)
        extract_control_arguments(command_arguments)
        target_user = _escalation_target(command_arguments)

        with self._local_destination(filename_or_io) as local_path:
            if target_user is None:
                self._transfer("file.get", local_path, remote_filename)
            else:
                temp_root = self._temp_root(remote_temp_filename, command_arguments)
                self._get_escalated(remote_filename, local_path, temp_root, command_arguments, print_input)

        if print_output:
            echo(f"{self.host.print_prefix}file downloaded: {remote_filename}", err=True)
        return True

    @override
    def check_can_rsync(self) -> None:
        raise NotImplementedError(RSYNC_UNSUPPORTED)

    @override
    def rsync(self, src, dest, flags, print_output=False, print_input=False, **arguments) -> bool:
        raise NotImplementedError(RSYNC_UNSUPPORTED)

    def _transfer(self, method: str, local_path: str, remote_path: str) -> None:
        params = {
            "machine": self.machine_name,
            "user": self.data["orbstack_user"] or "",
            "local_path": local_path,
            "remote_path": remote_path,
        }
        if method == "file.put":
            params["mode"] = ""
        with self._binary_for_call() as client:
            try:
                client.call(method, params)
            except _rpc.BinaryGoneError:
                if method == "file.get":
                    _remove_download_parts(local_path, client.pid)
                raise
            except _rpc.RequestRefused as e:
                raise OSError(str(e)) from None
            except _rpc.RPCError as e:
                # The binary's message normally names the path already.
                message = e.message if remote_path in e.message else f"{remote_path}: {e.message}"
                raise OSError(message) from None

    def _temp_root(self, remote_temp_filename: str | None, arguments) -> str:
        """Where staging directories go: where pyinfra asks for temp files.

        pyinfra derives `remote_temp_filename` from `_temp_dir` (or the machine's
        TMPDIR); @ssh stages at that very path, we in a private directory beside it.
        """
        if remote_temp_filename:
            return posixpath.dirname(remote_temp_filename) or "."
        return arguments.get("_temp_dir") or self.host.get_temp_dir_config()

    def _put_escalated(self, local_path, remote_filename, target_user, temp_root, arguments,
                       print_input) -> None:
        # Upload as the connector user into a private directory, then copy into
        # place as the target user: a temp file next to the destination, renamed
        # over it, so the destination is replaced whole or not at all.
        plain_arguments = _without_escalation(arguments)
        shared_with_other_user = target_user != "root"
        stage_dir = self._make_stage_dir(temp_root, plain_arguments, print_input, shared_with_other_user)
        try:
            staged = f"{stage_dir}/{secrets.token_hex(8)}"
            self._transfer("file.put", local_path, staged)
            if shared_with_other_user:
                self._check(f"chmod 0644 {shlex.quote(staged)}", plain_arguments, print_input)
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
            self._check(script, arguments, print_input,
                        failure=f"writing {remote_filename} on {self.machine_name} failed")
        finally:
            self._remove_stage_dir(stage_dir, plain_arguments, print_input)

    def _get_escalated(self, remote_filename, local_path, temp_root, arguments, print_input) -> None:
        # The target user copies the file into a directory only it can list
        # (mode 0711, random file name), where the connector user can read it.
        name = secrets.token_hex(8)
        script = (
            f"d=$(mktemp -d {shlex.quote(temp_root + '/pyinfra-orbstack-XXXXXXXX')}) && "
            f"chmod 0711 \"$d\" && cat -- {shlex.quote(remote_filename)} > \"$d/{name}\" && "
            f"chmod 0644 \"$d/{name}\" && echo \"$d\" || {{ rm -rf \"$d\"; exit 1; }}"
        )
        output = self._check(script, arguments, print_input,
                             failure=f"reading {remote_filename} on {self.machine_name} failed")
        stage_dir = output.stdout_lines[-1]
        try:
            self._transfer("file.get", local_path, f"{stage_dir}/{name}")
        finally:
            self._remove_stage_dir(stage_dir, arguments, print_input)

    def _make_stage_dir(self, temp_root: str, arguments, print_input, shared_with_other_user: bool) -> str:
        mode = "0711" if shared_with_other_user else "0700"
        output = self._check(
            f"d=$(mktemp -d {shlex.quote(temp_root + '/pyinfra-orbstack-XXXXXXXX')}) && "
            f"chmod {mode} \"$d\" && echo \"$d\"",
            arguments,
            print_input,
        )
        return output.stdout_lines[-1]

    def _remove_stage_dir(self, stage_dir: str, arguments, print_input) -> None:
        try:
            ok, output = self.run_shell_command(
                StringCommand("rm", "-rf", shlex.quote(stage_dir)),
                print_input=print_input,
                **arguments,
            )
            if not ok:
                reason = output.stderr or output.stdout or "rm failed (was the run interrupted?)"
                logger.warning(f"{self.host.print_prefix}could not remove {stage_dir}: {reason}")
        except OSError as e:
            logger.warning(f"{self.host.print_prefix}could not remove {stage_dir}: {e}")

    def _check(self, script: str, arguments, print_input, failure: str = "") -> CommandOutput:
        ok, output = self.run_shell_command(StringCommand(script), print_input=print_input, **arguments)
        if not ok:
            detail = output.stderr or output.stdout or f"command failed: {script}"
            raise OSError(f"{failure}: {detail}" if failure else detail)
        return output

    # -- local side of transfers

    def _private_dir(self) -> str:
        if self._local_temp_dir is None:
            self._local_temp_dir = tempfile.mkdtemp(prefix="pyinfra-orbstack-")  # mode 0700
        return self._local_temp_dir

    def _local_source(self, filename_or_io):
        return _LocalSource(self, filename_or_io)

    def _local_destination(self, filename_or_io):
        return _LocalDestination(self, filename_or_io)


class _BinaryLease:
    def __init__(self, connector: OrbStackConnector):
        self.connector = connector
        self.borrowed = False

    def __enter__(self) -> _rpc.RPCClient:
        connector = self.connector
        if connector._holds_binary:
            client = connector._shared.client
            if client is None:
                raise _rpc.BinaryGoneError("the pyinfra-orbstack binary is not running")
            return client
        self.borrowed = True
        try:
            return connector._shared.acquire()
        except Exception as e:
            raise ConnectionError(f"could not start the pyinfra-orbstack binary: {e}") from None

    def __exit__(self, *exc) -> None:
        if self.borrowed:
            self.connector._shared.release()


class _LocalSource:
    """A local path the binary can read: the file itself, or an IO object spooled to disk."""

    def __init__(self, connector: OrbStackConnector, filename_or_io):
        self.connector = connector
        self.filename_or_io = filename_or_io
        self.spooled: str | None = None

    def __enter__(self) -> str:
        if isinstance(self.filename_or_io, str):
            return os.path.abspath(self.filename_or_io)
        fd, self.spooled = tempfile.mkstemp(dir=self.connector._private_dir())
        with os.fdopen(fd, "wb") as spool, get_file_io(self.filename_or_io) as source:
            while True:
                chunk = source.read(SPOOL_CHUNK_BYTES)
                if not chunk:
                    break
                spool.write(chunk.encode() if isinstance(chunk, str) else chunk)
                gevent.sleep(0)
        return self.spooled

    def __exit__(self, *exc) -> None:
        if self.spooled:
            try:
                os.remove(self.spooled)
            except OSError:
                pass


class _LocalDestination:
    """A local path the binary writes to; copied into the IO object afterwards."""

    def __init__(self, connector: OrbStackConnector, filename_or_io):
        self.connector = connector
        self.filename_or_io = filename_or_io
        self.spooled: str | None = None
        self.path: str | None = None
        self.mode = 0

    def __enter__(self) -> str:
        if isinstance(self.filename_or_io, str):
            self.path = os.path.abspath(self.filename_or_io)
            self.mode = _local_file_mode(self.path)
            return self.path
        self.spooled = os.path.join(self.connector._private_dir(), secrets.token_hex(8))
        return self.spooled

    def __exit__(self, exc_type, *exc) -> None:
        if self.path:
            if exc_type is None:
                # The binary renames a private (0600) file into place; give the
                # result the mode pyinfra's other connectors' open("wb") gives it.
                os.chmod(self.path, self.mode)
            return
        if not self.spooled:
            return
        try:
            if exc_type is None:
                with open(self.spooled, "rb") as spool:
                    with get_file_io(self.filename_or_io, "wb") as target:
                        while True:
                            chunk = spool.read(SPOOL_CHUNK_BYTES)
                            if not chunk:
                                break
                            target.write(chunk)
                            gevent.sleep(0)
        finally:
            try:
                os.remove(self.spooled)
            except OSError:
                pass


# OrbStack's rule for machine names (orbctl create refuses others).
VALID_MACHINE_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9.-]+$")
RESERVED_MACHINE_NAMES = frozenset({"default", "vm", "host", "services", "gateway", "k8s", "docker"})


def _remove_download_parts(local_path: str, pid: int) -> None:
    """Remove what a binary that died mid-`file.get` left next to local_path.

    It writes `.NAME.pyinfra-orbstack-PID-RANDOM.part` (docs/protocol.md,
    `file.get`); the PID makes sure no other download's part, and no file of
    the user's, is touched.
    """
    directory, name = os.path.split(local_path)
    prefix, suffix = f".{name}.pyinfra-orbstack-{pid}-", ".part"
    try:
        entries = os.listdir(directory or ".")
    except OSError:
        return
    for entry in entries:
        if entry.startswith(prefix) and entry.endswith(suffix):
            try:
                os.remove(os.path.join(directory, entry))
            except OSError as e:
                logger.warning(f"could not remove the partial download {entry}: {e}")


def _valid_machine_name(name: str) -> bool:
    return bool(VALID_MACHINE_NAME.match(name)) and name not in RESERVED_MACHINE_NAMES


def _local_file_mode(path: str) -> int:
    """An existing file's mode, or the one a new file gets (0666 less the umask)."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        umask = os.umask(0o022)  # reading the umask means setting it; put it back at once
        os.umask(umask)
        return 0o666 & ~umask


def _escalation_target(arguments: dict) -> str | None:
    """The user an escalated command runs as, or None if it is not escalated."""
    if arguments.get("_su_user"):
        return arguments["_su_user"]
    for flag in ("_sudo", "_doas", "_dzdo"):
        if arguments.get(flag):
            return arguments.get(f"{flag}_user") or "root"
    return None


def _without_escalation(arguments: dict) -> dict:
    return {k: v for k, v in arguments.items() if k not in ESCALATION_ARGUMENTS}


def _encode_stdin(stdin) -> str | None:
    """pyinfra's `_stdin` (str, bytes, list of lines, or IO) as base64, like write_stdin.

    Each line gets a trailing newline if it lacks one, as pyinfra's own connectors do.
    """
    if stdin is None or (isinstance(stdin, (str, bytes, list, tuple)) and not stdin):
        return None  # pyinfra writes nothing for an empty payload either
    if hasattr(stdin, "readlines"):
        stdin = stdin.readlines()
    if not isinstance(stdin, (list, tuple)):
        stdin = [stdin]
    chunks = []
    for line in stdin:
        data = line.encode() if isinstance(line, str) else bytes(line)
        if not data.endswith(b"\n"):
            data += b"\n"
        chunks.append(data)
    return base64.b64encode(b"".join(chunks)).decode("ascii")

