"""Issue 13, item 2: machine lifecycle on remote Macs through pyinfra's own @ssh
connector, as a user runs it: one inventory naming two Macs as @ssh hosts, one deploy
of `orbstack.machine` operations with different settings per Mac. The operations
yield `pyinfra-orbstack machine ...` commands that run from the PATH of each Mac's
non-interactive shell; the Mac-side facts read that binary's JSON.

What landed where is checked with each Mac's own orbctl (remote_macs.py: a fake Mac's
bin/orbctl with its ORBSIM_HOME, or a real Mac's orbctl over ssh), not our code path.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
import uuid

import pytest

from conftest import pyinfra_results, run_pyinfra

DEPLOY = textwrap.dedent(
    """
    from pyinfra import host
    from pyinfra_orbstack.operations import orbstack

    orbstack.machine(
        name="the Mac's machine",
        machine=host.data.machine,
        image=host.data.image,
        user=host.data.machine_user,
        running=host.data.running,
    )
    """,
)

MISSING = "pyinfra-orbstack not found on this host"

# What each Mac's machine should be: different images, users and states.
SETTINGS = [
    {"image": "debian:bookworm", "machine_user": "deploy", "running": True},
    {"image": "ubuntu:noble", "machine_user": "ops", "running": False},
]


def write_inventory(path, hosts: list[tuple[str, dict]]) -> None:
    """One group per Mac (`mac_a`, `mac_b`, ...), each one @ssh host with its data."""
    lines = [f"{alias.replace('-', '_')} = [({alias!r}, {data!r})]\n" for alias, data in hosts]
    path.write_text("".join(lines))


def listed(mac) -> dict[str, dict]:
    """The Mac's machines as its own orbctl lists them."""
    out = mac.orbctl("list", "-f", "json").stdout
    return {m["name"]: m for m in json.loads(out or "[]") or []}


def changed(results: dict) -> list[str]:
    return [op["name"] for op in results["results"]["operations"] if op["success"]]


def must_run(env, *args, cwd) -> dict:
    results, result = pyinfra_results(env, "-y", *args, cwd=cwd)
    assert result.returncode == 0, f"pyinfra {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return results


@pytest.fixture(scope="module")
def deploy(remote_macs, tmp_path_factory):
    """(the two Macs, their machine names, the work dir with inventory.py and deploy.py)."""
    macs = remote_macs.list[:2]
    suffix = uuid.uuid4().hex[:6]
    names = [remote_macs.new_name(f"remote-lc-{i}-{suffix}") for i in range(len(macs))]
    workdir = tmp_path_factory.mktemp("remote-lifecycle")
    write_inventory(workdir / "inventory.py", [
        (mac.alias, {**mac.pyinfra_ssh_data, "machine": name, **settings})
        for mac, name, settings in zip(macs, names, SETTINGS)
    ])
    (workdir / "deploy.py").write_text(DEPLOY)
    yield macs, names, workdir
    for mac, name in zip(macs, names):
        mac.orbctl("delete", "-f", name, check=False, timeout=600)


def test_one_deploy_makes_each_mac_its_own_machine_and_a_second_changes_nothing(orb, remote_macs, deploy):
    (mac_a, mac_b), (name_a, name_b), workdir = deploy

    dry = run_pyinfra(remote_macs.env, "--dry", "inventory.py", "deploy.py", cwd=workdir)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    # On a Mac over @ssh the binary is the one on its PATH, by its plain name.
    assert (f"[{mac_a.alias}] the Mac's machine: will run: "
            f"pyinfra-orbstack machine create -u deploy debian:bookworm {name_a}") in dry.stderr, dry.stderr
    assert (f"[{mac_b.alias}] the Mac's machine: will run: "
            f"pyinfra-orbstack machine create -u ops ubuntu:noble {name_b}") in dry.stderr, dry.stderr
    assert name_a not in listed(mac_a), "--dry must not create anything"

    first = must_run(remote_macs.env, "inventory.py", "deploy.py", cwd=workdir)
    assert changed(first) == ["the Mac's machine"]
    assert len(first["results"]["operations"][0]["success"]) == 2, first  # on both Macs

    on_a, on_b = listed(mac_a), listed(mac_b)
    assert (on_a[name_a]["image"]["distro"], on_a[name_a]["state"]) == ("debian", "running"), on_a[name_a]
    assert on_a[name_a]["config"]["default_username"] == "deploy"
    image_b = on_b[name_b]["image"]
    assert (image_b["distro"], image_b["version"], on_b[name_b]["state"]) == ("ubuntu", "noble", "stopped"), on_b
    assert on_b[name_b]["config"]["default_username"] == "ops"
    assert name_b not in on_a and name_a not in on_b, "each machine on its own Mac only"
    local = orb.orbctl("list", "-q", check=False).stdout.split()
    assert name_a not in local and name_b not in local, "nothing on the machine running pyinfra"
    # The machine on mac-a really runs, as its default user.
    whoami = mac_a.ssh("orbctl", "run", "-m", name_a, "whoami", check=True)
    assert whoami.stdout.strip() == "deploy"

    second = must_run(remote_macs.env, "inventory.py", "deploy.py", cwd=workdir)
    assert changed(second) == [], "a second run must change nothing"
    assert listed(mac_a)[name_a]["state"] == "running" and listed(mac_b)[name_b]["state"] == "stopped"


