"""The Mac-side facts through the real pyinfra CLI against the simulator, as each
OrbStack version prints things (ORBSIM_VERSION), and with OrbStack stopped, starting or
failing to start (ORBSIM_ORBSTACK). The simulator's output formats were written from the
orbctl reference independently of these parsers.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import pyinfra_results, run_pyinfra


def have_root() -> bool:
    """Simulator machines are namespaces: creating them needs root and unshare."""
    return os.geteuid() == 0 and shutil.which("unshare") is not None


def facts(orb, *args: str, **env: str) -> tuple[dict, str]:
    out, result = pyinfra_results(orb.with_knobs(**env) if env else orb.env, "@local", "fact", *args)
    return {name: hosts["@local"] for name, hosts in out.items()}, result.stderr


@pytest.mark.simulator("OrbStack versions side by side (ORBSIM_VERSION)")
@pytest.mark.parametrize(
    ("version", "has_ip", "has_default_user"),
    [("0.14.0", False, False), ("1.9.0", False, True), ("1.11.3", True, True), ("2.2.3", True, True)],
)
def test_machine_facts_read_every_version_s_json(orb, version, has_ip, has_default_user):
    machine = orb.machine("facts")
    got, err = facts(orb, "orbstack.Machines", "orbstack.Machine", f"machine={machine}",
                     "orbstack.Version", ORBSIM_VERSION=version)
    listed = got["orbstack.Machines"][machine]
    info = got[f"orbstack.Machine (machine={machine})"]
    assert (listed["distro"], info["distro"], info["state"]) == ("debian", "debian", "running"), err
    assert bool(info["ip4"]) == has_ip  # ip4 arrived in 1.11.3
    assert bool(info["default_user"]) == has_default_user  # config{} arrived in 0.15
    assert got["orbstack.Version"]["version"] == version


@pytest.mark.simulator("OrbStack versions side by side (ORBSIM_VERSION)")
@pytest.mark.parametrize("version", ["1.9.0", "1.11.3", "2.2.3"])
def test_config_value_is_the_value_on_every_orbstack_version(orb, version):
    got, err = facts(orb, "orbstack.ConfigValue", "key=memory_mib", "orbstack.Config",
                     ORBSIM_VERSION=version)
    shown = got["orbstack.Config"]["memory_mib"]
    value = got["orbstack.ConfigValue (key=memory_mib)"]
    # 2.x prints the bare value; 1.11.3 printed every line (a bug: the binary picks the
    # key's); 1.9 had no config get (the binary reads config show).
    assert value == shown, err


@pytest.mark.simulator("a stopped or starting OrbStack")
@pytest.mark.parametrize(("mode", "status"), [("stopped", "Stopped"), ("starting", "Starting")])
def test_status_reports_orbstack_s_state(orb, mode, status):
    got, err = facts(orb, "orbstack.Status", ORBSIM_ORBSTACK=mode)
    assert got["orbstack.Status"] == status, err


@pytest.mark.simulator("an OrbStack that fails to start")
def test_orbstack_failing_to_start_fails_the_fact_with_orbctl_s_message(orb):
    machine = orb.machine("facts")
    result = run_pyinfra(orb.with_knobs(ORBSIM_ORBSTACK="broken"), "@local", "fact",
                         "orbstack.Machine", f"machine={machine}")
    assert "failed to start OrbStack" in result.stderr
    assert "could not load fact: orbstack.Machine" in result.stderr


def minimal_rootfs(root: Path) -> Path:
    """A machine image with only sh, cat, tail, tr and wc: no ip, ping, nc, curl, dig,
    getent, bash or python3."""
    for sub in ["bin", "usr/bin", "etc", "proc", "sys", "run", "dev", "tmp", "root", "mnt/mac"]:
        (root / sub).mkdir(parents=True, exist_ok=True)
    tools = {"bin/sh": shutil.which("dash") or shutil.which("sh")}
    tools.update({f"usr/bin/{t}": shutil.which(t) for t in ["cat", "tail", "tr", "wc"]})
    libs = set()
    for dest, src in tools.items():
        shutil.copy2(src, root / dest)
        ldd = subprocess.run(["ldd", src], capture_output=True, text=True).stdout
        libs.update(re.findall(r"(/\S+\.so[.\d]*)", ldd))
    for lib in libs:
        (root / lib.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(lib, root / lib.lstrip("/"))
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\n")
    (root / "etc/resolv.conf").write_text("nameserver 192.0.2.53\n")
    return root


@pytest.mark.simulator("a machine from a hand-made root filesystem (ORBSIM_ROOTFS_ALPINE)")
def test_machine_facts_in_a_machine_without_the_usual_tools(orb, tmp_path):
    if not have_root() or not shutil.which("ldd"):
        pytest.skip("needs root (simulator machines) and ldd (to build a minimal image)")
    name = orb.new_name("facts-min")
    env = orb.with_knobs(ORBSIM_ROOTFS_ALPINE=str(minimal_rootfs(tmp_path / "root")))
    created = subprocess.run(["orbctl", "create", "alpine", name], env=env, capture_output=True,
                             text=True, timeout=180)
    if created.returncode != 0:
        pytest.skip(f"the simulator cannot create machines here: {created.stderr.strip()}")
    try:
        info = json.loads(orb.orbctl("info", name, "-f", "json").stdout)
        out, result = pyinfra_results(
            orb.env, f"@orbstack/{name}", "fact", "orbstack.Network",
            "orbstack.TcpPort", "target=127.0.0.1", "port=1", "orbstack.Http", "url=http://127.0.0.1:1/",
            "orbstack.Ping", "target=127.0.0.1", "orbstack.DnsLookup", "hostname=localhost",
        )
        assert result.returncode == 0, result.stderr
        got = {fact: hosts[f"@orbstack/{name}"] for fact, hosts in out.items()}
    finally:
        orb.orbctl("delete", "-f", name, check=False)

    network = got["orbstack.Network"]
    assert network["source"] == "proc", "no ip command: read from /proc"
    assert info["ip4"] in network["ipv4"], "the address OrbStack reports, found from /proc"
    assert network["interfaces"]["lo"]["ipv4"] == ["127.0.0.1/8"]
    assert network["dns_servers"] == ["192.0.2.53"]
    assert got["orbstack.TcpPort (port=1, target=127.0.0.1)"]["missing"] == ["nc", "bash", "python3"]
    assert got["orbstack.Http (url=http://127.0.0.1:1/)"]["missing"] == ["curl", "wget", "python3"]
    assert got["orbstack.Ping (target=127.0.0.1)"]["missing"] == ["ping"]
    assert got["orbstack.DnsLookup (hostname=localhost)"]["missing"] == [
        "dig", "getent", "python3", "host", "nslookup",
    ]
