"""orbstack.* facts: the Mac-side facts read the binary's JSON (every OrbStack version's
shape is the binary's to read: internal/orbctl's tests and test_facts_e2e.py), run here
by sh with the real binary against a stand-in orbctl for the error paths; and the
in-machine network facts run for real by sh on this Linux box, with and without the
usual tools on the PATH.

The Mac-side facts also run against the simulator through the real pyinfra CLI in
test_lifecycle_e2e.py.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest
from pyinfra.context import ctx_host

from pyinfra_orbstack.facts import linux, network
from pyinfra_orbstack.facts import orbstack as facts

MACHINE = {
    "name": "web-server", "id": "01K2G8TY5GM9C3CN95KCB4ZG8B", "state": "running",
    "distro": "ubuntu", "version": "jammy", "arch": "arm64", "variant": "default",
    "default_user": "ubuntu", "isolated": False, "ip4": "198.19.249.76", "ip6": "",
    "disk_size": 962924544, "config": {"isolated": False, "default_username": "ubuntu"},
}


def lines(text: str) -> list[str]:
    return text.splitlines()


def test_machines_keys_the_binary_s_machines_by_name():
    data = facts.Machines().process(lines(json.dumps([MACHINE], indent=2)))
    assert data == {"web-server": MACHINE}
    assert facts.Machines().process(["[]"]) == {}


def test_machine_is_the_binary_s_machine_or_none():
    assert facts.Machine().process(lines(json.dumps(MACHINE, indent=2))) == MACHINE
    assert facts.Machine().process(["null"]) is None


def test_version_is_orbstack_s_part_of_the_binary_s_version():
    out = {"version": "0.1.0", "protocol": 1,
           "orbstack": {"version": "2.2.3", "code": 2020300, "commit": "abc123 (v2.2.3)"}}
    assert facts.Version().process(lines(json.dumps(out))) == out["orbstack"]


def test_config_value_is_the_one_value_or_none():
    assert facts.ConfigValue().process([json.dumps({"cpu": {"key": "cpu", "value": "8", "restart": True}})]) == "8"
    assert facts.ConfigValue().process([json.dumps({"x": {"key": "x", "value": None, "restart": False}})]) is None


def test_binary_fact_reads_the_version_line():
    assert facts.Binary().process(["pyinfra-orbstack 0.1.0 (protocol 1)"]) == {"version": "0.1.0", "protocol": 1}
    assert facts.Binary().process([]) is None


def test_ssh_connection_asks_the_binary_for_the_machine_and_user():
    assert facts.SshConnection().command(machine="web", user="deploy").endswith(
        "ssh-info --machine web --user deploy",
    )
    out = {"host": "localhost", "port": 32222, "user": "deploy@web", "key": "~/.orbstack/ssh/id_ed25519",
           "command": "ssh -p 32222 -i ~/.orbstack/ssh/id_ed25519 deploy@web@localhost"}
    assert facts.SshConnection().process(lines(json.dumps(out, indent=2))) == out


# The shell side of the Mac facts, run by a real sh with the real binary against a
# stand-in orbctl that behaves like the real one's error paths (the simulator covers
# the happy paths).


def sh(command: str, path: str, **env: str) -> subprocess.CompletedProcess:
    full = dict(os.environ, PATH=path, **env)
    return subprocess.run(["sh", "-c", command], env=full, capture_output=True, text=True, timeout=60)


def fake_orbctl(tmp_path: Path, script: str) -> str:
    orbctl = tmp_path / "orbctl"
    orbctl.write_text("#!/bin/sh\n" + script)
    orbctl.chmod(0o755)
    return f"{tmp_path}:/usr/bin:/bin"


def test_missing_machine_is_none_not_a_failure(tmp_path):
    path = fake_orbctl(tmp_path, "echo \"[-32098] machine not found: '$2'\" >&2; exit 1\n")
    result = sh(facts.Machine().command(machine="nope"), path, PYINFRA_ORBSTACK_ORBCTL=str(tmp_path / "orbctl"))
    assert result.returncode == 0, result.stderr
    assert facts.Machine().process(lines(result.stdout)) is None


def test_other_orbctl_errors_fail_the_fact_with_orbctl_s_message(tmp_path):
    path = fake_orbctl(tmp_path, "echo '[-32098] OrbStack is not running' >&2; exit 1\n")
    result = sh(facts.Machine().command(machine="web"), path, PYINFRA_ORBSTACK_ORBCTL=str(tmp_path / "orbctl"))
    assert result.returncode != 0 and "OrbStack is not running" in result.stderr


def on_another_host():
    """As the facts see a host that is not @local (a Mac over @ssh, or by mistake an
    @orbstack/NAME machine)."""
    return ctx_host.use(SimpleNamespace(connector=object()))


def test_binary_fact_on_a_mac_without_the_package_is_none_not_a_failure(tmp_path):
    with on_another_host():
        command = facts.Binary().command()
    result = sh(command, "/usr/bin:/bin")
    assert result.returncode == 0 and facts.Binary().process(lines(result.stdout)) is None


def test_no_binary_says_where_these_facts_run(tmp_path):
    with on_another_host():
        command = facts.Machines().command()
    result = sh(command, "/usr/bin:/bin")
    assert result.returncode == 127
    assert "target @local" in result.stderr and "not an @orbstack/NAME machine" in result.stderr


def test_a_binary_of_another_protocol_is_refused(tmp_path):
    other = tmp_path / "pyinfra-orbstack"
    other.write_text("#!/bin/sh\necho 'pyinfra-orbstack 9.0.0 (protocol 99)'\n")
    other.chmod(0o755)
    with on_another_host():
        command = facts.Machines().command()
        assert command.count("pyinfra-orbstack list --json") == 1, "by name, from the PATH"
    result = sh(command, f"{tmp_path}:/usr/bin:/bin")
    assert result.returncode == 1 and "speaks another protocol" in result.stderr


def test_status_reports_stopped_as_an_answer(tmp_path):
    path = fake_orbctl(tmp_path, "echo Stopped; exit 1\n")
    result = sh(facts.Status().command(), path, PYINFRA_ORBSTACK_ORBCTL=str(tmp_path / "orbctl"))
    assert result.returncode == 0 and facts.Status().process(lines(result.stdout)) == "Stopped"


def test_snapshots_lists_only_this_machine_s_archives_oldest_first(tmp_path):
    for name in ["web-20260102T000000Z.tar.zst", "web-20260101T000000Z.tar.zst",
                 "web-2-20260103T000000Z.tar.zst", "web-notes.txt"]:
        (tmp_path / name).write_bytes(b"x" * 7)
    result = sh(facts.Snapshots().command(directory=str(tmp_path), machine="web"), "/usr/bin:/bin")
    data = facts.Snapshots().process(lines(result.stdout))
    assert [Path(s["path"]).name for s in data] == [
        "web-20260101T000000Z.tar.zst", "web-20260102T000000Z.tar.zst",
    ]
    assert data[0]["size"] == 7 and data[0]["time"] == "20260101T000000Z"


def test_logs_of_a_missing_machine_are_empty_not_a_failure(tmp_path):
    path = fake_orbctl(tmp_path, "echo \"[-32098] machine not found: '$2'\" >&2; exit 1\n")
    result = sh(facts.Logs().command(machine="nope"), path, PYINFRA_ORBSTACK_ORBCTL=str(tmp_path / "orbctl"))
    assert result.returncode == 0 and facts.Logs().process(lines(result.stdout)) == []


def test_snapshots_of_a_missing_directory_is_empty(tmp_path):
    result = sh(facts.Snapshots().command(directory=str(tmp_path / "nope"), machine="web"),
                "/usr/bin:/bin")
    assert result.returncode == 0 and facts.Snapshots().process(lines(result.stdout)) == []


# In-machine facts, run for real here. A "bare" PATH holds only the basics a minimal
# image has (sh, cat, tail), to prove the fallbacks work and missing tools are named.

BASICS = ["sh", "cat", "tail", "tr", "wc", "hostname"]


@pytest.fixture()
def bare_path(tmp_path) -> str:
    def make(*extra: str) -> str:
        bindir = tmp_path / "bare"
        bindir.mkdir(exist_ok=True)
        for tool in BASICS + list(extra):
            # python3 may be a pyenv shim that needs more than a bare PATH: link the
            # real interpreter instead.
            found = os.path.realpath(sys.executable) if tool == "python3" else shutil.which(tool)
            if found and not (bindir / tool).exists():
                (bindir / tool).symlink_to(found)
        return str(bindir)

    return make


def fact(cls, path: str, **kwargs):
    result = sh(cls().command(**kwargs), path)
    assert result.returncode == 0, result.stderr
    return cls().process(lines(result.stdout))


def primary_ipv4() -> str | None:
    """The source address the kernel picks for outbound IPv4 (no packet is sent)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))
        return probe.getsockname()[0]
    except OSError:
        return None  # no IPv4 route at all
    finally:
        probe.close()


