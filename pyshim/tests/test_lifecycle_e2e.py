"""Issue 5 end to end: machine lifecycle as pyinfra state, with the real pyinfra CLI
against the target (the orbctl simulator or a real OrbStack: see conftest).

The deploy targets @local (the Mac, or this box where the simulator's orbctl lives),
creates two machines, configures them, snapshots one; the test deletes that machine
with an ad-hoc `pyinfra @local orbstack.machine ... present=False`, and the deploy
restores it from the snapshot, with a file written before the snapshot. Runs after the
first report no changes. Results are read as `pyinfra --json` prints them; files inside the
machines are checked with orbctl's own `orbctl run`, not our code path. Against a real
OrbStack the deploy leaves the default machine alone: that is the user's setting.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from conftest import pyinfra_results, run_pyinfra


def have_root() -> bool:
    """Simulator machines are namespaces: creating them needs root and unshare."""
    return os.geteuid() == 0 and shutil.which("unshare") is not None


DEFAULT_MACHINE = 'orbstack.default_machine(name="beta is the default", machine=beta)\n'
LIFECYCLE = textwrap.dedent(
    """
    from pyinfra import host
    from pyinfra_orbstack.operations import orbstack

    alpha, beta, backups = host.data.alpha, host.data.beta, host.data.backups

    orbstack.restore(name="restore alpha if missing", machine=alpha, directory=backups)
    orbstack.machine(name="alpha", machine=alpha, image="debian:bookworm")
    orbstack.machine(name="beta", machine=beta, image="debian:bookworm", user="deploy",
                     running=False)
    orbstack.config(name="beta's limits", machine=beta, settings={"cpu": 1, "memory_mib": 1024})
    {default_machine}orbstack.default_user(name="alpha logs in as ops", machine=alpha, user="ops")
    # The default max_age (a day): the second run must not export again.
    orbstack.snapshot(name="snapshot alpha", machine=alpha, directory=backups, keep=2)
    """,
)

PROVISION = textwrap.dedent(
    """
    from io import StringIO
    from pyinfra.operations import files

    files.put(name="marker", src=StringIO("provisioned\\n"), dest="/etc/provisioned", _sudo=True)
    """,
)


def pyinfra_json(env, *args: str, cwd: Path) -> dict:
    """Run the real CLI as with --json; the parsed results, or fail with its output."""
    results, result = pyinfra_results(env, "-y", *args, cwd=cwd, timeout=300)
    assert result.returncode == 0, f"pyinfra {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return results


def changed(results: dict) -> list[str]:
    """Names of the operations that changed something."""
    return [op["name"] for op in results["results"]["operations"] if op["success"]]


@pytest.fixture(scope="module")
def world(orb, tmp_path_factory):
    if orb.kind == "simulator" and not have_root():
        pytest.skip("the simulator runs machines in namespaces: needs root and unshare")
    workdir = tmp_path_factory.mktemp("lifecycle")
    # The default machine is a global setting: only the simulator's is the suite's to change.
    sets_default = orb.kind == "simulator"
    (workdir / "lifecycle.py").write_text(LIFECYCLE.replace("{default_machine}", DEFAULT_MACHINE if sets_default else ""))
    (workdir / "provision.py").write_text(PROVISION)
    suffix = uuid.uuid4().hex[:6]
    names = {"alpha": orb.new_name(f"lc-a-{suffix}"), "beta": orb.new_name(f"lc-b-{suffix}"),
             "backups": str(workdir / "backups")}
    data = [arg for key, value in names.items() for arg in ("--data", f"{key}={value}")]
    env = dict(orb.env, PYINFRA_ORBSTACK_ORBCTL=orb.orbctl_path)  # orbctl() below runs the same
    yield env, workdir, names, data, sets_default
    # The target is shared by the whole session: leave no machines behind.
    orb.delete_ours(orb.new_name("lc-"))  # this module's names


def orbctl(env, *args: str):
    return subprocess.run([env["PYINFRA_ORBSTACK_ORBCTL"], *args], env=env, capture_output=True, text=True,
                          timeout=300)


def test_deploy_creates_snapshots_restores_and_then_changes_nothing(world):
    env, workdir, names, data, sets_default = world
    alpha, beta, backups = names["alpha"], names["beta"], Path(names["backups"])

    dry = run_pyinfra(env, "--dry", "@local", "lifecycle.py", *data, cwd=workdir)
    assert dry.returncode == 0, dry.stderr
    # The exact commands, through the packaged binary by absolute path (which waits for
    # a new machine to answer commands).
    binary = env.get("PYINFRA_ORBSTACK_BINARY", "pyinfra-orbstack")
    assert f"alpha: will run: {binary} machine create debian:bookworm {alpha}" in dry.stderr
    assert f"beta: will run: {binary} machine create -u deploy debian:bookworm {beta}" in dry.stderr
    assert f"beta: will run: {binary} machine stop {beta}" in dry.stderr
    assert orbctl(env, "info", alpha).returncode == 1, "--dry must not create anything"

    first = pyinfra_json(env, "@local", "lifecycle.py", *data, cwd=workdir)
    assert changed(first) == ["alpha", "beta", "beta's limits", *(["beta is the default"] if sets_default else []),
                              "alpha logs in as ops", "snapshot alpha"]
    machines = {m["name"]: m for m in json.loads(orbctl(env, "list", "-f", "json").stdout)}
    assert machines[alpha]["state"] == "running" and machines[beta]["state"] == "stopped"
    assert machines[beta]["config"]["default_username"] == "deploy"
    assert machines[alpha]["config"]["default_username"] == "ops"
    if sets_default:
        assert orbctl(env, "default").stdout.strip() == beta
    assert orbctl(env, "config", "get", f"machine.{beta}.memory_mib").stdout.strip() == "1024"
    assert len(list(backups.glob(f"{alpha}-*.tar.zst"))) == 1

    second = pyinfra_json(env, "@local", "lifecycle.py", *data, cwd=workdir)
    assert changed(second) == [], "a second run must change nothing"

    # A file written before a fresh snapshot must come back with the restore.
    time.sleep(1.1)  # archive names have a one-second resolution
    wrote = orbctl(env, "run", "-m", alpha, "-u", "root", "sh", "-c", "echo kept > /root/marker")
    assert wrote.returncode == 0, wrote.stderr
    snap = pyinfra_json(env, "@local", "orbstack.snapshot", f"machine={alpha}",
                        f"directory={backups}", "keep=2", "max_age=0", cwd=workdir)
    assert len(changed(snap)) == 1
    assert len(list(backups.glob(f"{alpha}-*.tar.zst"))) == 2

    gone = pyinfra_json(env, "@local", "orbstack.machine", f"machine={alpha}", "present=False", cwd=workdir)
    assert changed(gone)
    assert orbctl(env, "info", alpha).returncode == 1

    third = pyinfra_json(env, "@local", "lifecycle.py", *data, cwd=workdir)
    assert changed(third) == ["restore alpha if missing"]
    back = orbctl(env, "run", "-m", alpha, "-u", "root", "cat", "/root/marker")
    assert (back.returncode, back.stdout) == (0, "kept\n")

    fourth = pyinfra_json(env, "@local", "lifecycle.py", *data, cwd=workdir)
    assert changed(fourth) == [], "after the restore, a run must change nothing"


def test_facts_on_the_mac_print_the_machines_as_json(world):
    env, workdir, names, data, sets_default = world
    pyinfra_json(env, "@local", "lifecycle.py", *data, cwd=workdir)
    facts = pyinfra_json(env, "@local", "fact", "orbstack.Machines", cwd=workdir)
    machines = facts["orbstack.Machines"]["@local"]
    assert {names["alpha"], names["beta"]} <= set(machines)
    assert machines[names["alpha"]]["distro"] == "debian"


def test_network_facts_inside_a_machine(world):
    env, workdir, names, data, sets_default = world
    pyinfra_json(env, "@local", "lifecycle.py", *data, cwd=workdir)
    alpha = names["alpha"]
    facts = pyinfra_json(env, f"@orbstack/{alpha}", "fact", "orbstack.Network",
                         "orbstack.TcpPort", "target=127.0.0.1", "port=1", cwd=workdir)
    host = f"@orbstack/{alpha}"
    network = facts["orbstack.Network"][host]
    assert network["orb_name"] == f"{alpha}.orb.local"
    assert network["ipv4"], "a running machine has an IPv4 address"
    port = facts["orbstack.TcpPort (port=1, target=127.0.0.1)"][host]  # pyinfra's fact key
    assert port["open"] is False and port["error"]


def test_provisioning_from_inventory_creates_the_machine_and_deploys(world, orb):
    env, workdir, _, _, _ = world
    new = orb.new_name(f"lc-new-{uuid.uuid4().hex[:6]}")  # deleted with the others after the module
    (workdir / "inventory.py").write_text(
        f'machines = [("@orbstack/{new}", {{"orbstack_image": "debian:bookworm"}})]\n',
    )
    first = pyinfra_json(env, "inventory.py", "provision.py", cwd=workdir)
    assert changed(first) == ["marker"]
    info = json.loads(orbctl(env, "info", new, "-f", "json").stdout)
    assert info["record"]["image"]["distro"] == "debian"
    marker = orbctl(env, "run", "-m", new, "-u", "root", "cat", "/etc/provisioned")
    assert marker.stdout == "provisioned\n"
    second = pyinfra_json(env, "inventory.py", "provision.py", cwd=workdir)
    assert changed(second) == []


def test_mac_facts_answer_from_orbctl_and_absent_things_are_none(world):
    env, workdir, names, data, sets_default = world
    pyinfra_json(env, "@local", "lifecycle.py", *data, cwd=workdir)
    alpha, beta = names["alpha"], names["beta"]
    facts = pyinfra_json(
        env, "@local", "fact", "orbstack.Status", "orbstack.Version",
        # Asking OrbStack for its default machine makes one if there is none: not on a user's.
        *(["orbstack.DefaultMachine"] if sets_default else []),
        "orbstack.SshConnection", f"machine={alpha}", "user=ops",
        "orbstack.ConfigValue", f"key=machine.{beta}.cpu",
        "orbstack.ConfigValue", "key=machine.no-such-machine.cpu",
        "orbstack.Machine", "machine=no-such-machine",
        "orbstack.Snapshots", f"directory={names['backups']}", f"machine={alpha}",
        cwd=workdir,
    )
    value = {name: hosts["@local"] for name, hosts in facts.items()}  # pyinfra's fact titles
    assert value["orbstack.Status"] == "Running"
    assert value["orbstack.Version"]["code"] >= 1000000
    if sets_default:
        assert value["orbstack.DefaultMachine"] == beta
    ssh = value[f"orbstack.SshConnection (machine={alpha}, user=ops)"]
    assert ssh["command"] == f"ssh -p 32222 -i ~/.orbstack/ssh/id_ed25519 ops@{alpha}@localhost"
    assert value[f"orbstack.ConfigValue (key=machine.{beta}.cpu)"] == "1"
    assert value["orbstack.ConfigValue (key=machine.no-such-machine.cpu)"] is None
    assert value["orbstack.Machine (machine=no-such-machine)"] is None
    snapshots = value[f"orbstack.Snapshots (directory={names['backups']}, machine={alpha})"]
    assert snapshots and all(Path(s["path"]).name.startswith(f"{alpha}-") for s in snapshots)


def test_provisioning_straight_from_the_command_line(world, orb):
    # The one-liner: pyinfra @orbstack/new deploy.py, the image as host data.
    env, workdir, _, _, _ = world
    new = orb.new_name(f"lc-new-{uuid.uuid4().hex[:6]}")
    first = pyinfra_json(env, f"@orbstack/{new}", "provision.py",
                         "--data", "orbstack_image=debian:bookworm", cwd=workdir)
    assert changed(first) == ["marker"]
    marker = orbctl(env, "run", "-m", new, "-u", "root", "cat", "/etc/provisioned")
    assert marker.stdout == "provisioned\n"


def test_clone_and_rename_from_the_command_line_run_once(world):
    env, workdir, names, data, sets_default = world
    pyinfra_json(env, "@local", "lifecycle.py", *data, cwd=workdir)
    alpha = names["alpha"]
    copy, renamed = f"{alpha}-copy", f"{alpha}-moved"
    clone = ("@local", "orbstack.clone", f"source={alpha}", f"machine={copy}", "running=True")
    assert changed(pyinfra_json(env, *clone, cwd=workdir))
    assert changed(pyinfra_json(env, *clone, cwd=workdir)) == []
    ran = orbctl(env, "run", "-m", copy, "true")
    assert ran.returncode == 0, "the clone was started and answers commands"

    rename = ("@local", "orbstack.rename", f"machine={copy}", f"new_name={renamed}")
    assert changed(pyinfra_json(env, *rename, cwd=workdir))
    assert changed(pyinfra_json(env, *rename, cwd=workdir)) == []
    assert orbctl(env, "info", copy).returncode == 1
    assert orbctl(env, "info", renamed).returncode == 0


def test_snapshots_are_pruned_and_force_restore_replaces_a_machine(world):
    env, workdir, names, data, sets_default = world
    pyinfra_json(env, "@local", "lifecycle.py", *data, cwd=workdir)
    alpha, backups = names["alpha"], Path(names["backups"])
    snapshot = ("@local", "orbstack.snapshot", f"machine={alpha}", f"directory={backups}", "keep=2",
                "max_age=0")
    for _ in range(2):
        time.sleep(1.1)  # archive names have a one-second resolution
        assert changed(pyinfra_json(env, *snapshot, cwd=workdir))
    kept = sorted(backups.glob(f"{alpha}-*.tar.zst"))
    assert len(kept) == 2, "keep=2 leaves the two newest archives"

    # Something changes in the machine after the newest snapshot; a forced restore
    # puts the machine back as it was in that archive.
    orbctl(env, "run", "-m", alpha, "-u", "root", "sh", "-c", "echo later > /root/after-snapshot")
    restore = pyinfra_json(env, "@local", "orbstack.restore", f"machine={alpha}",
                           f"archive={kept[-1]}", "force=True", cwd=workdir)
    assert changed(restore)
    gone = orbctl(env, "run", "-m", alpha, "-u", "root", "test", "-e", "/root/after-snapshot")
    assert gone.returncode == 1, "the file written after the snapshot is gone"
    again = pyinfra_json(env, "@local", "orbstack.restore", f"machine={alpha}",
                         f"archive={kept[-1]}", cwd=workdir)
    assert changed(again) == [], "without force an existing machine is left alone"


def test_another_image_is_refused_until_force_recreates_the_machine(world, orb):
    env, workdir, _, _, _ = world
    name = orb.new_name(f"lc-f-{uuid.uuid4().hex[:6]}")  # deleted with the others after the module
    base = ("@local", "orbstack.machine", f"machine={name}")
    assert changed(pyinfra_json(env, *base, "image=debian:12", cwd=workdir))
    orbctl(env, "run", "-m", name, "-u", "root", "sh", "-c", "echo old > /root/old")

    # No image: any machine is accepted; aliases of its own image too.
    assert changed(pyinfra_json(env, *base, cwd=workdir)) == []
    assert changed(pyinfra_json(env, *base, "image=debian:bookworm", cwd=workdir)) == []

    # Another image stops the deploy while pyinfra prepares, naming the difference.
    dry = run_pyinfra(env, "--dry", *base, "image=ubuntu:24.04", cwd=workdir)
    assert dry.returncode != 0
    assert f"machine {name} exists with distro debian (want ubuntu), version bookworm (want noble)" in (
        dry.stdout + dry.stderr
    )
    refused = run_pyinfra(env, "-y", *base, "image=ubuntu:24.04", cwd=workdir)
    assert refused.returncode != 0 and "pass force=True" in refused.stdout + refused.stderr
    info = json.loads(orbctl(env, "info", name, "-f", "json").stdout)
    assert info["record"]["image"]["distro"] == "debian", "no force, no recreation"

    assert changed(pyinfra_json(env, *base, "image=ubuntu:24.04", "force=True", cwd=workdir))
    info = json.loads(orbctl(env, "info", name, "-f", "json").stdout)
    assert (info["record"]["image"]["distro"], info["record"]["state"]) == ("ubuntu", "running")
    assert orbctl(env, "run", "-m", name, "-u", "root", "test", "-e", "/root/old").returncode == 1
    again = ("image=ubuntu:noble", "force=True")
    assert changed(pyinfra_json(env, *base, *again, cwd=workdir)) == [], "force only acts on a difference"


# Every operation runs for real above; these are the checks the binary makes for them
# (and for the connector) before anything changes.


def on_simulator(env: dict) -> None:
    if "ORBSIM_HOME" not in env:
        pytest.skip("needs the simulator's ORBSIM_VERSION")


def test_restart_runs_for_real_and_the_machine_answers_after_it(world):
    env, workdir, names, data = world[:4]
    pyinfra_json(env, "@local", "lifecycle.py", *data, cwd=workdir)
    alpha = names["alpha"]
    restart = pyinfra_json(env, "@local", "orbstack.restart", f"machine={alpha}", "timeout=90", cwd=workdir)
    assert changed(restart), "restart always runs"
    assert orbctl(env, "run", "-m", alpha, "true").returncode == 0


def test_limits_on_an_orbstack_before_2_1_stop_the_deploy_while_it_prepares(world):
    env, workdir = world[0], world[1]
    on_simulator(env)
    old = dict(env, ORBSIM_VERSION="1.11.3")
    name = f"lc-old-{uuid.uuid4().hex[:6]}"
    result = run_pyinfra(old, "@local", "orbstack.machine", f"machine={name}", "image=debian", "cpus=2",
                         cwd=workdir)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "--cpus needs OrbStack 2.1 or later; this Mac runs 1.11.3" in output, output
    assert "unknown flag" not in output
    assert orbctl(env, "info", name).returncode != 0, "nothing was created"


def test_a_bad_size_or_name_stops_the_deploy_with_the_binary_s_message(world):
    env, workdir = world[0], world[1]
    name = f"lc-bad-{uuid.uuid4().hex[:6]}"
    size = run_pyinfra(env, "@local", "orbstack.machine", f"machine={name}", "memory=lots", cwd=workdir)
    assert size.returncode != 0 and "invalid size \"lots\"" in size.stdout + size.stderr
    bad = run_pyinfra(env, "@local", "orbstack.machine", "machine=web_1", "running=False", cwd=workdir)
    assert bad.returncode != 0 and "invalid machine name 'web_1'" in bad.stdout + bad.stderr
    assert orbctl(env, "info", name).returncode != 0, "nothing was created"


def test_the_connector_s_provisioning_gets_the_same_2_1_gate(world):
    env, workdir = world[0], world[1]
    on_simulator(env)
    old = dict(env, ORBSIM_VERSION="1.11.3")
    new = f"lc-gate-{uuid.uuid4().hex[:6]}"
    result = run_pyinfra(old, f"@orbstack/{new}", "exec", "--data", "orbstack_image=debian",
                         "--data", "orbstack_cpus=2", "--", "true", cwd=workdir)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "--cpus needs OrbStack 2.1 or later; this Mac runs 1.11.3" in output, output
    assert "unknown flag" not in output
    assert orbctl(env, "info", new).returncode != 0, "nothing was created"
