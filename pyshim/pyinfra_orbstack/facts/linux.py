"""General Linux facts: what a host can reach (ping, a TCP port, an HTTP URL, a DNS
name). Nothing here is OrbStack-specific: they work on any Linux host, through any
connector (``@orbstack/NAME``, ``@ssh``, ``@docker``, ``@local``).

Minimal images often lack ``ping``, ``curl`` or ``dig``. Each fact tries the usual tool
first and falls back to what most Linux systems have (``getent``, bash's ``/dev/tcp``,
``python3`` when present). When nothing can answer, the fact says which tools are
missing (``"missing": [...]``) instead of failing the host.

Every command prints ``key=value`` lines and exits 0, so a failed probe (an unreachable
host) is an answer, not a failed fact. From the CLI, name them by module:
``pyinfra @orbstack/web fact pyinfra_orbstack.facts.linux.TcpPort target=db port=5432``.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Callable
from typing import Any

from pyinfra.api.facts import FactBase


def _q(value: object) -> str:
    return shlex.quote(str(value))


def _kv(output: list[str]) -> tuple[dict[str, str], list[str]]:
    """Split key=value lines; 'out=' lines (the tool's own output) are kept in order."""
    values: dict[str, str] = {}
    out: list[str] = []
    for line in output:
        key, sep, value = line.partition("=")
        if not sep:
            continue
        if key == "out":
            out.append(value)
        else:
            values[key] = value
    return values, out


def _missing(values: dict[str, str]) -> list[str] | None:
    return values["missing"].split(",") if values.get("missing") else None


# Runs the probe and prints its exit status and last lines, always exiting 0.
def _probe(method: str, command: str, keep: int = 5) -> str:
    return (
        f"m={method}; out=$({command} 2>&1); rc=$?; "
        'echo "method=$m"; echo "exit=$rc"; '
        f'printf "%s\\n" "$out" | tail -n {int(keep)} | '
        'while IFS= read -r l; do printf "out=%s\\n" "$l"; done'
    )


def _has(tool: str) -> str:
    return f"command -v {tool} >/dev/null 2>&1"


class Ping(FactBase[dict[str, Any]]):
    """
    Whether the machine can ping ``target``:
    ``{"reachable": True, "rtt_ms": 0.04, "method": "ping", "missing": None, "error": None}``.

    Without ``ping`` in the machine, ``reachable`` is ``None`` and ``missing`` is
    ``["ping"]`` (install ``iputils-ping``, or check a port with ``TcpPort``).
    """

    def command(self, target: str, count: int = 1, timeout: int = 2) -> str:
        probe = _probe("ping", f"ping -c {int(count)} -W {int(timeout)} {_q(target)}")
        return f"if {_has('ping')}; then {probe}; else echo missing=ping; fi"

    def process(self, output: list[str]) -> dict[str, Any]:
        values, out = _kv(output)
        if _missing(values):
            return {
                "reachable": None,
                "rtt_ms": None,
                "method": None,
                "missing": _missing(values),
                "error": "ping is not installed in this machine",
            }
        ok = values.get("exit") == "0"
        rtt = None
        for line in out:
            found = re.search(r"= [\d.]+/([\d.]+)/", line) or re.search(r"time=([\d.]+)", line)
            if found:
                rtt = float(found.group(1))
        return {
            "reachable": ok,
            "rtt_ms": rtt,
            "method": "ping",
            "missing": None,
            "error": None if ok else (out[-1] if out else f"ping exited {values.get('exit')}"),
        }


class TcpPort(FactBase[dict[str, Any]]):
    """
    Whether the machine can open a TCP connection to ``target:port``:
    ``{"open": True, "method": "nc", "missing": None, "error": None}``.

    Tries ``nc``, then bash's ``/dev/tcp``, then ``python3``; ``missing`` names them
    when none exists.
    """

    def command(self, target: str, port: int, timeout: int = 3) -> str:
        # Not "host": pyinfra hides a "host" argument from fact names in its output.
        host_q, port_q, t = _q(target), int(port), int(timeout)
        limit = f"$(command -v timeout >/dev/null 2>&1 && echo timeout {t})"
        python = (
            "import socket,sys; "
            "socket.create_connection((sys.argv[1], int(sys.argv[2])), float(sys.argv[3]))"
        )
        return (
            f"if {_has('nc')}; then {_probe('nc', f'nc -z -w {t} {host_q} {port_q}')}; "
            f"elif {_has('bash')}; then "
            + _probe("bash", f"{limit} bash -c {_q('exec 3<>/dev/tcp/$0/$1')} {host_q} {port_q}")
            + f"; elif {_has('python3')}; then "
            + _probe("python3", f"python3 -c {_q(python)} {host_q} {port_q} {t}")
            + "; else echo missing=nc,bash,python3; fi"
        )

    def process(self, output: list[str]) -> dict[str, Any]:
        values, out = _kv(output)
        if _missing(values):
            return {
                "open": None,
                "method": None,
                "missing": _missing(values),
                "error": "no TCP client in this machine (need nc, bash or python3)",
            }
        ok = values.get("exit") == "0"
        return {
            "open": ok,
            "method": values.get("method"),
            "missing": None,
            "error": None if ok else (out[-1] if out else f"exit status {values.get('exit')}"),
        }


class Http(FactBase[dict[str, Any]]):
    """
    An HTTP(S) GET from inside the machine:
    ``{"ok": True, "status": 200, "method": "curl", "missing": None, "error": None}``.

    ``ok`` means a 2xx/3xx answer. Tries ``curl``, ``wget``, then ``python3``.
    """

    def command(self, url: str, timeout: int = 5) -> str:
        u, t = _q(url), int(timeout)
        python = (
            "import sys, urllib.request, urllib.error\n"
            "try:\n"
            "    r = urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2]))\n"
            "    print(r.status)\n"
            "except urllib.error.HTTPError as e:\n"
            "    print(e.code)\n"
        )
        curl = f"curl -sS -o /dev/null -w 'status=%{{http_code}}' --max-time {t} {u}"
        return (
            f"if {_has('curl')}; then {_probe('curl', curl)}; "
            f"elif {_has('wget')}; then {_probe('wget', f'wget -S -O /dev/null -T {t} {u}')}; "
            f"elif {_has('python3')}; then {_probe('python3', f'python3 -c {_q(python)} {u} {t}')}; "
            "else echo missing=curl,wget,python3; fi"
        )

    def process(self, output: list[str]) -> dict[str, Any]:
        values, out = _kv(output)
        if _missing(values):
            return {
                "ok": None,
                "status": None,
                "method": None,
                "missing": _missing(values),
                "error": "no HTTP client in this machine (need curl, wget or python3)",
            }
        status = None
        for line in out:
            found = (
                re.search(r"status=(\d{3})", line)
                or re.search(r"HTTP/[\d.]+ (\d{3})", line)
                or re.fullmatch(r"\s*(\d{3})\s*", line)
            )
            if found:
                status = int(found.group(1))
        if status == 0:  # curl's %{http_code} when no answer came
            status = None
        ok = status is not None and 200 <= status < 400
        error = None
        if not ok:
            errors = [line for line in out if not re.search(r"status=\d{3}$", line)]
            error = errors[-1].strip() if errors else f"HTTP status {status}"
        return {
            "ok": ok,
            "status": status,
            "method": values.get("method"),
            "missing": None,
            "error": error,
        }


DNS_TYPES = ("A", "AAAA", "MX", "CNAME")


class DnsLookup(FactBase[dict[str, Any]]):
    """
    A DNS lookup from inside the machine, for ``type`` A, AAAA, MX or CNAME:
    ``{"name": "example.com", "type": "MX", "answers": [{"preference": 10,
    "exchange": "mx.example.com"}], "method": "dig", "missing": None}``.

    A/AAAA/CNAME answers are strings. Tries ``dig``, then (A/AAAA/CNAME) ``getent`` and
    ``python3``, then ``host`` and ``nslookup``; ``missing`` lists what would be needed
    when none can answer (MX needs ``dig``, ``host`` or ``nslookup``).
    """

    def command(self, hostname: str, type: str = "A") -> str:
        rtype = type.upper()
        if rtype not in DNS_TYPES:
            raise ValueError(f"DnsLookup: type must be one of {', '.join(DNS_TYPES)}, not {type!r}")
        n = _q(hostname)
        steps = [("dig", f"dig +short -t {rtype} {n}")]
        if rtype in ("A", "AAAA"):
            database = "ahostsv4" if rtype == "A" else "ahostsv6"
            family = "AF_INET" if rtype == "A" else "AF_INET6"
            python = (
                "import socket,sys\n"
                f"for a in socket.getaddrinfo(sys.argv[1], None, socket.{family}): print(a[4][0])\n"
            )
            steps += [("getent", f"getent {database} {n}"), ("python3", f"python3 -c {_q(python)} {n}")]
        elif rtype == "CNAME":
            python = "import socket,sys\nprint('canonical', socket.gethostbyname_ex(sys.argv[1])[0])\n"
            steps += [("getent", f"getent hosts {n}"), ("python3", f"python3 -c {_q(python)} {n}")]
        steps += [("host", f"host -t {rtype} {n}"), ("nslookup", f"nslookup -type={rtype} {n}")]
        chain = "; el".join(
            f"if {_has(tool)}; then {_probe(tool, probe, keep=40)}" for tool, probe in steps
        )
        tools = ",".join(tool for tool, _ in steps)
        return f"echo type={rtype}; echo name={n}; {chain}; else echo missing={tools}; fi"

    def process(self, output: list[str]) -> dict[str, Any]:
        values, out = _kv(output)
        name, rtype = values.get("name", ""), values.get("type", "A")
        result: dict[str, Any] = {"name": name, "type": rtype, "answers": [], "method": values.get("method")}
        if _missing(values):
            result.update(missing=_missing(values), error="no DNS tool in this machine")
            return result
        # Probes keep only their last 5 lines; that is enough for a few records and
        # keeps a chatty tool's output out of the fact.
        result.update(missing=None, answers=parse_dns_answers(values["method"], rtype, name, out))
        result["error"] = None if values.get("exit") == "0" or result["answers"] else (
            out[-1] if out else f"{values['method']} exited {values.get('exit')}"
        )
        return result


def _add_address(add: Callable[[object], None], rtype: str, text: str) -> None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return  # a CNAME line in dig's A output, or nslookup's "server#53"
    if rtype == "A" and address.version == 4:
        add(str(address))
    elif rtype == "AAAA" and address.version == 6 and not address.ipv4_mapped:
        add(str(address))  # getent ahostsv6 maps IPv4-only names to ::ffff:a.b.c.d


def parse_dns_answers(method: str, rtype: str, name: str, lines: list[str]) -> list[Any]:
    answers: list[Any] = []

    def add(value: object) -> None:
        if value not in answers:
            answers.append(value)

    for line in lines:
        line = line.strip()
        if not line or line.startswith(";"):  # dig's ";; connection timed out" and the like
            continue
        if rtype == "MX":
            found = re.search(r"(\d+)\s+(\S+?)\.?$", line)
            if found and (method == "dig" or "mail" in line):
                add({"preference": int(found.group(1)), "exchange": found.group(2)})
        elif rtype == "CNAME":
            if method == "dig":
                add(line.rstrip("."))
            elif method == "getent":
                bits = line.split()
                if len(bits) >= 2 and bits[1].rstrip(".") != name.rstrip("."):
                    add(bits[1].rstrip("."))
            elif method == "python3":
                bits = line.split()
                if len(bits) == 2 and bits[0] == "canonical" and bits[1] != name:
                    add(bits[1])
            else:
                found = re.search(r"(?:is an alias for|canonical name =)\s+(\S+?)\.?$", line)
                if found:
                    add(found.group(1))
        elif method in ("host", "nslookup"):
            found = re.search(r"(?:has (?:IPv6 )?address|Address:)\s+(\S+)$", line)
            if found:
                _add_address(add, rtype, found.group(1))
        else:
            # dig +short, getent and our python3 print the address first on each line
            _add_address(add, rtype, line.split()[0])
    return answers
