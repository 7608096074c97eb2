"""Deploy metrics: what a pyinfra run cost, per host and per operation.

Off by default. On with one switch: ``PYINFRA_ORBSTACK_METRICS=1`` (or ``=PATH.json``)
in the environment, or host data ``orbstack_metrics=True`` (or a path). At the end of
the run (the last host's disconnect) it prints a summary table with optimisation hints
on stderr and writes the same figures as JSON (to the path given, else
``pyinfra-orbstack-metrics.json`` in the working directory). docs/monitoring.md
describes every figure.

When off, a connector holds ``None`` and pays one ``is None`` test per call. When on,
each call is timed with ``time.perf_counter`` and counted in plain dicts: no I/O until
the end. The binary's own counts (sessions started, orbctl calls) come from its
``stats`` method, asked once.
"""

from __future__ import annotations

import json
import os
import statistics
import time
import weakref
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pyinfra.api.host import Host
from pyinfra.api.output import echo

ENV = "PYINFRA_ORBSTACK_METRICS"
HOST_DATA = "orbstack_metrics"
DEFAULT_PATH = "pyinfra-orbstack-metrics.json"
OFF = ("", "0", "false", "no", "off")
FACTS = "(facts and connect)"

# Hints fire when the figures show one.
TINY_COMMAND_SECONDS = 0.05
MANY_TINY_COMMANDS = 10


def switch(host: Host) -> str | None:
    """Where metrics go for this host: None when off, else the JSON file's path."""
    env = os.environ.get(ENV)
    if env is not None and env.strip().lower() not in OFF:
        return DEFAULT_PATH if env.strip().lower() in ("1", "true", "yes", "on") else env
    data = host.data.get(HOST_DATA)
    if not data or (isinstance(data, str) and data.strip().lower() in OFF):
        return None
    return data if isinstance(data, str) and data.strip().lower() not in ("1", "true", "yes", "on") else DEFAULT_PATH


@dataclass
class Figures:
    """What one host, or one operation on one host, cost."""

    commands: int = 0
    command_seconds: float = 0.0  # waiting for the binary's reply: the command, orbctl, the session
    connector_seconds: float = 0.0  # the shim's own time around it: pyinfra's wrapping, spooling, output
    upload_bytes: int = 0  # files.put
    download_bytes: int = 0  # files.get
    output_bytes: int = 0  # commands' output
    uploads: int = 0
    downloads: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    durations: list[float] = field(default_factory=list)  # per command, for the hints

    def as_json(self) -> dict[str, Any]:
        return {
            "commands": self.commands,
            "command_seconds": round(self.command_seconds, 6),
            "connector_seconds": round(self.connector_seconds, 6),
            "uploads": self.uploads,
            "upload_bytes": self.upload_bytes,
            "downloads": self.downloads,
            "download_bytes": self.download_bytes,
            "output_bytes": self.output_bytes,
            "errors": dict(self.errors),
        }


@dataclass
class HostFigures(Figures):
    machine: str = ""
    connect_seconds: float = 0.0
    started: bool = False
    created: bool = False
    operations: dict[str, Figures] = field(default_factory=dict)


class Call:
    """One connector call being measured."""

    def __init__(self, recorder: Recorder, host: Host, kind: str) -> None:
        self.recorder, self.host, self.kind = recorder, host, kind
        self.rpc_seconds = 0.0
        self.ok = True
        self.output_bytes = 0
        self.moved = 0
        self.error: str | None = None


