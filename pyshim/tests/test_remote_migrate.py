"""Issue 13, item 3: moving a machine between Macs (`orbstack.machine_migrated`,
`pyinfra-orbstack machine migrate`), as a user runs it: the real `pyinfra` CLI on
@local (the controller), the system OpenSSH to two Macs (real sshd servers from
remote_macs.py, or the real Macs of PYINFRA_ORBSTACK_TEST_REMOTE_MACS), the archive
streamed from one Mac's `machine export-stream` to the other's `machine import-stream`.

The failure stages (export, transfer cut, import, verification, the controller killed)
are tested in Go (internal/command/migrate_test.go) with a fake ssh that can cut and
throttle the stream; here the whole path through pyinfra and sshd.
"""

from __future__ import annotations

import subprocess
import time

import pytest

from conftest import run_pyinfra
from test_remote_connector import remote_env

DEPLOY = """
from pyinfra_orbstack.operations import orbstack

orbstack.machine_migrated(name="move {name}", machine="{name}", source="{source}",
                          destination="{destination}", delete_source={delete}, checks={checks!r})
"""


def _temp_archives(mac, name: str) -> str:
    """The Mac's leftover temp archives of machine `name` (export or import side)."""
    return mac.ssh(f'ls -d "${{TMPDIR:-/tmp}}"/pyinfra-orbstack-*/{name}.tar.zst 2>/dev/null', timeout=60).stdout


def _sha(mac, name: str, path: str) -> str:
    return mac.orbctl("run", "-m", name, "-u", "root", "sha256sum", path, timeout=120).stdout.split()[0]


def test_machine_migrated_moves_a_machine_between_two_macs(orb, remote_macs, tmp_path):
    mac_a, mac_b = remote_macs.list[:2]
    name = remote_macs.new_name("migrate")
    mac_a.ssh("orbctl", "create", "-u", "dev", "debian", name, check=True, timeout=600)
    mac_a.orbctl("run", "-m", name, "-u", "root", "sh", "-c", "head -c 33554432 /dev/urandom > /srv/data")
    data = _sha(mac_a, name, "/srv/data")
    (tmp_path / "migrate.py").write_text(DEPLOY.format(
        name=name, source=mac_a.alias, destination=mac_b.alias, delete=True, checks=["/srv/data"]))
    env = remote_env(orb, remote_macs)

    start = time.monotonic()
    result = run_pyinfra(env, "-y", "@local", "migrate.py", cwd=tmp_path, timeout=900)
    took = time.monotonic() - start
    assert result.returncode == 0, result.stdout + result.stderr
    print(f"machine_migrated of a 32 MiB machine over ssh: {took:.1f}s (pyinfra run included)")

    assert name in mac_b.orbctl("list", "-q").stdout.split()
    assert name not in mac_a.orbctl("list", "-q").stdout.split(), "delete_source=True"
    assert _sha(mac_b, name, "/srv/data") == data
    assert mac_b.orbctl("info", name, "-f", "json").stdout.count('"running"') >= 1
    for mac in (mac_a, mac_b):
        assert _temp_archives(mac, name) == "", f"temp archive left on {mac.alias}"

    # Again: on the destination, gone from the source: nothing to do.
    again = run_pyinfra(env, "-y", "@local", "migrate.py", cwd=tmp_path, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "No changes" in again.stdout + again.stderr, again.stdout + again.stderr


def test_a_failed_migration_names_the_stage_and_leaves_both_macs_as_they_were(orb, remote_macs, tmp_path):
    mac_a, mac_b = remote_macs.list[:2]
    name = remote_macs.new_name("migrate-fails")
    mac_a.ssh("orbctl", "create", "-u", "dev", "debian", name, check=True, timeout=600)
    mac_a.orbctl("stop", name)
    (tmp_path / "migrate.py").write_text(DEPLOY.format(
        name=name, source=mac_a.alias, destination=mac_b.alias, delete=True, checks=["/etc/no-such-file"]))

    result = run_pyinfra(remote_env(orb, remote_macs), "-y", "@local", "migrate.py", cwd=tmp_path, timeout=600)
    text = result.stdout + result.stderr
    assert result.returncode != 0, text
    assert f"migrating {name}: export on Mac {mac_a.alias} failed: cannot read /etc/no-such-file" in text, text
    assert f"nothing was kept on Mac {mac_b.alias}" in text, text
    # The source is unchanged: there, and stopped again after its files were read.
    assert name in mac_a.orbctl("list", "-q").stdout.split()
    assert '"stopped"' in mac_a.orbctl("info", name, "-f", "json").stdout
    assert name not in mac_b.orbctl("list", "-q").stdout.split()
    assert not [m for m in mac_b.orbctl("list", "-q").stdout.split() if m.startswith("migrating-")]
    for mac in (mac_a, mac_b):
        assert _temp_archives(mac, name) == "", f"temp archive left on {mac.alias}"


@pytest.mark.simulator("kills a fake Mac's sshd mid-transfer")
def test_the_destination_dropping_off_mid_transfer_leaves_both_macs_as_they_were(orb, remote_macs, real_binary):
    mac_a, mac_b = remote_macs.list[:2]
    name = remote_macs.new_name("migrate-drop")
    mac_a.ssh("orbctl", "create", "-u", "dev", "debian", name, check=True, timeout=600)
    # ~300 MB that does not compress: long enough in transit to be cut mid-way.
    mac_a.orbctl("run", "-m", name, "-u", "root", "sh", "-c", "head -c 300000000 /dev/urandom > /var/tmp/bulk")
    bulk = _sha(mac_a, name, "/var/tmp/bulk")
    env = remote_env(orb, remote_macs)
    proc = subprocess.Popen([str(real_binary), "machine", "migrate", name, "--from", mac_a.alias, "--to", mac_b.alias,
                             "--delete-source"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # The import side's archive, with bytes in it (the fake Macs share this box's /tmp,
        # where the export side's archive is too: only the import's counts).
        receiving = (f'find "${{TMPDIR:-/tmp}}" -maxdepth 2 -path "*/pyinfra-orbstack-import-*/{name}.tar.zst" '
                     f'-size +1M 2>/dev/null | head -1')
        under_way = ""
        deadline = time.monotonic() + 120
        while not under_way and proc.poll() is None and time.monotonic() < deadline:
            under_way = mac_b.ssh(receiving, timeout=60).stdout.strip()
            time.sleep(0.05)
        assert under_way, f"the transfer to {mac_b.alias} was never seen under way: {proc.communicate()}"
        mac_b.kill_sshd()
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        mac_b.restart_sshd()
    print(stderr)  # shown on failure, and with -s
    assert proc.returncode != 0, stderr
    assert f"migrating {name}:" in stderr and mac_b.alias in stderr and "Traceback" not in stderr, stderr
    assert f"{name} is unchanged on Mac {mac_a.alias}" in stderr, stderr
    # A keeps its machine, running and whole; B has nothing of it, not even a temp archive.
    assert '"running"' in mac_a.orbctl("info", name, "-f", "json").stdout
    assert _sha(mac_a, name, "/var/tmp/bulk") == bulk
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (_temp_archives(mac_b, name) or _temp_archives(mac_a, name)):
        time.sleep(0.5)
    listed_b = mac_b.orbctl("list", "-q").stdout.split()
    assert name not in listed_b and not [m for m in listed_b if m.startswith("migrating-")], listed_b
    for mac in (mac_a, mac_b):
        assert _temp_archives(mac, name) == "", f"temp archive left on {mac.alias}"
