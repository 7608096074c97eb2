"""Measure one shared binary process against one process per host, for 20 hosts.

Not a test: run it by hand against the simulator (figures go in docs/architecture.md).

    PATH=$PWD/bin:$PATH ORBSIM_HOME=/tmp/orbsim-measure orbctl create debian measure
    PATH=$PWD/bin:$PATH ORBSIM_HOME=/tmp/orbsim-measure \\
        .venv/bin/python pyshim/tests/measure_processes.py --machine measure

Each of the 20 "hosts" is a greenlet that runs COMMANDS `true` commands one after
another, as pyinfra runs one host's operations; all hosts run at once.
"""

from __future__ import annotations

import argparse
import statistics
import time

import gevent

from pyinfra_orbstack import _binary, _rpc


def status_kib(pid: int | str, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def start_client() -> tuple[_rpc.RPCClient, float]:
    started = time.monotonic()
    client = _rpc.RPCClient([_binary.find_binary(), "serve"])
    client.call("initialize", {"protocol_version": _rpc.PROTOCOL_VERSION, "client_version": "m"}, timeout=10)
    return client, time.monotonic() - started


def host_workload(client: _rpc.RPCClient, machine: str, commands: int) -> list[float]:
    latencies = []
    for _ in range(commands):
        started = time.monotonic()
        client.call("command.run", {"machine": machine, "command": "true", "user": "", "workdir": ""})
        latencies.append(time.monotonic() - started)
    return latencies


def run(mode: str, machine: str, hosts: int, commands: int) -> dict:
    started = time.monotonic()
    if mode == "shared":
        client, spawn = start_client()
        clients, spawns = [client] * hosts, [spawn]
    else:
        pairs = [g.get() for g in [gevent.spawn(start_client) for _ in range(hosts)]]
        clients, spawns = [c for c, _ in pairs], [s for _, s in pairs]
    ready = time.monotonic() - started

    workers = [gevent.spawn(host_workload, c, machine, commands) for c in clients]
    gevent.joinall(workers, raise_error=True)
    latencies = [latency for w in workers for latency in w.value]
    wall = time.monotonic() - started

    unique = {c.pid: c for c in clients}.values()
    go_peak = sum(status_kib(c.pid, "VmHWM") for c in unique)
    for c in unique:
        c.close()
    return {
        "mode": mode,
        "processes": len(unique),
        "spawn_ms_median": statistics.median(spawns) * 1000,
        "ready_ms": ready * 1000,
        "call_ms_median": statistics.median(latencies) * 1000,
        "call_ms_p95": sorted(latencies)[int(len(latencies) * 0.95) - 1] * 1000,
        "wall_s": wall,
        "go_rss_peak_mib": go_peak / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--machine", required=True)
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--commands", type=int, default=10)
    args = parser.parse_args()

    # Warm orbctl and the machine once so neither mode pays the first-run cost.
    client, _ = start_client()
    client.call("machine.connect", {"machine": args.machine, "start": True, "timeout": 60, "create": None})
    client.close()

    for mode in ("shared", "per-host", "shared", "per-host"):
        print(run(mode, args.machine, args.hosts, args.commands))
    print({"python_rss_peak_mib": status_kib("self", "VmHWM") / 1024})


if __name__ == "__main__":
    main()
