"""Issue 13, item 1: `@orbstack/MAC:MACHINE` — machines on other Macs reached over SSH.

Seen from outside as a user sees it: the real `pyinfra` CLI, the real binary as the
local relay (`serve --mac`) and on each remote Mac (`ssh MAC pyinfra-orbstack serve`,
system OpenSSH), real sshd servers (pyshim/tests/remote_macs.py), simulator machines
in each Mac's own ORBSIM_HOME. Both "Macs" are this box, so the process list sampled
here is both Macs' process lists.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import sys
import time
from pathlib import Path

import pytest

from conftest import TESTS, run_pyinfra
from test_faults import (
    HOST_PIDNS,
    ArgvSampler,
    PyinfraRun,
    host_leftover_problems,
    is_serve,
    kill_in_machine,
    poll,
    process_table,
    running_in_machine,
    sleep_marker,
    wait_until_running,
)

# Reads this box's /proc for the processes both "Macs" run (on macOS there is none).
needs_proc = pytest.mark.skipif(not HOST_PIDNS, reason="reads /proc, as on the simulator's Linux")

SSH_VARIABLES = ("PYINFRA_ORBSTACK_SSH_CONFIG", "PYINFRA_ORBSTACK_SSH")


def remote_env(orb, macs) -> dict[str, str]:
    """The local simulator's environment (this Mac) plus how to reach the remote Macs."""
    env = dict(orb.env)
    env.update({k: v for k, v in macs.env.items() if k in SSH_VARIABLES})
    return env


def write_inventory(directory: Path, hosts: list[tuple[str, dict]]) -> None:
    (directory / "inventory.py").write_text(f"hosts = {hosts!r}\n")


def serves(table=None) -> list:
    """Every `pyinfra-orbstack serve` process on this box: (relay or remote, process).

    A child the binary forked (ssh, orbctl) shows the binary's own argv until its exec;
    on a loaded box a sample can catch one in that window: such a process, whose parent
    has the same argv, is not another binary.
    """
    table = table or process_table()
    found = []
    for p in table.values():
        args = p.args
        parent = table.get(p.ppid)
        if parent is not None and parent.args == args:
            continue
        if is_serve(p):
            found.append(("relay" if "--mac" in args else "serve", p))
    return found


@pytest.fixture(scope="module")
def mac_machines(remote_macs):
    """One running machine on each of the two remote Macs, made over ssh as a user would."""
    made = {}
    for mac in remote_macs.list[:2]:
        name = remote_macs.new_name(f"rc-{mac.alias}")
        mac.ssh("orbctl", "create", "-u", "dev", "debian", name, check=True, timeout=600)
        made[mac.alias] = name
    return made


def test_a_deploy_reaches_a_machine_on_another_mac_and_only_there(orb, remote_macs, mac_machines, tmp_path):
    mac = remote_macs.list[0]
    machine = mac_machines[mac.alias]
    payload = os.urandom(3 << 20) + b"\x00 end\n"
    (tmp_path / "payload.bin").write_bytes(payload)
    (tmp_path / "deploy.py").write_text(f"""
from io import StringIO
from pyinfra.operations import files, server
server.shell(name="who", commands=["echo on-$(hostname) > /tmp/rc-who"])
files.put(name="bytes", src="payload.bin", dest="/tmp/rc-payload.bin")
files.put(name="in memory", src=StringIO("from memory\\n"), dest="/tmp/rc-memory.txt")
files.get(name="back", src="/tmp/rc-payload.bin", dest={str(tmp_path / "back.bin")!r})
""")
    result = run_pyinfra(remote_env(orb, remote_macs), "-y", f"@orbstack/{mac.alias}:{machine}", "deploy.py",
                         cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "back.bin").read_bytes() == payload
    there = mac.orbctl("run", "-m", machine, "sh", "-c", "cat /tmp/rc-who /tmp/rc-memory.txt; sha256sum /tmp/rc-payload.bin").stdout
    import hashlib
    assert there.splitlines() == [f"on-{machine}", "from memory", f"{hashlib.sha256(payload).hexdigest()}  /tmp/rc-payload.bin"]
    # Not on this Mac's simulator, whose machines have other names.
    assert machine not in orb.orbctl("list", "-q").stdout.split()


