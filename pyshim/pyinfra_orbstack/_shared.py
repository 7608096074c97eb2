"""One shared `pyinfra-orbstack serve` process per pyinfra run (State) and Mac.

Hosts on this Mac share one; hosts on a remote Mac (`orbstack_mac`) share one
per Mac and ssh settings: a local `serve --mac HOST` relay whose one ssh
connection runs the binary on that Mac (docs/remote.md).

Started lazily by the first host's connect(), exactly once however many hosts
connect at the same moment, and shut down after the last host disconnects. An
atexit hook kills whatever is still running when Python exits (Ctrl-C, errors).
docs/architecture.md explains why one shared process rather than one per host.
"""

from __future__ import annotations

import atexit
import logging
import time
import weakref
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import gevent.lock

from . import _binary, _rpc
from ._version import __version__

logger = logging.getLogger("pyinfra.orbstack")

INITIALIZE_TIMEOUT_SECONDS = 10
# A remote Mac's handshake includes ssh's (its ConnectTimeout is 10 s) and the
# remote binary's start: the relay answers with its own error before this.
REMOTE_INITIALIZE_TIMEOUT_SECONDS = 45


class ProtocolMismatchError(RuntimeError):
    """The binary and this package come from different installs."""


class MacUnreachableError(RuntimeError):
    """A remote Mac could not be reached, or has no usable binary (the message says which and what to do)."""


class SharedBinary:
    """Reference-counted access to the run's one binary process."""

    def __init__(self, mac_flags: tuple[str, ...] = ()) -> None:
        self.mac_flags = mac_flags  # `serve --mac HOST …` for a remote Mac; () for this one
        self._lock = gevent.lock.Semaphore()
        self._client: _rpc.RPCClient | None = None
        self._users = 0
        self.initialize_result: dict[str, Any] = {}

    def acquire(self) -> _rpc.RPCClient:
        """Count one more user, starting (or restarting) the binary if needed.

        Raises BinaryNotFoundError, ProtocolMismatchError, or OSError/ConnectionError
        when the binary cannot be started or does not answer the handshake.
        """
        with self._lock:
            if self._client is None or not self._client.alive:
                self._client = self._start()
            self._users += 1
            return self._client

    def release(self) -> None:
        """Count one user less; the last one out shuts the binary down."""
        with self._lock:
            self._users = max(0, self._users - 1)
            if self._users == 0 and self._client is not None:
                client, self._client = self._client, None
                client.close()

    @property
    def client(self) -> _rpc.RPCClient | None:
        return self._client

    def _start(self) -> _rpc.RPCClient:
        argv = [_binary.find_binary(), "serve", *self.mac_flags]
        if logging.getLogger("pyinfra").isEnabledFor(logging.DEBUG):
            argv.append("--debug")
        client = _rpc.RPCClient(argv)
        _live_clients.add(client)
        logger.debug("started %s (pid %d)", " ".join(argv), client.pid)
        try:
            result = client.call(
                "initialize",
                {"protocol_version": _rpc.PROTOCOL_VERSION, "client_version": __version__},
                timeout=REMOTE_INITIALIZE_TIMEOUT_SECONDS if self.mac_flags else INITIALIZE_TIMEOUT_SECONDS,
            )
        except _rpc.RPCError as e:
            client.close()
            if e.data.get("mac"):  # the relay's words name the Mac and the fix
                if e.code == _rpc.PROTOCOL_MISMATCH:
                    raise ProtocolMismatchError(e.message) from None
                raise MacUnreachableError(e.message) from None
            if e.code == _rpc.PROTOCOL_MISMATCH:
                raise ProtocolMismatchError(
                    mismatch_message(argv[0], e.data.get("binary_protocol_version", "?")),
                ) from None
            raise ConnectionError(f"{argv[0]} refused the handshake: {e}") from None
        except _rpc.BinaryGoneError:
            client.close()
            # A relay refuses ssh settings ssh would misread (exit status 2, "Error: ...").
            refused = [line.removeprefix("Error: ") for line in client.stderr_lines if line.startswith("Error: ")]
            if self.mac_flags and refused:
                raise MacUnreachableError(f"{refused[0]}: fix this host's orbstack_mac / orbstack_ssh_* data") from None
            raise
        except BaseException:
            client.close()
            raise

        binary_protocol = (result or {}).get("protocol_version")
        if binary_protocol != _rpc.PROTOCOL_VERSION:
            client.close()
            raise ProtocolMismatchError(mismatch_message(argv[0], binary_protocol))
        self.initialize_result = result
        # An older binary does not say: it had no limit.
        client.max_frame = result.get("max_frame")
        client.default_connect_timeout = result.get("default_connect_timeout")
        return client


