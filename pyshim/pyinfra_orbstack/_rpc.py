"""JSON-RPC 2.0 client for `pyinfra-orbstack serve`, over the child's stdin/stdout.

Framing and methods are specified in docs/protocol.md. This module knows nothing
about pyinfra: it starts the binary, multiplexes concurrent calls from many
greenlets over one pipe pair, and routes streamed `command.output` notifications
to the call that asked for them.

Everything here is gevent-cooperative with or without monkey-patching: the child
is a `gevent.subprocess.Popen`, whose pipes are gevent file objects.
"""

from __future__ import annotations

import itertools
import json
import logging
import signal
from collections import deque
from collections.abc import Callable
from typing import IO, Any

import gevent
import gevent.event
import gevent.lock
from gevent.subprocess import PIPE, Popen

# The one place the shim's protocol version lives; the binary reports its own in
# `initialize` and a difference is fatal (docs/protocol.md, "Versioning").
PROTOCOL_VERSION = 2

# Error codes from docs/protocol.md.
ORBCTL_NOT_FOUND = -32001
ORBSTACK_NOT_RUNNING = -32002
MACHINE_NOT_FOUND = -32003
MACHINE_EXISTS = -32004
TIMEOUT = -32005
ORBCTL_FAILED = -32006
BAD_ARGUMENT = -32007
IO_ERROR = -32008
PROTOCOL_MISMATCH = -32009
NOT_READY = -32010
MAC_UNREACHABLE = -32011
CANCELLED = -32800

# Extra time the binary gets past a request's own timeout (a command's, or
# machine.connect's) to finish it (a command is killed inside the machine with
# SIGTERM, then SIGKILL after 2 s) and reply, before the client gives up on it.
TIMEOUT_GRACE_SECONDS = 10

# How long a polite shutdown may take before the child is killed.
SHUTDOWN_GRACE_SECONDS = 2.0

# Lines of the child's stderr kept to explain a crash.
STDERR_TAIL_LINES = 5

logger = logging.getLogger("pyinfra.orbstack.rpc")  # shown by `pyinfra --debug`

# Receives each command.output notification's runs, as (stream, text) pairs.
OutputSink = Callable[[list[tuple[str, str]]], None]


class OutputLines:
    """Turns a command's output runs into its lines (docs/protocol.md, "command.output").

    A run holds any number of lines of one stream; its last line may continue
    in the next run of that stream. `feed` returns the lines each run completes
    (without their "\\n", stdout and stderr in the order they completed);
    `end`, once the command's reply came, the last line of each stream that had
    no newline.
    """

    def __init__(self) -> None:
        self._pending: dict[str, list[str]] = {}

    def feed(self, runs: list[tuple[str, str]]) -> list[tuple[str, list[str]]]:
        done: list[tuple[str, list[str]]] = []
        for stream, text in runs:
            if "\n" not in text:
                if text:
                    self._pending.setdefault(stream, []).append(text)
                continue
            lines = text.split("\n")
            pending = self._pending.pop(stream, None)
            if pending:
                pending.append(lines[0])
                lines[0] = "".join(pending)
            tail = lines.pop()
            if tail:
                self._pending[stream] = [tail]
            done.append((stream, lines))
        return done

    def end(self) -> list[tuple[str, list[str]]]:
        done: list[tuple[str, list[str]]] = [
            (stream, ["".join(self._pending[stream])]) for stream in ("stdout", "stderr") if stream in self._pending
        ]
        self._pending.clear()
        return done