def test_mac_colon_is_every_machine_on_that_mac(orb, remote_macs, mac_machines, tmp_path):
    mac_b = remote_macs.list[1]
    result = run_pyinfra(remote_env(orb, remote_macs), f"@orbstack/{mac_b.alias}:", "exec", "--", "hostname",
                         cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    text = result.stdout + result.stderr
    listed = set(mac_b.orbctl("list", "-q").stdout.split())
    assert mac_machines[mac_b.alias] in listed
    for name in listed:
        assert f"@orbstack/{mac_b.alias}:{name}" in text
    assert mac_machines[remote_macs.list[0].alias] not in text


@pytest.mark.simulator("twenty machines on fake Macs; on real Macs it would create them there")
def test_twenty_machines_on_three_macs_in_one_run(orb, remote_macs, tmp_path):
    mac_a, mac_b = remote_macs.list[:2]
    names = {"": [orb.new_name(f"t3-l{i}") for i in range(6)],
             mac_a.alias: [remote_macs.new_name(f"t3-a{i}") for i in range(7)],
             mac_b.alias: [remote_macs.new_name(f"t3-b{i}") for i in range(7)]}
    hosts = [(f"@orbstack/{mac + ':' if mac else ''}{name}", {"orbstack_image": "debian"})
             for mac, group in names.items() for name in group]
    write_inventory(tmp_path, hosts)
    (tmp_path / "deploy.py").write_text("""
from io import StringIO
from pyinfra import host
from pyinfra.operations import files, server
server.shell(name="mark", commands=[f"echo {host.name} > /tmp/t3-who"])
files.put(name="put", src=StringIO(host.name + "\\n"), dest="/tmp/t3-put")
""")
    env = remote_env(orb, remote_macs)
    try:
        with PyinfraRun(env, tmp_path, "t3-", "-y", "inventory.py", "deploy.py") as run:
            # This run's binaries: the local serve and relays are pyinfra's children; a
            # remote serve is one with a fake Mac's ORBSIM_HOME that started after pyinfra.
            homes = {mac_a.home: mac_a.alias, mac_b.home: mac_b.alias}
            seen_serves: dict[tuple[int, int], tuple[str, str]] = {}
            while run.running:
                for kind, p in serves():
                    if p.key in run.before or p.key in seen_serves:
                        continue
                    home = re.search(r"ORBSIM_HOME=([^\0]*)", _environ(p.pid))
                    where = homes.get(home[1]) if home else None
                    if p.ppid == run.proc.pid or where:
                        seen_serves[p.key] = (kind if p.ppid == run.proc.pid else f"serve on {where}", p.line())
                time.sleep(0.05)
            output = run.wait(timeout=600)
        assert run.returncode == 0, output
        for mac, group in names.items():
            target = {"": orb, mac_a.alias: mac_a, mac_b.alias: mac_b}[mac]
            for name in group:
                host = f"@orbstack/{mac + ':' if mac else ''}{name}"
                got = target.orbctl("run", "-m", name, "cat", "/tmp/t3-who", "/tmp/t3-put").stdout
                assert got == f"{host}\n{host}\n", (host, got)
        # One local binary for this Mac, one relay per remote Mac, one remote binary per Mac.
        kinds = sorted(kind for kind, _ in seen_serves.values())
        assert kinds == ["relay", "relay", "serve", f"serve on {mac_a.alias}", f"serve on {mac_b.alias}"], \
            sorted(seen_serves.values())
        exec_result = run_pyinfra(env, "inventory.py", "exec", "--", "cat", "/tmp/t3-who", cwd=tmp_path, timeout=600)
        assert exec_result.returncode == 0, exec_result.stdout + exec_result.stderr
        assert sum(host in exec_result.stdout + exec_result.stderr for host, _ in hosts) == 20
    finally:
        orb.delete_ours(orb.new_name("t3-"))
        for mac in (mac_a, mac_b):
            left = [m for m in mac.orbctl("list", "-q").stdout.split() if "t3-" in m]
            if left:
                mac.orbctl("delete", "-f", *left, check=False, timeout=600)


@pytest.mark.simulator("needs a fake Mac without pyinfra-orbstack")
def test_a_mac_without_the_binary_fails_its_hosts_only(orb, remote_macs, mac_machines, tmp_path):
    bare = remote_macs.macs.get("mac-bare") or remote_macs.start("mac-bare", binary=False)
    mac_a = remote_macs.list[0]
    write_inventory(tmp_path, [(f"@orbstack/{bare.alias}:nothing", {}),
                               (f"@orbstack/{mac_a.alias}:{mac_machines[mac_a.alias]}", {})])
    (tmp_path / "deploy.py").write_text(
        "from pyinfra.operations import server\nserver.shell(commands=['echo went > /tmp/rc-went'])\n")
    result = run_pyinfra(remote_env(orb, remote_macs), "-y", "inventory.py", "deploy.py", cwd=tmp_path, timeout=300)
    text = result.stdout + result.stderr
    assert "pyinfra-orbstack is not installed on Mac mac-bare" in text, text
    assert "orbstack_remote_binary" in text and "Traceback" not in text
    assert mac_a.orbctl("run", "-m", mac_machines[mac_a.alias], "cat", "/tmp/rc-went").stdout == "went\n"


@pytest.mark.simulator("a fake remote binary of another protocol")
def test_a_remote_binary_of_another_protocol_is_refused_naming_the_mac(orb, remote_macs, mac_machines, tmp_path):
    mac_a = remote_macs.list[0]
    old = mac_a.dir / "old-pyinfra-orbstack"
    old.write_text(f"#!/bin/sh\nFAKE_PROTOCOL_VERSION=1 exec {sys.executable} {TESTS / 'fake_binary.py'} \"$@\"\n")
    old.chmod(0o755)
    write_inventory(tmp_path, [(f"@orbstack/{mac_a.alias}:{mac_machines[mac_a.alias]}",
                                {"orbstack_remote_binary": str(old)})])
    result = run_pyinfra(remote_env(orb, remote_macs), "-y", "inventory.py", "exec", "--", "true",
                         cwd=tmp_path, timeout=120)
    text = result.stdout + result.stderr
    assert result.returncode != 0
    assert "mac-a" in text and "protocol" in text and "Traceback" not in text, text


def test_an_unreachable_mac_is_a_connect_error_saying_what_to_check(orb, remote_macs, tmp_path):
    result = run_pyinfra(remote_env(orb, remote_macs), "@orbstack/ssh://root@127.0.0.1:1:web", "exec", "--", "true",
                         cwd=tmp_path, timeout=120)
    text = result.stdout + result.stderr
    assert result.returncode != 0
    assert "cannot reach Mac ssh://root@127.0.0.1:1 over SSH" in text, text
    assert "Traceback" not in text


def _remote_serves_of(mac) -> list:
    return [p for kind, p in serves() if kind == "serve" and mac.home in _environ(p.pid)]


def _environ(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    except OSError:
        return ""


@pytest.mark.simulator("kills a fake Mac's sshd")
def test_the_mac_dropping_off_fails_pending_calls_within_seconds_and_stops_the_command(
        orb, remote_macs, mac_machines, tmp_path):
    mac_a = remote_macs.list[0]
    machine = mac_machines[mac_a.alias]
    marker = sleep_marker()
    (tmp_path / "deploy.py").write_text(
        f"from pyinfra.operations import server\nserver.shell(commands=['sleep {marker}'])\n")
    try:
        with PyinfraRun(remote_env(orb, remote_macs), tmp_path, machine,
                        "-y", f"@orbstack/{mac_a.alias}:{machine}", "deploy.py") as run:
            lines = wait_until_running(mac_a, machine, marker, run)
            remote = _remote_serves_of(mac_a)
            assert remote, "no remote serve for mac-a was found"
            dropped = time.monotonic()
            mac_a.kill_sshd()
            output = run.wait(timeout=60)
            took = run.ended - dropped
        assert run.returncode != 0
        assert "SSH connection to Mac mac-a dropped" in output, output
        assert took < 20, f"pyinfra took {took:.1f} s to give up on a dropped Mac"
        # The remote binary saw its connection end and killed the command.
        left = poll(lambda: running_in_machine(mac_a, machine, marker), lambda found: not found, 15)
        assert not left, f"still running on mac-a after the connection dropped: {left}"
        gone = poll(lambda: [p for p in remote if p.pid in process_table()], lambda found: not found, 15)
        assert not gone, f"remote serve still running: {[p.line() for p in gone]}"
    finally:
        kill_in_machine(mac_a, machine, running_in_machine(mac_a, machine, marker))
        mac_a.restart_sshd()


@needs_proc
@pytest.mark.parametrize("fault", ["timeout", "ctrl-c"])
def test_a_timeout_or_ctrl_c_kills_the_command_on_the_remote_mac(orb, remote_macs, mac_machines, tmp_path, fault):
    mac_b = remote_macs.list[1]
    machine = mac_machines[mac_b.alias]
    marker = sleep_marker()
    timeout = ", _timeout=2" if fault == "timeout" else ""
    (tmp_path / "deploy.py").write_text(
        f"from pyinfra.operations import server\n"
        f"server.shell(commands=[\"trap '' TERM; sleep {marker}; echo done\"]{timeout})\n")
    try:
        with PyinfraRun(remote_env(orb, remote_macs), tmp_path, machine,
                        "-y", f"@orbstack/{mac_b.alias}:{machine}", "deploy.py") as run:
            wait_until_running(mac_b, machine, marker, run)
            if fault == "ctrl-c":
                os.killpg(run.proc.pid, signal.SIGINT)
            output = run.wait(timeout=60)
        if fault == "timeout":
            assert run.returncode != 0 and "timed out" in output, output
        else:  # pyinfra's own words (and exit status 0) for Ctrl-C
            assert "Exiting upon user request" in output, output
        left = poll(lambda: running_in_machine(mac_b, machine, marker), lambda found: not found, 10)
        assert not left, f"still running on {mac_b.alias} after the {fault}: {left}"
        assert not poll(lambda: [p for _, p in serves() if mac_b.alias in p.args], lambda f: not f, 10)
    finally:
        kill_in_machine(mac_b, machine, running_in_machine(mac_b, machine, marker))


@pytest.mark.simulator("both fake Macs are this box, whose process list (and machines') the sampler reads")
def test_command_text_and_sudo_password_stay_out_of_both_macs_process_lists(orb, remote_macs, mac_machines, tmp_path):
    mac_a = remote_macs.list[0]
    machine = mac_machines[mac_a.alias]
    marker = f"cmd-secret-{secrets.token_hex(8)}"
    password = f"pw-secret-{secrets.token_hex(8)}"
    (tmp_path / "deploy.py").write_text(
        "from io import StringIO\nfrom pyinfra.operations import files, server\n"
        f"server.shell(name='secretive', commands=['echo {marker} > /tmp/rc-secret; sleep 2'], _sudo=True, "
        f"_sudo_password={password!r})\n"
        f"files.put(src=StringIO('{marker}\\n'), dest='/tmp/rc-secret-file', _sudo=True, _sudo_password={password!r})\n")
    with ArgvSampler({"the command text": marker, "the sudo password": password}) as sampler:
        result = run_pyinfra(remote_env(orb, remote_macs), "-y", f"@orbstack/{mac_a.alias}:{machine}", "deploy.py",
                             cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "the command text" in sampler.in_machine, "the sampling never overlapped the command"
    leaks = [f"{' and '.join(found)}: {p.line()}" for p, found in sampler.on_host.values()]
    assert not leaks, "\n".join(leaks)


def _relay_of(run: PyinfraRun, alias: str):
    relays = [p for kind, p in serves() if kind == "relay" and p.ppid == run.proc.pid and alias in p.args]
    assert len(relays) == 1, f"want one relay for {alias} under pyinfra, found {[p.line() for p in relays]}"
    return relays[0]


@pytest.mark.simulator("kill -9 of the local relay")
def test_a_killed_relay_ends_the_command_on_the_remote_mac_and_leaves_nothing(orb, remote_macs, mac_machines,
                                                                             tmp_path):
    mac_a = remote_macs.list[0]
    machine = mac_machines[mac_a.alias]
    marker = sleep_marker()
    (tmp_path / "deploy.py").write_text(
        f"from pyinfra.operations import server\nserver.shell(commands=[\"trap '' TERM; sleep {marker}\"])\n")
    try:
        with PyinfraRun(remote_env(orb, remote_macs), tmp_path, machine,
                        "-y", f"@orbstack/{mac_a.alias}:{machine}", "deploy.py") as run:
            wait_until_running(mac_a, machine, marker, run)
            remote = _remote_serves_of(mac_a)
            os.kill(_relay_of(run, mac_a.alias).pid, signal.SIGKILL)
            output = run.wait(timeout=60)
            problems = host_leftover_problems(run)  # ssh and anything else the relay started
        assert run.returncode != 0, output
        assert "Traceback" not in output
        left = poll(lambda: running_in_machine(mac_a, machine, marker), lambda found: not found, 15)
        assert not left, f"still running on {mac_a.alias} after the relay died: {left}"
        assert not poll(lambda: [p for p in remote if p.pid in process_table()], lambda f: not f, 15)
        assert not problems, problems
    finally:
        kill_in_machine(mac_a, machine, running_in_machine(mac_a, machine, marker))


def cut_mid_way(orb, remote_macs, mac, machine: str, tmp_path: Path, fault: str, what: str,
                under_way) -> None:
    """Runs deploy.py on MAC:MACHINE, and once under_way() finds something, kills the
    local relay or drops the Mac; pyinfra must fail that host without a traceback and
    leave nothing running here."""
    with PyinfraRun(remote_env(orb, remote_macs), tmp_path, machine,
                    "-y", f"@orbstack/{mac.alias}:{machine}", "deploy.py") as run:
        seen = poll(under_way, lambda found: found or not run.running, 60, interval=0.02)
        if not seen:
            pytest.fail(f"{what} was never seen under way:\n{run.output}")
        if fault == "relay killed":
            os.kill(_relay_of(run, mac.alias).pid, signal.SIGKILL)
        else:
            mac.kill_sshd()
        output = run.wait(timeout=60)
        problems = host_leftover_problems(run)
    assert run.returncode != 0, output
    assert "Traceback" not in output
    assert not problems, problems


@pytest.fixture(scope="module")
def big_payload(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("remote-big") / "big.bin"
    with open(path, "wb") as f:
        for _ in range(512):
            f.write(os.urandom(1 << 20))
    return path


def _temp_files(mac, machine: str, directory: str) -> list[str]:
    out = mac.orbctl("run", "-m", machine, "-u", "root", "sh", "-c",
                     f"for f in {directory}/.pyinfra-orbstack.*; do [ -e \"$f\" ] && stat -c '%s %n' \"$f\"; done; true",
                     check=False).stdout
    return out.split("\n")[:-1]


@pytest.mark.simulator("kills the relay or a fake Mac's sshd")
@pytest.mark.parametrize("fault", ["relay killed", "mac dropped"])
def test_a_put_cut_mid_way_keeps_the_old_file_and_leaves_no_temp_file(orb, remote_macs, mac_machines, tmp_path,
                                                                     big_payload, fault):
    mac_a = remote_macs.list[0]
    machine = mac_machines[mac_a.alias]
    dest = "/var/tmp/rc-big.bin"
    mac_a.orbctl("run", "-m", machine, "-u", "dev", "sh", "-c", f"echo old > {dest}")
    (tmp_path / "deploy.py").write_text(
        f"from pyinfra.operations import files\nfiles.put(src={str(big_payload)!r}, dest={dest!r})\n")
    try:
        cut_mid_way(orb, remote_macs, mac_a, machine, tmp_path, fault, "the upload",
                    lambda: [t for t in _temp_files(mac_a, machine, "/var/tmp") if int(t.split()[0]) > 0])
        assert mac_a.orbctl("run", "-m", machine, "cat", dest).stdout == "old\n", "the old file was not kept"
        left = poll(lambda: _temp_files(mac_a, machine, "/var/tmp"), lambda found: not found, 15)
        assert not left, f"temp files left in the machine: {left}"
    finally:
        if fault == "mac dropped":
            mac_a.restart_sshd()


@pytest.mark.simulator("kills the relay or a fake Mac's sshd")
@pytest.mark.parametrize("fault", ["relay killed", "mac dropped"])
def test_a_get_cut_mid_way_leaves_no_part_file_here(orb, remote_macs, mac_machines, tmp_path, fault):
    mac_a = remote_macs.list[0]
    machine = mac_machines[mac_a.alias]
    source = "/var/tmp/rc-big-source.bin"
    mac_a.orbctl("run", "-m", machine, "-u", "root", "sh", "-c",
                 f"head -c {512 << 20} /dev/urandom > {source}; chmod 644 {source}")
    local = tmp_path / "got"
    local.mkdir()
    (tmp_path / "deploy.py").write_text(
        f"from pyinfra.operations import files\nfiles.get(src={source!r}, dest={str(local / 'big.bin')!r})\n")
    try:
        cut_mid_way(orb, remote_macs, mac_a, machine, tmp_path, fault, "the download",
                    lambda: [p.name for p in local.iterdir() if p.stat().st_size > 0 and p.name != "big.bin"])
        assert not list(local.iterdir()), f"left here: {list(local.iterdir())}"
    finally:
        if fault == "mac dropped":
            mac_a.restart_sshd()
        mac_a.orbctl("run", "-m", machine, "-u", "root", "rm", "-f", source, check=False)


def test_ssh_settings_ssh_would_misread_are_refused_before_ssh_runs(orb, tmp_path):
    planted = tmp_path / "planted"
    hosts = [(f"@orbstack/-oProxyCommand=touch {planted}:web", {}),
             ("@orbstack/mac-x:web", {"orbstack_ssh_options": ["NoEquals"]}),
             ("@orbstack/mac-y:web", {"orbstack_ssh_user": "-oProxyCommand=touch " + str(planted)})]
    write_inventory(tmp_path, hosts)
    result = run_pyinfra(orb.env, "inventory.py", "exec", "--", "true", cwd=tmp_path, timeout=120)
    text = result.stdout + result.stderr
    assert result.returncode != 0 and "Traceback" not in text, text
    assert not planted.exists(), "ssh ran an option smuggled in as a destination"
    assert text.count("fix this host's orbstack_mac / orbstack_ssh_* data") == 3, text
    assert 'invalid ssh option "NoEquals" for Mac mac-x: write it as KEY=VALUE' in text
