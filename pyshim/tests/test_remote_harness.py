"""The remote-Mac harness (remote_macs.py) is honest: a fake Mac is reached with the
system ssh and its ssh_config, runs the checkout's binaries from a plain PATH, keeps its
machines to itself, and drops off the network when its sshd is killed.

Against a real OrbStack the same checks (but the killing) run against the Macs of
PYINFRA_ORBSTACK_TEST_REMOTE_MACS.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from remote_macs import SSH_CONFIG_VARIABLE, FakeMacs


def test_a_plain_pyinfra_orbstack_runs_on_each_mac(remote_macs):
    for mac in remote_macs.list[:2]:
        result = mac.ssh("pyinfra-orbstack", "version", check=True)
        assert re.fullmatch(r"pyinfra-orbstack \S+ \(protocol \d+\)\n", result.stdout), result.stdout
        # The binary finds the Mac's orbctl by itself, as it would on a real Mac.
        status = mac.ssh("pyinfra-orbstack", "status")
        assert (status.returncode, status.stdout.strip()) == (0, "Running"), status


def test_the_ssh_config_file_names_the_macs(remote_macs):
    if not isinstance(remote_macs, FakeMacs):
        pytest.skip("fake Macs only: real ones are in the user's ssh config")
    config = remote_macs.env[SSH_CONFIG_VARIABLE]
    assert config == str(remote_macs.ssh_config)
    for mac in remote_macs.list[:2]:
        result = subprocess.run(["ssh", "-F", config, mac.alias, "echo", "$ORBSIM_HOME"],
                                capture_output=True, text=True, timeout=60)
        assert (result.returncode, result.stdout) == (0, f"{mac.home}\n"), result
    # Strict host key checking: without the known_hosts file, the host key is refused.
    mac_a, mac_b = remote_macs["mac-a"], remote_macs["mac-b"]
    unknown = subprocess.run(["ssh", "-F", config, "-o", "UserKnownHostsFile=/dev/null", mac_a.alias, "true"],
                             capture_output=True, text=True, timeout=60)
    assert unknown.returncode == 255 and "Host key verification failed" in unknown.stderr, unknown
    # Each Mac takes only its own user key: mac-a's key at mac-b's port is refused.
    wrong_key = subprocess.run(["ssh", "-F", config, "-o", f"Port={mac_b.port}", mac_a.alias, "true"],
                               capture_output=True, text=True, timeout=60)
    assert wrong_key.returncode == 255 and "Permission denied (publickey)" in wrong_key.stderr, wrong_key


def test_a_machine_made_on_one_mac_is_only_there(orb, remote_macs):
    mac_a, mac_b = remote_macs.list[:2]
    name = remote_macs.new_name("harness-only-a")
    mac_a.ssh("pyinfra-orbstack", "machine", "create", "debian:bookworm", name, check=True, timeout=300)
    try:
        assert name in mac_a.orbctl("list", "-q").stdout.split()
        # What the Mac itself says over ssh matches what its orbctl says.
        assert name in mac_a.ssh("orbctl", "list", "-q", check=True).stdout.split()
        assert name not in mac_b.orbctl("list", "-q").stdout.split()
        assert name not in mac_b.ssh("orbctl", "list", "-q", check=True).stdout.split()
        assert name not in orb.orbctl("list", "-q").stdout.split(), "a fake Mac's machine is in the local orbctl"
        ran = mac_a.ssh("orbctl", "run", "-m", name, "cat", "/etc/debian_version", check=True)
        assert ran.stdout.strip()
    finally:
        mac_a.orbctl("delete", "-f", name, check=False, timeout=300)
    assert name not in mac_a.orbctl("list", "-q").stdout.split()


@pytest.mark.simulator("kills a fake Mac's sshd")
def test_killing_sshd_drops_the_mac_off_the_network(remote_macs):
    mac_a, mac_b = remote_macs["mac-a"], remote_macs["mac-b"]
    # A session still open when the Mac drops off ends with it.
    long = subprocess.Popen(["ssh", "-F", str(remote_macs.ssh_config), mac_a.alias, "sleep", "60"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert mac_a.ssh("true").returncode == 0
        mac_a.kill_sshd()
        assert long.wait(timeout=20) == 255
        down = mac_a.ssh("true", timeout=60)
        assert down.returncode == 255, down
        assert "Connection refused" in down.stderr, down.stderr
        assert mac_b.ssh("true").returncode == 0, "the other Mac is still there"
    finally:
        long.kill()
        long.wait()
        mac_a.restart_sshd()
    assert mac_a.ssh("true").returncode == 0, "restart_sshd brings the Mac back, same port and keys"
