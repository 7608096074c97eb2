"""Resource usage: ``orbstack.Resources``, read inside a machine (any Linux host), and
``orbstack.Limits``, OrbStack's limits and each machine's disk size, read on the Mac.

``Resources`` runs the same probe script as ``pyinfra-orbstack monitor`` (the binary
embeds ``internal/monitor/probe.sh``; a test keeps the two copies identical), so a
fact and the exporter report the same figures. Only ``/proc`` is required: the disk of
``/`` comes from ``df``, else ``stat -f``, else ``python3``; a figure nothing could
read is ``None`` with the tools in ``missing``, never a failed fact.
"""

from __future__ import annotations

from typing import Any

from .orbstack import OrbStackFact, _json, binary, binary_guard

# Identical to internal/monitor/probe.sh (pyshim/tests/test_resources.py checks).
PROBE_SCRIPT = r"""# Resource figures of a Linux machine, read from inside it as key=value lines.
# POSIX sh; only /proc is required. Each figure says which tool gave it and
# falls back to what minimal images have. Always exits 0: a figure nothing could
# read is reported in missing=, not as a failure.
missing=""
if read l1 l5 l15 rest < /proc/loadavg; then echo "load=$l1 $l5 $l15"; else missing="$missing loadavg"; fi
c=$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || grep -c '^processor' /proc/cpuinfo 2>/dev/null)
echo "cpus=$c"
while read k v rest; do
  case $k in MemTotal:|MemAvailable:|MemFree:|Buffers:|Cached:) echo "mem_${k%:}=$v";; esac
done < /proc/meminfo
if df -Pk / >/dev/null 2>&1; then
  df -Pk / | { read h; read fs t u a rest; echo "disk=df $((t*1024)) $((u*1024)) $((a*1024))"; }
elif stat -f -c '%S %b %f %a' / >/dev/null 2>&1; then
  stat -f -c '%S %b %f %a' / | { read s b f a; echo "disk=stat $((s*b)) $((s*(b-f))) $((s*a))"; }
elif command -v python3 >/dev/null 2>&1; then
  python3 -c 'import os; s = os.statvfs("/"); b = s.f_frsize
print("disk=python3", b * s.f_blocks, b * (s.f_blocks - s.f_bfree), b * s.f_bavail)'
else
  missing="$missing df,stat,python3"
fi
set -- /proc/[0-9]*
echo "processes=$#"
read up rest < /proc/uptime && echo "kernel_uptime=$up"
s=$(cat /proc/1/stat 2>/dev/null) && s=${s##*) } && set -- $s && echo "init_start_ticks=${20}"
echo "clk_tck=$(getconf CLK_TCK 2>/dev/null || echo 100)"
echo "missing=${missing# }"
"""


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def parse_probe(output: list[str]) -> dict[str, Any]:
    """The probe's key=value lines as the fact's answer (sizes in bytes)."""
    kv: dict[str, str] = {}
    for line in output:
        key, sep, value = line.strip().partition("=")
        if sep:
            kv[key] = value
    if "missing" not in kv:
        return {"error": "the resource probe was cut short: " + " | ".join(output[-3:])}
    load = None
    if len(parts := kv.get("load", "").split()) == 3:
        load = [float(p) for p in parts]

    def kib(key: str) -> int:
        return (_int(kv.get(f"mem_{key}")) or 0) * 1024

    total = kib("MemTotal")
    available = kib("MemAvailable") if "mem_MemAvailable" in kv else kib("MemFree") + kib("Buffers") + kib("Cached")
    disk: dict[str, Any] = {"total": None, "used": None, "available": None, "method": None}
    if len(parts := kv.get("disk", "").split()) == 4:
        disk = {"total": int(parts[1]), "used": int(parts[2]), "available": int(parts[3]), "method": parts[0]}
    kernel = float(kv.get("kernel_uptime") or 0)
    uptime, source = kernel, "kernel"
    ticks, hz = _int(kv.get("init_start_ticks")), _int(kv.get("clk_tck"))
    if ticks is not None and hz and kernel - ticks / hz >= 0:
        # A machine is a container: the kernel's uptime is the VM's, PID 1's age is the machine's.
        uptime, source = kernel - ticks / hz, "init"
    missing = [tool for group in kv["missing"].split() for tool in group.split(",")]
    return {
        "load": load,
        "cpus": _int(kv.get("cpus")),
        "memory": {"total": total, "used": max(total - available, 0), "available": available},
        "disk": disk,
        "processes": _int(kv.get("processes")),
        "uptime_seconds": round(uptime, 2),
        "uptime_source": source,
        "missing": missing,
        "error": f"no tool could read the disk of /: install one of {', '.join(missing)}" if missing else None,
    }


class Resources(OrbStackFact):
    """
    What a machine uses, read from inside it (target ``@orbstack/NAME``; works on any
    Linux host):

    .. code:: python

        {"load": [0.12, 0.08, 0.02], "cpus": 4,
         "memory": {"total": 8254390272, "used": 612503552, "available": 7641886720},
         "disk": {"total": 67371577344, "used": 2263498752, "available": 61650571264,
                  "method": "df"},
         "processes": 14, "uptime_seconds": 3605.2, "uptime_source": "init",
         "missing": [], "error": None}

    Sizes are bytes, of ``/`` for the disk. ``used`` memory is total minus available
    (what ``free`` calls available). ``uptime_seconds`` is the age of the machine's PID
    1 (``uptime_source: "init"``), else the kernel's uptime (``"kernel"``, the VM's).
    """

    def command(self) -> str:
        return PROBE_SCRIPT

    def process(self, output: list[str]) -> dict[str, Any]:
        return parse_probe(output)


class Limits(OrbStackFact):
    """
    OrbStack's resource limits and each machine's disk size (target ``@local``, the Mac):
    ``pyinfra-orbstack limits --json``.

    .. code:: python

        {"cpus": 4, "memory_bytes": 8589934592,
         "machines": [{"name": "web", "state": "running", "disk_size": 2263498752,
                       "cpus": None, "memory_bytes": 4294967296, "disk_bytes": None}]}

    ``cpus``/``memory_bytes`` at the top are the VM's (``orbctl config`` ``cpu`` and
    ``memory_mib``); per machine, the OrbStack 2.1+ limits (``None``: not set) and
    ``disk_size`` as ``orbctl info`` reports it (``None`` before OrbStack 1.10).
    """

    def command(self) -> str:
        return binary_guard() + binary("limits", "--json")

    def process(self, output: list[str]) -> dict[str, Any]:
        data: dict[str, Any] = _json("orbstack.Limits", output) or {}
        return data