def test_mac_side_facts_over_ssh(remote_macs, deploy, real_binary):
    (mac_a, mac_b), (name_a, name_b), workdir = deploy
    # The facts ask each Mac; mac-a's machine (made by the deploy above, or now when
    # this test runs alone) shows on mac-a only.
    if name_a not in listed(mac_a):
        mac_a.ssh("pyinfra-orbstack", "machine", "create", "debian:bookworm", name_a, check=True, timeout=600)
    facts = must_run(remote_macs.env, "inventory.py", "fact", "orbstack.Machines", "orbstack.Binary", cwd=workdir)
    machines, binaries = facts["orbstack.Machines"], facts["orbstack.Binary"]
    assert name_a in machines[mac_a.alias] and name_a not in machines[mac_b.alias], machines
    assert machines[mac_a.alias][name_a]["distro"] == "debian"
    ours = subprocess.run([str(real_binary), "version"], capture_output=True, text=True, timeout=60).stdout.split()
    for mac in (mac_a, mac_b):
        # The Mac's own pyinfra-orbstack: the same protocol as ours (the same build, on fake Macs).
        assert binaries[mac.alias]["protocol"] == int(ours[-1].rstrip(")")), binaries


@pytest.mark.simulator("a fake Mac without pyinfra-orbstack on its PATH")
def test_a_mac_without_the_binary_gets_the_clear_error(orb, remote_macs, tmp_path):
    """The Mac without the binary fails its own hosts, with the fix, and the other Mac's
    go on: with -y, after confirming, and in --dry (which says it will fail)."""
    mac_a = remote_macs["mac-a"]
    bare = remote_macs.macs.get("mac-nobinary") or remote_macs.start("mac-nobinary", binary=False)
    assert bare.ssh("command -v orbctl").returncode == 0, "orbctl is there: only pyinfra-orbstack is missing"
    suffix = uuid.uuid4().hex[:6]
    name_a, name_bare = remote_macs.new_name(f"remote-nb-a-{suffix}"), remote_macs.new_name(f"remote-nb-{suffix}")
    write_inventory(tmp_path / "inventory.py", [
        (mac_a.alias, {**mac_a.pyinfra_ssh_data, "machine": name_a, **SETTINGS[0]}),
        (bare.alias, {**bare.pyinfra_ssh_data, "machine": name_bare, **SETTINGS[0]}),
    ])
    (tmp_path / "deploy.py").write_text(DEPLOY)
    try:
        # The fact says "no binary" (None), which is an answer, not a failure.
        facts = must_run(remote_macs.env, "inventory.py", "fact", "orbstack.Binary", cwd=tmp_path)
        assert facts["orbstack.Binary"][bare.alias] is None, facts
        assert facts["orbstack.Binary"][mac_a.alias]["protocol"] >= 1, facts

        dry = run_pyinfra(remote_macs.env, "--dry", "inventory.py", "deploy.py", cwd=tmp_path)
        output = dry.stdout + dry.stderr
        assert dry.returncode == 0, output
        assert f"will fail: {MISSING}" in output and "on the PATH of non-interactive shells" in output, output
        assert name_a not in listed(mac_a) and name_bare not in listed(bare), "--dry runs nothing"

        for args, kwargs in ((["-y"], {}), ([], {"input": "\n"})):  # -y, and Enter at pyinfra's prompt
            result = run_pyinfra(remote_macs.env, *args, "inventory.py", "deploy.py", cwd=tmp_path, **kwargs)
            output = result.stdout + result.stderr
            assert result.returncode == 1, output
            assert f"[{bare.alias}] orbstack: {MISSING}" in output, output
            assert name_bare not in listed(bare), "nothing created on the Mac without the binary"
            assert listed(mac_a).get(name_a, {}).get("state") == "running", (
                f"the other Mac's operation should go on:\n{output}")
            mac_a.orbctl("delete", "-f", name_a, check=False, timeout=600)
    finally:
        mac_a.orbctl("delete", "-f", name_a, check=False, timeout=600)