def test_network_without_ip_finds_the_address_the_kernel_uses(bare_path):
    bare = fact(network.Network, bare_path())
    assert bare["source"] == "proc"
    assert bare["interfaces"]["lo"]["ipv4"] == ["127.0.0.1/8"]
    if primary_ipv4():
        assert primary_ipv4() in bare["ipv4"]
        assert any(r["destination"] == "default" for r in bare["routes"])


def test_network_without_ip_reads_proc_and_agrees_with_ip(bare_path):
    if not shutil.which("ip"):
        pytest.skip("no ip command here to compare with")
    full = fact(network.Network, os.environ["PATH"])
    bare = fact(network.Network, bare_path())
    assert (full["source"], bare["source"]) == ("ip", "proc")

    def default(routes):
        return [(r["gateway"], r["interface"]) for r in routes
                if r["destination"] == "default" and r["family"] == 4]

    assert default(bare["routes"]) == default(full["routes"])
    # Simulator machines add and remove veths on this box while tests run, so compare
    # the interfaces that matter, not the whole (changing) list.
    for name in {"lo"} | {iface for _, iface in default(full["routes"])}:
        assert bare["interfaces"][name]["mac"] == full["interfaces"][name]["mac"]
        assert bare["interfaces"][name]["ipv4"] == full["interfaces"][name]["ipv4"], name
        assert sorted(bare["interfaces"][name]["ipv6"]) == sorted(full["interfaces"][name]["ipv6"]), name
    assert bare["dns_servers"] == full["dns_servers"]
    assert full["orb_name"] == f"{socket.gethostname()}.orb.local"