class Recorder:
    """The run's figures (one per pyinfra State)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.started_at = time.time()
        self.hosts: dict[str, HostFigures] = {}
        self.connected = 0
        self.binary_stats: dict[str, Any] | None = None

    def host(self, host: Host) -> HostFigures:
        figures = self.hosts.get(host.name)
        if figures is None:
            figures = self.hosts[host.name] = HostFigures()
        return figures

    def connected_host(self, host: Host, machine: str, reply: dict[str, Any] | None, seconds: float,
                       error: str | None) -> None:
        figures = self.host(host)
        figures.machine = machine
        figures.connect_seconds += seconds
        if reply:
            figures.started = figures.started or bool(reply.get("started"))
            figures.created = figures.created or bool(reply.get("created"))
        if error:
            figures.errors[error] += 1
        else:
            self.connected += 1

    @contextmanager
    def call(self, host: Host, kind: str) -> Iterator[Call]:
        """Measure one command or transfer (kind: command, upload, download)."""
        call = Call(self, host, kind)
        start = time.perf_counter()
        try:
            yield call
        except TimeoutError:
            call.error = "timeout"
            raise
        except ConnectionError:
            call.error = "binary_gone"
            raise
        except OSError:
            call.error = "orbstack" if kind == "command" else f"{kind}_failed"
            raise
        except BaseException:
            call.error = "interrupted"
            raise
        finally:
            self._record(call, time.perf_counter() - start)

    def _record(self, call: Call, total: float) -> None:
        host_figures = self.host(call.host)
        op = operation_name(call.host)
        op_figures = host_figures.operations.get(op)
        if op_figures is None:
            op_figures = host_figures.operations[op] = Figures()
        for figures in (host_figures, op_figures):
            figures.command_seconds += call.rpc_seconds
            figures.connector_seconds += max(total - call.rpc_seconds, 0.0)
            if call.kind == "command":
                figures.commands += 1
                figures.output_bytes += call.output_bytes
                figures.durations.append(total)
                if call.error is None and not call.ok:
                    figures.errors["exit_status"] += 1
            elif call.kind == "upload" and call.error is None:
                figures.uploads += 1
                figures.upload_bytes += call.moved
            elif call.kind == "download" and call.error is None:
                figures.downloads += 1
                figures.download_bytes += call.moved
            if call.error:
                figures.errors[call.error] += 1

    def disconnected(self, host: Host, stats: dict[str, Any] | None) -> bool:
        """One host is done; True when it was the last (then report())."""
        if stats is not None:
            self.binary_stats = stats
        self.connected -= 1
        return self.connected <= 0

    def as_json(self) -> dict[str, Any]:
        machines = (self.binary_stats or {}).get("machines") or {}
        hosts: dict[str, Any] = {}
        for name, figures in sorted(self.hosts.items()):
            binary = machines.get(figures.machine) or {}
            hosts[name] = {
                "machine": figures.machine,
                "connect_seconds": round(figures.connect_seconds, 6),
                "started": figures.started,
                "created": figures.created,
                **figures.as_json(),
                "sessions_started": binary.get("sessions_started"),
                "sessions_reused": sessions_reused(figures, binary),
                "per_call_runs": binary.get("per_call_runs"),
                "operations": {op: f.as_json() for op, f in figures.operations.items()},
            }
        return {
            "started_at": self.started_at,
            "seconds": round(time.time() - self.started_at, 3),
            "hosts": hosts,
            "orbctl": (self.binary_stats or {}).get("orbctl"),
            "machines": machines or None,
            "hints": hints(self),
        }

    def report(self) -> None:
        """Print the summary table and hints on stderr; write the JSON."""
        data = self.as_json()
        error = None
        try:
            with open(self.path, "w", encoding="utf-8") as out:
                json.dump(data, out, indent=2)
                out.write("\n")
        except OSError as e:
            error = f"could not write {self.path}: {e.strerror}"
        for line in summary_lines(self, data):
            echo(line, err=True)
        if error:
            echo(f"    {error}", err=True)


def sessions_reused(figures: HostFigures, binary: dict[str, Any]) -> int | None:
    """Commands that found a session already running: those not run the per-call way,
    less the sessions started (each start serves a connect's warm-up or a command).
    Per machine: hosts sharing a machine share its sessions."""
    if "sessions_started" not in binary:
        return None
    via_sessions = figures.commands - int(binary.get("per_call_runs") or 0)
    return max(via_sessions - int(binary["sessions_started"]), 0)


def operation_name(host: Host) -> str:
    """The operation this host runs now, by its name; facts gathered outside one, and
    connect, count as FACTS."""
    op_hash = getattr(host, "executing_op_hash", None)
    if not op_hash:
        return FACTS
    try:
        names = host.state.get_op_meta(op_hash).names
    except (KeyError, AttributeError):
        return str(op_hash)
    return ", ".join(sorted(str(n) for n in names)) or str(op_hash)


def hints(recorder: Recorder) -> list[str]:
    out: list[str] = []
    machines = (recorder.binary_stats or {}).get("machines") or {}
    for name, figures in sorted(recorder.hosts.items()):
        tiny = [d for d in figures.durations if d < TINY_COMMAND_SECONDS]
        ops = [op for op, f in figures.operations.items() if f.commands and op != FACTS]
        if len(tiny) >= MANY_TINY_COMMANDS and len(ops) >= MANY_TINY_COMMANDS // 2:
            out.append(
                f"{name}: {len(tiny)} commands took under {TINY_COMMAND_SECONDS * 1000:.0f} ms each "
                f"(median {statistics.median(tiny) * 1000:.1f} ms) over {len(ops)} operations: steps "
                "like these can be joined into one server.shell command (`a && b && c`), one round "
                "trip instead of one each",
            )
        binary = machines.get(figures.machine) or {}
        spawned = int(binary.get("sessions_started") or 0) + int(binary.get("per_call_runs") or 0)
        if figures.commands >= 5 and spawned >= figures.commands:
            why = ("command sessions are off (PYINFRA_ORBSTACK_SESSIONS=0): unset it"
                   if os.environ.get("PYINFRA_ORBSTACK_SESSIONS") == "0" else
                   "no command session could be reused (run with --debug to see why: a missing tool in "
                   "the machine, or commands of many users at once)")
            out.append(
                f"{name}: each of its {figures.commands} commands started an orbctl process of its own "
                f"({spawned} for {figures.machine}), because {why}",
            )
        if figures.connector_seconds > max(figures.command_seconds, 0.5):
            out.append(
                f"{name}: more time in the connector ({figures.connector_seconds:.2f} s) than in "
                f"commands ({figures.command_seconds:.2f} s): large in-memory files are spooled to disk "
                "first, and printed output costs too (run without -v)",
            )
        if figures.started or figures.created:
            what = "created" if figures.created else "started"
            out.append(f"{name}: the machine was {what} at connect ({figures.connect_seconds:.1f} s)")
    return out


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def summary_lines(recorder: Recorder, data: dict[str, Any]) -> list[str]:
    rows = [("Host", "Connect", "Commands", "In commands", "Connector", "Up", "Down",
             "Sessions", "Errors")]
    for name, h in data["hosts"].items():
        errors = ", ".join(f"{k} {v}" for k, v in sorted(h["errors"].items())) or "-"
        sessions = "-"
        if h["sessions_started"] is not None:
            sessions = f"{h['sessions_started']} new, {h['sessions_reused']} reused"
        connect = f"{h['connect_seconds']:.2f}s" + (" created" if h["created"] else " started" if h["started"] else "")
        rows.append((name, connect, str(h["commands"]), f"{h['command_seconds']:.2f}s",
                     f"{h['connector_seconds']:.2f}s", _size(h["upload_bytes"]),
                     _size(h["download_bytes"] + h["output_bytes"]), sessions, errors))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["--> pyinfra-orbstack metrics:"]
    lines += ["    " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    slowest = sorted(
        ((f.command_seconds + f.connector_seconds, host, op, f) for host, h in recorder.hosts.items()
         for op, f in h.operations.items()),
        key=lambda t: t[0], reverse=True,
    )[:5]
    if slowest:
        lines.append("    Slowest operations:")
        for total, host, op, f in slowest:
            lines.append(f"      {total:.2f}s  {host}  {op}  ({f.commands} commands, {f.uploads + f.downloads} files)")
    for hint in data["hints"]:
        lines.append(f"    Hint: {hint}")
    lines.append(f"    JSON: {os.path.abspath(recorder.path)}")
    return lines


# One Recorder per pyinfra State; weak so a finished State frees its entry.
_by_state: weakref.WeakKeyDictionary[object, Recorder] = weakref.WeakKeyDictionary()


def for_host(host: Host) -> Recorder | None:
    """The run's Recorder when metrics are on for this host, else None."""
    path = switch(host)
    if path is None:
        return None
    recorder = _by_state.get(host.state)
    if recorder is None:
        recorder = _by_state[host.state] = Recorder(path)
    return recorder