class HostBinary:
    """One host's hold on the shared binary, from connect() to disconnect().

    A host that already disconnected borrows the binary for a single call:
    pyinfra runs `rm` of its sudo askpass file after disconnect().
    """

    def __init__(self, shared: SharedBinary) -> None:
        self.shared = shared
        self.held = False
        # Deploy metrics (_metrics.py), when on: the call being measured, told the
        # time spent in requests to the binary.
        self.timing: Any = None

    def acquire(self) -> _rpc.RPCClient:
        """Hold the binary (starting it if needed); connecting again reuses a live hold.

        Raises what SharedBinary.acquire raises.
        """
        if self.held:  # connecting again (e.g. after server.reboot)
            client = self.shared.client
            if client is not None and client.alive:
                return client
            self.release()
        client = self.shared.acquire()
        self.held = True
        return client

    def release(self) -> None:
        if self.held:
            self.held = False
            self.shared.release()

    def for_call(self) -> AbstractContextManager[_rpc.RPCClient]:
        """The client for one call: the held one, or one borrowed for this call alone."""
        return self._for_call() if self.timing is None else self._timed_for_call()

    @contextmanager
    def _timed_for_call(self) -> Iterator[_rpc.RPCClient]:
        start = time.perf_counter()
        try:
            with self._for_call() as client:
                yield client
        finally:
            self.timing.rpc_seconds += time.perf_counter() - start

    @contextmanager
    def _for_call(self) -> Iterator[_rpc.RPCClient]:
        if self.held:
            client = self.shared.client
            if client is None:
                raise _rpc.BinaryGoneError("the pyinfra-orbstack binary is not running")
            yield client
            return
        try:
            client = self.shared.acquire()
        except Exception as e:
            raise ConnectionError(f"could not start the pyinfra-orbstack binary: {e}") from None
        try:
            yield client
        finally:
            self.shared.release()


def mismatch_message(binary: str, binary_protocol: object) -> str:
    return (
        f"{binary} speaks protocol version {binary_protocol}, but this pyinfra-orbstack "
        f"{__version__} Python package speaks version {_rpc.PROTOCOL_VERSION}: they come from "
        f"different installs. Reinstall both together (`pip install --force-reinstall "
        f"pyinfra-orbstack`), or point {_binary.BINARY_ENV_VAR} at a binary built from the "
        f"same checkout (`make build`)."
    )


# One SharedBinary per pyinfra State and Mac; weak so a finished State frees its entry.
_by_state: weakref.WeakKeyDictionary[object, dict[tuple[str, ...], SharedBinary]] = weakref.WeakKeyDictionary()
_live_clients: weakref.WeakSet[_rpc.RPCClient] = weakref.WeakSet()


def for_state(state: object, mac_flags: tuple[str, ...] = ()) -> SharedBinary:
    """The SharedBinary of a pyinfra State for one Mac (made on first use)."""
    per_mac = _by_state.get(state)
    if per_mac is None:
        per_mac = _by_state[state] = {}
    shared = per_mac.get(mac_flags)
    if shared is None:
        shared = per_mac[mac_flags] = SharedBinary(mac_flags)
    return shared


@atexit.register
def _kill_leftover_binaries() -> None:
    for client in list(_live_clients):
        client.kill_now()