def test_tcp_port_open_and_closed_with_bash_dev_tcp_only(bare_path):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    path = bare_path("bash", "timeout")
    try:
        opened = fact(linux.TcpPort, path, target="127.0.0.1", port=port)
    finally:
        server.close()
    closed = fact(linux.TcpPort, path, target="127.0.0.1", port=port)
    assert (opened["open"], opened["method"]) == (True, "bash")
    assert closed["open"] is False and "refused" in closed["error"].lower()


def test_tcp_port_names_the_missing_tools(bare_path):
    data = fact(linux.TcpPort, bare_path(), target="127.0.0.1", port=1)
    assert data["open"] is None and data["missing"] == ["nc", "bash", "python3"]


class _Teapot(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        self.send_response(204 if self.path == "/ok" else 418)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture()
def http_server():
    server = HTTPServer(("127.0.0.1", 0), _Teapot)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.parametrize("tool", ["curl", "wget", "python3"])
def test_http_status_with_each_client(bare_path, http_server, tool):
    if not shutil.which(tool):
        pytest.skip(f"{tool} is not installed here")
    path = bare_path(tool)
    ok = fact(linux.Http, path, url=f"{http_server}/ok")
    teapot = fact(linux.Http, path, url=f"{http_server}/teapot")
    assert (ok["ok"], ok["status"], ok["method"]) == (True, 204, tool)
    assert (teapot["ok"], teapot["status"]) == (False, 418)


def test_http_names_the_missing_clients(bare_path):
    data = fact(linux.Http, bare_path(), url="http://127.0.0.1:1/")
    assert data["ok"] is None and data["missing"] == ["curl", "wget", "python3"]


def test_ping_without_ping_says_so(bare_path):
    data = fact(linux.Ping, bare_path(), target="127.0.0.1")
    assert data["reachable"] is None and data["missing"] == ["ping"]


def test_dns_a_lookup_falls_back_to_getent(bare_path):
    data = fact(linux.DnsLookup, bare_path("getent"), hostname="localhost", type="A")
    assert (data["method"], data["answers"]) == ("getent", ["127.0.0.1"])


def test_dns_mx_without_dns_tools_names_them(bare_path):
    data = fact(linux.DnsLookup, bare_path("getent", "python3"), hostname="localhost", type="MX")
    assert data["missing"] == ["dig", "host", "nslookup"] and data["answers"] == []


def test_dns_rejects_unknown_record_types():
    with pytest.raises(ValueError, match="type must be one of A, AAAA, MX, CNAME"):
        linux.DnsLookup().command(hostname="x", type="TXT")


@pytest.mark.parametrize(
    ("method", "rtype", "output", "answers"),
    [
        ("dig", "MX", ["10 mx1.example.com.", "20 mx2.example.com."],
         [{"preference": 10, "exchange": "mx1.example.com"},
          {"preference": 20, "exchange": "mx2.example.com"}]),
        ("host", "MX", ["example.com mail is handled by 10 mx1.example.com."],
         [{"preference": 10, "exchange": "mx1.example.com"}]),
        ("nslookup", "MX", ["Server:\t\t10.0.0.1", "Address:\t10.0.0.1#53", "",
                            "example.com\tmail exchanger = 10 mx1.example.com."],
         [{"preference": 10, "exchange": "mx1.example.com"}]),
        ("dig", "CNAME", ["web.example.net."], ["web.example.net"]),
        ("dig", "CNAME", [";; connection timed out; no servers could be reached", ""], []),
        ("host", "CNAME", ["www.example.com is an alias for web.example.net."], ["web.example.net"]),
        ("getent", "AAAA", ["::ffff:1.2.3.4   STREAM x", "2001:db8::1 STREAM x"], ["2001:db8::1"]),
        ("nslookup", "A", ["Server:\t\t10.0.0.1", "Address:\t10.0.0.1#53", "Name:\texample.com",
                           "Address: 93.184.216.34"], ["93.184.216.34"]),
    ],
)
def test_dns_answers_from_each_tool(method, rtype, output, answers):
    assert linux.parse_dns_answers(method, rtype, "www.example.com", output) == answers
