"""Connecting a host: `machine.connect` with the host's data, the one-time check of
`orbstack_user`/`orbstack_workdir`, and connect errors that say what to do next.

Every failure is a ConnectError (the only exception pyinfra reports per host on
connect); the caller releases its hold on the binary.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from typing import Any

from pyinfra import logger
from pyinfra.api.exceptions import ConnectError
from pyinfra.api.host import Host

from . import _rpc
from ._hostdata import OrbStackConnectorData, connect_params


def connect_machine(
    client: _rpc.RPCClient,
    host: Host,
    data: OrbStackConnectorData,
    on_reply: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Look the machine up (starting or creating it as the data says); its `Machine`.
    on_reply, when given, is told `machine.connect`'s reply (deploy metrics).

    Raises ConnectError saying what to do.
    """
    name = data["orbstack_machine"]
    try:
        reply = client.call(
            "machine.connect",
            connect_params(data),
            timeout=connect_wait(client, data),
        )
    except _rpc.RPCError as e:
        raise ConnectError(connect_error_message(e, data)) from None
    except (ConnectionError, TimeoutError) as e:
        raise ConnectError(f"OrbStack machine `{name}`: {e}") from None

    if on_reply is not None:
        on_reply(reply)
    machine: dict[str, Any] = reply.get("machine") or {}
    state = machine.get("state", "running")
    if state != "running":
        raise ConnectError(
            f"OrbStack machine `{name}` is {state} and `orbstack_start` is off: "
            f"start it (`orbctl start {name}`) or drop `orbstack_start=False`.",
        )
    if reply.get("created"):
        logger.info(f"{host.print_prefix}Created OrbStack machine: {name}")
    elif reply.get("started"):
        logger.info(f"{host.print_prefix}Started stopped OrbStack machine: {name}")
    problem = user_and_workdir_problem(client, data, machine)
    if problem:
        raise ConnectError(problem)
    return machine


def connect_wait(client: _rpc.RPCClient, data: OrbStackConnectorData) -> float | None:
    """How long to wait for a reply bounded by `orbstack_connect_timeout` (0: the binary's default)."""
    timeout = data["orbstack_connect_timeout"] or client.default_connect_timeout
    return timeout + _rpc.TIMEOUT_GRACE_SECONDS if timeout else None


def user_and_workdir_problem(
    client: _rpc.RPCClient,
    data: OrbStackConnectorData,
    machine: dict[str, Any],
) -> str | None:
    """What is wrong with `orbstack_user`/`orbstack_workdir`, if either is set.

    Checked once here, as @ssh checks its login: otherwise every command would
    fail (no such user) or, worse, run in `/` (orbctl's fallback for a missing
    directory).
    """
    user, workdir = data["orbstack_user"], data["orbstack_workdir"]
    if not user and not workdir:
        return None
    name = data["orbstack_machine"]
    command = f"test -d {shlex.quote(workdir)} || exit 3" if workdir else "true"
    try:
        result = client.call(
            "command.run",
            {"machine": name, "command": command, "user": user or "", "workdir": ""},
            timeout=connect_wait(client, data),
        )
    except _rpc.RPCError as e:
        if e.code == _rpc.BAD_ARGUMENT:
            default = machine.get("default_user")
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


def connect_error_message(error: _rpc.RPCError, data: OrbStackConnectorData) -> str:
    """A `machine.connect` error as one sentence saying what to do."""
    name = data["orbstack_machine"]
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
        return (
            f"No OrbStack machine named `{name}` ({existing}). Create it with "
            f"`orbctl create debian {name}`, or set `orbstack_image` in its inventory "
            "data to let pyinfra create it."
        )
    if error.code == _rpc.NOT_READY:
        return (
            f"OrbStack machine `{name}` did not become ready in time ({error.message}): check "
            f"`orbctl logs {name}`, or set a longer `orbstack_connect_timeout`."
        )
    if error.code == _rpc.BAD_ARGUMENT:  # the binary checks the name (and says what is wrong)
        return f"Invalid OrbStack machine `{name}`: {error.message}: check the spelling."
    if (error.data.get("orbctl_args") or [""])[0] == "start":
        return (
            f"Could not start OrbStack machine `{name}`: {error.message} "
            f"(see `orbctl logs {name}`)."
        )
    return f"OrbStack machine `{name}`: {error.message}"