class RPCError(Exception):
    """An error object returned by the binary (a failed request, not a dead pipe)."""

    def __init__(self, code: int, message: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data or {}

    @property
    def kind(self) -> str:
        return str(self.data.get("kind", ""))

    def __str__(self) -> str:
        return self.message


# `serve` exits with this after SIGINT: Ctrl-C in a terminal reaches it (and the
# commands it runs) along with pyinfra.
EXIT_INTERRUPTED = 130

# How long, after the binary closes its output, we wait to learn its exit status.
EXIT_STATUS_WAIT_SECONDS = 0.5


class RequestRefused(ValueError):
    """A request the client will not send: it cannot reach the binary intact.

    Raised before anything is written, for this call only: a frame over the
    binary's `max_frame` (the binary would close the connection under every
    call in flight), or text that is not valid Unicode (a lone surrogate, as
    from a file name decoded with surrogateescape: the binary would replace it
    with U+FFFD and run something else than what was asked).
    """


class BinaryGoneError(ConnectionError):
    """The binary exited or its pipe broke; every pending and later call fails with this.

    `interrupted` says it exited because of Ctrl-C (SIGINT), not by failing.
    """

    def __init__(self, message: str, interrupted: bool = False) -> None:
        super().__init__(message)
        self.interrupted = interrupted


class RPCClient:
    """One running `pyinfra-orbstack serve` child and the calls in flight to it."""

    def __init__(self, argv: list[str]) -> None:
        self.argv = list(argv)
        self._ids = itertools.count(1)
        self._pending: dict[int, gevent.event.AsyncResult[Any]] = {}
        self._sinks: dict[int, OutputSink] = {}
        self._write_lock = gevent.lock.Semaphore()
        self._stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        self._gone: BinaryGoneError | None = None
        self._closing = False
        # The binary's frame limit, from `initialize` (None: not known yet).
        self.max_frame: int | None = None
        # What machine.connect's timeout 0 means, in seconds, from `initialize`.
        self.default_connect_timeout: float | None = None

        # Raises OSError (FileNotFoundError, PermissionError) if argv[0] cannot run.
        self._proc = Popen(self.argv, stdin=PIPE, stdout=PIPE, stderr=PIPE)
        assert self._proc.stdin and self._proc.stdout and self._proc.stderr  # all three are PIPE
        self._stdin: IO[bytes] = self._proc.stdin
        self._stdout: IO[bytes] = self._proc.stdout
        self._stderr: IO[bytes] = self._proc.stderr
        self.pid = self._proc.pid
        self._greenlets = [
            gevent.spawn(self._read_messages),
            gevent.spawn(self._drain_stderr),
            gevent.spawn(self._watch_exit),
        ]

    # -- public API

    @property
    def alive(self) -> bool:
        return self._gone is None

    @property
    def stderr_lines(self) -> list[str]:
        """The binary's last lines on stderr (its logs and, if it exited, why)."""
        return list(self._stderr_tail)

    def call(
        self,
        method: str,
        params: Any = None,
        timeout: float | None = None,
        on_output: OutputSink | None = None,
    ) -> Any:
        """Send a request and wait for its result.

        Raises RPCError for an error reply, BinaryGoneError if the binary dies
        first, and TimeoutError (after cancelling the request) if no reply comes
        within `timeout` seconds. `on_output(runs)` receives the runs of each of
        the request's `command.output` notifications, in the order they were
        sent (OutputLines makes lines of them).
        """
        if self._gone is not None:
            raise self._gone

        request_id = next(self._ids)
        frame = self._frame({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
        result: gevent.event.AsyncResult[Any] = gevent.event.AsyncResult()
        # Registered before sending: a fast reply must find its waiter.
        self._pending[request_id] = result
        if on_output is not None:
            self._sinks[request_id] = on_output

        try:
            self._write(frame)
            try:
                return result.get(timeout=timeout)
            except gevent.Timeout:
                self._cancel(request_id)
                raise TimeoutError(f"{method} got no reply within {timeout} s") from None
        finally:
            self._pending.pop(request_id, None)
            self._sinks.pop(request_id, None)

    def close(self) -> None:
        """Ask the binary to shut down, then make sure it is gone. Never raises."""
        if self._closing:
            return
        self._closing = True
        if self._gone is None:
            try:
                self.call("shutdown", {}, timeout=SHUTDOWN_GRACE_SECONDS)
            except Exception as e:  # a dying binary is what we wanted anyway
                logger.debug("shutdown call failed: %s", e)
        self._close_stdin()
        try:
            self._proc.wait(timeout=SHUTDOWN_GRACE_SECONDS)
        except Exception:
            self._kill()
        self._fail_all(BinaryGoneError("the pyinfra-orbstack binary was shut down"))
        # Short: a grandchild of the binary may hold its stdout open forever.
        gevent.joinall(self._greenlets, timeout=0.5)
        gevent.killall(self._greenlets, block=False)

    def kill_now(self) -> None:
        """Last resort at interpreter exit: no greenlet switches, no waiting."""
        self._closing = True
        self._close_stdin()
        self._kill()

    # -- internals

    def _frame(self, message: dict[str, Any]) -> bytes:
        try:
            body = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as e:
            raise RequestRefused(
                f"{message.get('method')}: its parameters hold text that is not valid Unicode "
                f"({e.object[e.start:e.end]!r}, as from a file name in another encoding); "
                f"it would not reach the machine as it is",
            ) from None
        if self.max_frame is not None and len(body) > self.max_frame:
            raise RequestRefused(
                f"{message.get('method')}: the request is {len(body)} bytes, over the "
                f"{self.max_frame} bytes the pyinfra-orbstack binary accepts in one message "
                f"(a large _stdin, most likely: upload it with files.put and redirect from the file)",
            )
        return b"Content-Length: %d\r\n\r\n%s" % (len(body), body)

    def _send(self, message: dict[str, Any]) -> None:
        self._write(self._frame(message))

    def _write(self, frame: bytes) -> None:
        # A gevent file write can yield mid-frame; the lock keeps frames whole.
        with self._write_lock:
            if self._gone is not None:
                raise self._gone
            try:
                self._stdin.write(frame)
                self._stdin.flush()
            except (OSError, ValueError) as e:
                gone = self._gone_error(f"could not write to it ({e})")
                self._fail_all(gone)
                raise gone from None

    def _cancel(self, request_id: int) -> None:
        try:
            self._send({"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": request_id}})
        except ConnectionError:
            pass

    def _read_messages(self) -> None:
        stdout = self._stdout
        reason = "it closed its output"
        try:
            while True:
                length = None
                while True:
                    header = stdout.readline()
                    if not header:
                        return
                    header = header.strip()
                    if not header:
                        break
                    name, _, value = header.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                if length is None:
                    reason = "it sent a frame without Content-Length"
                    return
                body = stdout.read(length)
                if len(body) < length:
                    return
                self._dispatch(json.loads(body))
        except Exception as e:  # a garbled stream is as fatal as a closed one
            reason = f"its output could not be parsed ({e})"
        finally:
            code = self._exit_status(EXIT_STATUS_WAIT_SECONDS)
            if code is not None:
                reason = f"{reason}; it exited with status {code}"
            self._fail_all(self._gone_error(reason, code))

    def _dispatch(self, message: dict[str, Any]) -> None:
        if "method" in message:
            if message.get("method") == "command.output":
                params: dict[str, Any] = message.get("params") or {}
                request_id: Any = params.get("request_id")
                sink = self._sinks.get(request_id)
                if sink is None:
                    return
                runs = [(str(run.get("stream", "stdout")), str(run.get("text", "")))
                        for run in params.get("output") or ()]
                try:
                    sink(runs)
                except Exception:
                    logger.exception("output handler failed")
            return

        if message.get("id") is None and message.get("error") is not None:
            # The binary could not read one of our frames (a bug on our side:
            # the shim only sends frames it built).
            logger.error("the pyinfra-orbstack binary refused a message: %s", message["error"].get("message"))
            return
        reply_id: Any = message.get("id")
        result = self._pending.get(reply_id)
        if result is None:  # a reply to a call that already timed out
            return
        error = message.get("error")
        if error is not None:
            result.set_exception(
                RPCError(int(error.get("code", 0)), str(error.get("message", "")), error.get("data")),
            )
        else:
            result.set(message.get("result"))

    def _drain_stderr(self) -> None:
        # Required: a full stderr pipe would block the binary.
        for raw in self._stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self._stderr_tail.append(line)
            logger.debug("[pyinfra-orbstack %d] %s", self.pid, line)

    def _watch_exit(self) -> None:
        # EOF on stdout normally says the child died; this also covers a child
        # whose own children still hold the pipe open.
        code = self._proc.wait()
        gevent.sleep(0.05)  # let the reader deliver replies already in the pipe
        self._fail_all(self._gone_error(f"it exited with status {code}", code))

    def _exit_status(self, wait: float) -> int | None:
        try:
            code: int = self._proc.wait(timeout=wait)
            return code
        except Exception:  # still running (it closed stdout but lives on)
            return None

    def _gone_error(self, reason: str, code: int | None = None) -> BinaryGoneError:
        interrupted = code in (EXIT_INTERRUPTED, -signal.SIGINT)
        if interrupted:
            reason = "it was interrupted (Ctrl-C)"
        message = f"the pyinfra-orbstack binary (pid {self.pid}) stopped answering: {reason}"
        if self._stderr_tail and not self._closing and not interrupted:
            message += "; its last output: " + " | ".join(self._stderr_tail)
        return BinaryGoneError(message, interrupted=interrupted)

    def _fail_all(self, error: BinaryGoneError) -> None:
        if self._gone is None:
            self._gone = error
        for result in list(self._pending.values()):
            if not result.ready():
                result.set_exception(self._gone)

    def _close_stdin(self) -> None:
        try:
            self._stdin.close()
        except Exception:
            pass

    def _kill(self) -> None:
        try:
            if self._proc.poll() is None:
                self._proc.kill()
        except Exception:
            pass
