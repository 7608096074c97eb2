"""Running one pyinfra command in a machine: `command.run` through the binary.

pyinfra's own helpers build the command (sudo, su, doas, env, chdir, shell,
askpass passwords) and retry it once with a prompted sudo password; this module
sends the result, with stdin and timeout, streams the output back into pyinfra's
CommandOutput (printed live when pyinfra asks), and turns failures into what
pyinfra expects: TimeoutError, OSError, ConnectionError.
"""

from __future__ import annotations

import base64
import signal
from collections.abc import Iterable
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from pyinfra import logger
from pyinfra.api.command import StringCommand
from pyinfra.api.host import Host
from pyinfra.api.output import echo, format_text
from pyinfra.api.state import State
from pyinfra.connectors.util import (
    CommandOutput,
    OutputLine,
    execute_command_with_sudo_retry,
    extract_control_arguments,
    make_unix_command_for_host,
)

from . import _rpc
from ._shared import HostBinary

if TYPE_CHECKING:
    from pyinfra.api.arguments import ConnectorArguments

# What pyinfra accepts as `_stdin`.
Stdin = str | bytes | Iterable[str | bytes] | IO[Any] | None


class OrbStackOperationError(OSError):
    """A request the binary could not carry out (pyinfra reports OSErrors per host)."""


@dataclass(frozen=True)
class Target:
    """Where a host's commands and transfers run: machine, user ("" = default), directory."""

    machine: str
    user: str = ""
    workdir: str = ""


def run_shell_command(
    state: State,
    host: Host,
    binary: HostBinary,
    target: Target,
    command: StringCommand | str,
    print_output: bool,
    print_input: bool,
    arguments: ConnectorArguments,
) -> tuple[bool, CommandOutput]:
    """pyinfra's `run_shell_command`: (success, output)."""
    control = extract_control_arguments(arguments)
    timeout = control.get("_timeout")
    success_exit_codes = control.get("_success_exit_codes")
    # _get_pty is accepted and ignored: orbctl connects the command to pipes.
    stdin_b64 = encode_stdin(control.get("_stdin"))

    def execute_command() -> tuple[int, CommandOutput]:
        # Rebuilt on every call so a sudo password retry picks up the password.
        unix_command = make_unix_command_for_host(
            state, host, command, **arguments  # type: ignore[arg-type]  # pyinfra takes str too
        )
        logger.debug("--> Running command on %s: %s", host.name, unix_command)  # masked
        if print_input:
            echo(f"{host.print_prefix}>>> {unix_command}", err=True)
        return run(binary, target, unix_command.get_raw_value(), stdin_b64, timeout, print_output,
                   host.print_prefix)

    return_code, output = execute_command_with_sudo_retry(host, arguments, execute_command)
    if success_exit_codes:
        return return_code in success_exit_codes, output
    return return_code == 0, output


def run(
    binary: HostBinary,
    target: Target,
    raw_command: str,
    stdin_b64: str | None,
    timeout: float | None,
    print_output: bool,
    print_prefix: str,
) -> tuple[int, CommandOutput]:
    """One `command.run`: (exit code, output). Raises TimeoutError, OSError, ConnectionError."""
    lines: list[OutputLine] = []
    assembler = _rpc.OutputLines()

    def take(completed: list[tuple[str, list[str]]]) -> None:
        # Output comes in runs of many lines: pyinfra's per-line objects are
        # made here, one comprehension per run; printing (-vvv, exec) is per line.
        for stream, texts in completed:
            lines.extend([OutputLine(stream, text) for text in texts])
            if print_output:
                for text in texts:
                    shown = format_text(text, "red") if stream == "stderr" else text
                    echo(f"{print_prefix}{shown}", err=True)

    def on_output(runs: list[tuple[str, str]]) -> None:
        take(assembler.feed(runs))

    params: dict[str, Any] = {
        "machine": target.machine,
        "command": raw_command,
        "user": target.user,
        "workdir": target.workdir,
    }
    if stdin_b64 is not None:
        params["stdin_b64"] = stdin_b64
    if timeout:
        params["timeout"] = timeout

    with binary.for_call() as client:
        try:
            result = client.call(
                "command.run",
                params,
                timeout=timeout + _rpc.TIMEOUT_GRACE_SECONDS if timeout else None,
                on_output=on_output,
            )
        except _rpc.BinaryGoneError as e:
            if not e.interrupted:
                raise
            # Ctrl-C reached the binary and this command with pyinfra: report
            # the command as interrupted (128+SIGINT), as @local reports its own.
            take(assembler.end())
            return 128 + signal.SIGINT, CommandOutput(lines)
        except _rpc.RequestRefused as e:
            raise OrbStackOperationError(f"`{target.machine}`: {e}") from None
        except _rpc.RPCError as e:
            if e.code == _rpc.TIMEOUT:
                raise TimeoutError(
                    f"command timed out after {timeout} s and was killed in machine `{target.machine}`",
                ) from None
            raise OrbStackOperationError(f"`{target.machine}`: {e.message}") from None
    take(assembler.end())
    return int(result["exit_code"]), CommandOutput(lines)


def encode_stdin(stdin: Stdin) -> str | None:
    """pyinfra's `_stdin` (str, bytes, list of lines, or IO) as base64, like write_stdin.

    Each line gets a trailing newline if it lacks one, as pyinfra's own connectors do.
    """
    if stdin is None or (isinstance(stdin, (str, bytes, list, tuple)) and not stdin):
        return None  # pyinfra writes nothing for an empty payload either
    lines: Iterable[str | bytes]
    if isinstance(stdin, (str, bytes)):
        lines = [stdin]
    elif hasattr(stdin, "readlines"):
        lines = stdin.readlines()
    else:
        lines = stdin
    chunks = []
    for line in lines:
        data = line.encode() if isinstance(line, str) else bytes(line)
        if not data.endswith(b"\n"):
            data += b"\n"
        chunks.append(data)
    return base64.b64encode(b"".join(chunks)).decode("ascii")
