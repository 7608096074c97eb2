"""orbstack.* operations in pyinfra's own test style: given facts, the exact commands.

The facts are fakes here (this is the one place they belong): each test states what
the binary's facts report, calls the operation's generator (``op._inner``) and checks
the ``pyinfra-orbstack ...`` commands it yields, or that it yields none. What the binary
itself decides (names, sizes, the OrbStack 2.1 gate, readiness) is tested in Go and,
with every operation run for real against the simulator, in test_lifecycle_e2e.py.
"""

from __future__ import annotations

import shlex
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import click
import pytest
from pyinfra.api import OperationError
from pyinfra.api.state import StateStage
from pyinfra.context import ctx_host, ctx_state

from pyinfra_orbstack import _rpc
from pyinfra_orbstack.facts.orbstack import (
    Binary,
    ConfigValues,
    DefaultMachine,
    Machine,
    MachineDifferences,
    MachineLocations,
    MachineSettings,
    Snapshots,
    binary,
)
from pyinfra_orbstack.operations import orbstack

RESTART_KEYS = {"cpu", "memory_mib", "rosetta"}  # what the binary says of these, in these tests


def pio(*args: str) -> str:
    """The command an operation yields: this package's binary, by absolute path."""
    return binary(*args)


def record(name="web", state="running", distro="debian", version="bookworm", arch="arm64",
           user="alice", **config) -> dict:
    return {
        "name": name, "id": "01K2G8TY5GM9C3CN95KCB4ZG8B", "state": state, "distro": distro,
        "version": version, "arch": arch, "variant": "default", "default_user": user,
        "isolated": bool(config.get("isolated")), "ip4": "", "ip6": "", "disk_size": None,
        "config": {"isolated": False, "default_username": user, **config},
    }


class FakeOrbStack:
    """What the binary's facts report: machines by name, settings (as `config get
    --json` and `machine settings --json` would), the default machine, snapshot dirs."""

    def __init__(self, machines=(), config=None, default=None, snapshots=None,
                 stage=StateStage.Execute, settings=None, differences=None, macs=None):
        self.machines = {m["name"]: m for m in machines}
        # other Macs' machines, for orbstack.MachineLocations: Mac -> [records]
        self.macs = {mac: {m["name"]: m for m in ms} for mac, ms in (macs or {}).items()}
        self.config = dict(config or {})  # full key -> value
        # machine settings: full key -> (wanted value, current value) as the binary
        # computes them from cpus/memory/disk/mounts/user
        self.settings = dict(settings or {})
        # machine -> what `machine diff` says for the wanted image/arch/isolation
        self.differences = dict(differences or {})
        self.default = default
        self.snapshots = snapshots or {}
        self.binary: dict | None = None  # what orbstack.Binary says on a Mac over @ssh
        self.noops: list[str] = []
        self.facts_read: list[tuple] = []
        self.print_prefix = "[@local] "
        self.state = SimpleNamespace(current_stage=stage, is_executing=stage == StateStage.Execute)

    def get_fact(self, cls, **kwargs):
        self.facts_read.append((cls.__name__, kwargs))
        if cls is Machine:
            return self.machines.get(kwargs["machine"])
        if cls is ConfigValues:
            machine = kwargs.get("machine")
            out = {}
            for key in kwargs["keys"]:
                full = f"machine.{machine}.{key}" if machine else key
                out[key] = {"key": full, "value": self.config.get(full),
                            "restart": not machine and key in RESTART_KEYS}
            return out
        if cls is MachineDifferences:
            return self.differences.get(kwargs["machine"], [])
        if cls is MachineSettings:
            return [{"key": k, "value": v, "current": c} for k, (v, c) in self.settings.items()]
        if cls is DefaultMachine:
            return self.default
        if cls is Binary:
            return self.binary
        if cls is MachineLocations:
            return {mac: self.macs.get(mac, {}).get(kwargs["machine"]) for mac in kwargs["macs"]}
        if cls is Snapshots:
            return self.snapshots.get((kwargs["directory"], kwargs["machine"]), [])
        raise AssertionError(f"unexpected fact {cls.__name__}")

    def noop(self, description: str) -> None:
        self.noops.append(description)


def run(op, world: FakeOrbStack, *args, **kwargs) -> list[str]:
    with ctx_state.use(world.state), ctx_host.use(world):
        return [str(command) for command in op._inner(*args, **kwargs)]


def refused(op, world: FakeOrbStack | None = None, **kwargs) -> str:
    """The error an operation raises while pyinfra prepares (the deploy stops there)."""
    world = world or FakeOrbStack()
    world.state.current_stage = StateStage.Prepare
    with pytest.raises(OperationError) as error:
        run(op, world, **kwargs)
    return str(error.value)


# machine: create, delete, start, stop, recreate


def test_machine_missing_is_created_by_the_binary_which_waits_for_it():
    world = FakeOrbStack()
    commands = run(orbstack.machine, world, machine="web", image="debian:bookworm")
    assert commands == [pio("machine", "create", "debian:bookworm", "web")]


def test_machine_without_an_image_creates_ubuntu_noble():
    assert run(orbstack.machine, FakeOrbStack(), machine="web")[0] == pio(
        "machine", "create", "ubuntu:noble", "web",
    )


def test_machine_without_an_image_accepts_the_existing_one():
    # Stopping a debian machine must not need its image restated.
    world = FakeOrbStack([record(distro="debian")])
    assert run(orbstack.machine, world, machine="web", running=False) == [
        pio("machine", "stop", "web"),
    ]


def test_machine_create_passes_every_setting_as_binary_flags():
    world = FakeOrbStack()
    commands = run(
        orbstack.machine, world, machine="web", image="ubuntu:noble", arch="amd64",
        user="deploy", user_data="/Users/me/cloud init.yaml", cpus=2, memory="4G",
        disk="32G", isolated=True, isolate_network=True, mounts=["/Users/me/src:/src"],
        timeout=30,
    )
    assert commands == [
        pio("machine", "create", "-a", "amd64", "-u", "deploy", "-c", "/Users/me/cloud init.yaml",
            "--isolated", "--isolate-network", "--cpus", "2", "--memory", "4G", "--disk", "32G",
            "--mount", "/Users/me/src:/src", "--timeout", "30s", "ubuntu:noble", "web"),
    ]
    assert ("MachineSettings", {"machine": "web", "user": "deploy", "cpus": 2, "memory": "4G",
                                "disk": "32G", "mounts": ("/Users/me/src:/src",)}) in world.facts_read, (
        "the binary reads the limits before anything runs: bad sizes and an OrbStack "
        "before 2.1 stop the deploy while it prepares"
    )


def test_machine_that_exists_and_runs_is_a_noop():
    world = FakeOrbStack([record()])
    assert run(orbstack.machine, world, machine="web", image="debian:bookworm") == []
    assert world.noops == ["machine web is running"]


def test_machine_asks_the_binary_how_it_differs_from_the_wanted_image():
    # Alias resolution (debian:12 is bookworm) is the binary's: internal/orbctl's tests.
    world = FakeOrbStack([record()])
    assert run(orbstack.machine, world, machine="web", image="debian:12", arch="arm64") == []
    assert ("MachineDifferences", {"machine": "web", "image": "debian:12", "arch": "arm64",
                                   "isolated": None, "isolate_network": None}) in world.facts_read


def test_machine_stopped_is_started_and_waited_for():
    world = FakeOrbStack([record(state="stopped")])
    commands = run(orbstack.machine, world, machine="web", image="debian")
    assert commands == [pio("machine", "start", "web")]


def test_machine_running_false_stops_only_that_machine():
    world = FakeOrbStack([record()])
    assert run(orbstack.machine, world, machine="web", image="debian", running=False) == [
        pio("machine", "stop", "web"),
    ]


def test_machine_created_stopped_waits_for_first_boot_then_stops():
    world = FakeOrbStack()
    commands = run(orbstack.machine, world, machine="web", image="debian", running=False)
    assert commands == [pio("machine", "create", "debian", "web"), pio("machine", "stop", "web")]


def test_machine_absent_is_deleted_by_name():
    world = FakeOrbStack([record()])
    assert run(orbstack.machine, world, machine="web", present=False) == [
        pio("machine", "delete", "web"),
    ]


def test_machine_absent_and_missing_is_a_noop():
    world = FakeOrbStack()
    assert run(orbstack.machine, world, machine="web", present=False) == []
    assert world.noops == ["machine web does not exist"]


def test_machine_with_another_image_is_an_error_without_force():
    world = FakeOrbStack([record(distro="ubuntu", version="noble")],
                         differences={"web": ["distro ubuntu (want debian)"]})
    message = refused(orbstack.machine, world, machine="web", image="debian:bookworm")
    assert message.startswith("machine web exists with distro ubuntu (want debian)")
    assert "pass force=True" in message
    assert "image=None accepts whatever the machine runs" in message


def test_machine_with_another_version_or_arch_names_each_difference():
    world = FakeOrbStack([record(version="bullseye", arch="arm64")],
                         differences={"web": ["version bullseye (want bookworm)", "arch arm64 (want amd64)"]})
    message = refused(orbstack.machine, world, machine="web", image="debian:12", arch="amd64")
    assert message.startswith(
        "machine web exists with version bullseye (want bookworm), arch arm64 (want amd64)",
    )


def test_an_error_found_while_executing_fails_with_the_message_not_a_traceback():
    # With -y pyinfra skips preparing; the refusal then is a command that fails.
    world = FakeOrbStack([record(distro="ubuntu", version="noble")],
                         differences={"web": ["distro ubuntu (want debian)"]})
    [command] = run(orbstack.machine, world, machine="web", image="debian:bookworm")
    assert command.startswith("echo 'orbstack: machine web exists with distro ubuntu")
    assert command.endswith(" >&2; exit 1")


def test_machine_with_another_arch_is_recreated_with_force():
    world = FakeOrbStack([record(arch="arm64")], differences={"web": ["arch arm64 (want amd64)"]})
    commands = run(orbstack.machine, world, machine="web", image="debian", arch="amd64", force=True)
    assert commands == [
        pio("machine", "delete", "web"),
        pio("machine", "create", "-a", "amd64", "debian", "web"),
    ]


def test_machine_isolation_cannot_change_in_place():
    world = FakeOrbStack([record(isolated=False)], differences={"web": ["isolated false (want true)"]})
    message = refused(orbstack.machine, world, machine="web", image="debian", isolated=True)
    assert "isolated false (want true)" in message


def test_machine_limits_of_an_existing_machine_are_set_only_when_different():
    world = FakeOrbStack([record()], settings={
        "machine.web.cpu": ("2", "2"),
        "machine.web.memory_mib": ("4096", "2048"),
        "machine.web.disk_bytes": ("17179869184", None),
    })
    commands = run(orbstack.machine, world, machine="web", image="debian", cpus=2, memory="4G",
                   disk="16G")
    assert commands == [
        pio("config", "set", "machine.web.memory_mib", "4096"),
        pio("config", "set", "machine.web.disk_bytes", "17179869184"),
    ]
    assert ("MachineSettings", {"machine": "web", "user": None, "cpus": 2, "memory": "4G",
                                "disk": "16G", "mounts": None}) in world.facts_read


def test_machine_mounts_of_an_existing_machine_are_set_only_when_different():
    same = FakeOrbStack([record(isolated=True)], settings={"machine.web.mounts": ("/src:/src", "/src:/src")})
    assert run(orbstack.machine, same, machine="web", mounts=["/src:/src"]) == []
    other = FakeOrbStack([record(isolated=True)],
                         settings={"machine.web.mounts": ("/src:/src,/data:/data", "/src:/src")})
    assert run(orbstack.machine, other, machine="web", mounts=["/src:/src", "/data:/data"]) == [
        pio("config", "set", "machine.web.mounts", "/src:/src,/data:/data"),
    ]


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [("cpus", 0, "cpus must be a positive int"), ("cpus", "2", "cpus must be a positive int")],
)
def test_machine_bad_cpus_are_refused_before_anything_runs(setting, value, message):
    assert message in refused(orbstack.machine, FakeOrbStack(), machine="web", **{setting: value})


def test_machine_without_limits_reads_no_settings():
    world = FakeOrbStack()
    assert run(orbstack.machine, world, machine="web", image="debian", isolated=False) == [
        pio("machine", "create", "debian", "web"),
    ]
    assert not [f for f in world.facts_read if f[0] == "MachineSettings"]


def test_machine_default_user_change_sets_the_machine_username():
    world = FakeOrbStack([record(user="alice")],
                         settings={"machine.web.username": ("deploy", "alice")})
    assert run(orbstack.machine, world, machine="web", image="debian", user="deploy") == [
        pio("config", "set", "machine.web.username", "deploy"),
    ]


@pytest.mark.parametrize("bad", [0, -5, "soon", True])
def test_a_bad_timeout_is_refused_before_anything_runs(bad):
    world = FakeOrbStack([record()])  # even when there is nothing to wait for
    assert "timeout must be a positive number of seconds" in refused(
        orbstack.machine, world, machine="web", timeout=bad,
    )


def test_commands_are_printed_while_pyinfra_prepares(caplog):
    world = FakeOrbStack(stage=StateStage.Prepare)
    with caplog.at_level("INFO", logger="pyinfra"):
        run(orbstack.machine, world, machine="web", image="debian")
    printed = [r.getMessage() for r in caplog.records if "will run:" in r.getMessage()]
    assert len(printed) == 1 and pio("machine", "create", "debian", "web") in printed[0]


# clone, rename, restart


def test_clone_creates_the_copy_and_starts_it_when_asked():
    world = FakeOrbStack([record()])
    assert run(orbstack.clone, world, source="web", machine="web-copy", running=True) == [
        pio("machine", "clone", "--start", "web", "web-copy"),
    ]
    assert run(orbstack.clone, world, source="web", machine="web-copy") == [
        pio("machine", "clone", "web", "web-copy"),
    ]


def test_clone_that_exists_is_a_noop():
    world = FakeOrbStack([record(), record(name="web-copy", state="stopped")])
    assert run(orbstack.clone, world, source="web", machine="web-copy") == []
    assert world.noops == ["machine web-copy already exists"]


def test_rename_runs_once_then_is_a_noop():
    world = FakeOrbStack([record(name="web")])
    assert run(orbstack.rename, world, machine="web", new_name="web-old") == [
        pio("machine", "rename", "web", "web-old"),
    ]
    world = FakeOrbStack([record(name="web-old")])
    assert run(orbstack.rename, world, machine="web", new_name="web-old") == []
    assert world.noops == ["machine web is already renamed to web-old"]


def test_rename_onto_an_existing_machine_is_an_error():
    world = FakeOrbStack([record(name="web"), record(name="web-old")])
    message = refused(orbstack.rename, world, machine="web", new_name="web-old")
    assert "a machine called web-old already exists" in message


def test_restart_always_restarts_and_waits():
    assert run(orbstack.restart, FakeOrbStack([record()]), machine="web", timeout=60) == [
        pio("machine", "restart", "--timeout", "60s", "web"),
    ]


# config, default machine, default user


def test_config_sets_only_the_keys_that_differ():
    world = FakeOrbStack(config={"cpu": "4", "rosetta": "true", "memory_mib": "4096"})
    commands = run(orbstack.config, world, settings={"cpu": 4, "rosetta": False, "memory_mib": 8192})
    assert commands == [pio("config", "set", "rosetta", "false"),
                        pio("config", "set", "memory_mib", "8192")]


def test_config_unchanged_is_a_noop():
    world = FakeOrbStack(config={"cpu": "4"})
    assert run(orbstack.config, world, settings={"cpu": 4}) == []
    assert world.noops == ["OrbStack settings already cpu=4"]


def test_config_per_machine_keys_go_to_the_binary_which_names_them():
    world = FakeOrbStack(config={"machine.web.cpu": "1"})
    assert run(orbstack.config, world, machine="web", settings={"cpu": 2}) == [
        pio("config", "set", "--machine", "web", "cpu", "2"),
    ]
    assert ("ConfigValues", {"keys": ("cpu",), "machine": "web"}) in world.facts_read
    world = FakeOrbStack(config={"machine.web.cpu": "2"})
    assert run(orbstack.config, world, machine="web", settings={"cpu": 2}) == []


def test_config_warns_that_orbstack_must_restart(caplog):
    world = FakeOrbStack(config={"cpu": "2"})
    with caplog.at_level("WARNING", logger="pyinfra"):
        run(orbstack.config, world, settings={"cpu": 4})
    assert any("OrbStack must restart to apply cpu" in r.getMessage() for r in caplog.records)


def test_config_says_before_it_runs_that_orbstack_must_restart(caplog):
    # --dry and the confirmation prompt show the restart note next to the commands.
    world = FakeOrbStack(config={"cpu": "2", "docker.node_name": "a"}, stage=StateStage.Prepare)
    with caplog.at_level("INFO", logger="pyinfra"):
        run(orbstack.config, world, settings={"cpu": 4, "docker.node_name": "b"})
    lines = [click.unstyle(r.getMessage()) for r in caplog.records]
    notes = [line for line in lines if "must restart" in line]
    assert len(notes) == 1 and "note: OrbStack must restart to apply cpu:" in notes[0]
    assert lines.index(notes[0]) > max(i for i, line in enumerate(lines) if "will run:" in line), (
        "the note follows the commands it is about"
    )


def test_config_of_keys_that_apply_live_says_nothing_about_restarting(caplog):
    world = FakeOrbStack(config={"docker.node_name": "a"})
    with caplog.at_level("INFO", logger="pyinfra"):
        assert run(orbstack.config, world, settings={"docker.node_name": "b"}) == [
            pio("config", "set", "docker.node_name", "b"),
        ]
    assert not [r for r in caplog.records if "must restart" in r.getMessage()]


def test_default_machine_is_set_once():
    assert run(orbstack.default_machine, FakeOrbStack(default="db"), machine="web") == [
        pio("machine", "default", "web"),
    ]
    assert run(orbstack.default_machine, FakeOrbStack(default="web"), machine="web") == []


def test_default_user_is_set_once():
    alice = FakeOrbStack([record(user="alice")], settings={"machine.web.username": ("deploy", "alice")})
    assert run(orbstack.default_user, alice, machine="web", user="deploy") == [
        pio("config", "set", "machine.web.username", "deploy"),
    ]
    deploy = FakeOrbStack([record(user="deploy")], settings={"machine.web.username": ("deploy", "deploy")})
    assert run(orbstack.default_user, deploy, machine="web", user="deploy") == []


# snapshot and restore


def snap(directory: str, machine: str, when: datetime) -> dict:
    stamp = when.strftime("%Y%m%dT%H%M%SZ")
    return {"path": f"{directory}/{machine}-{stamp}.tar.zst", "time": stamp, "size": 10}


EXPORT = (
    'f=/backups/web-"$(date -u +%Y%m%dT%H%M%SZ)".tar.zst; '
    'if [ -e "$f" ]; then echo "orbstack: $f already exists (one snapshot per second)" >&2; '
    f'exit 1; fi; mkdir -p /backups && {pio("machine", "export", "web")} "$f"'
)


def test_snapshot_exports_to_a_timestamped_archive():
    assert run(orbstack.snapshot, FakeOrbStack([record()]), machine="web", directory="/backups") == [
        EXPORT,
    ]


def test_snapshot_prunes_all_but_the_newest_keep():
    now = datetime.now(timezone.utc)
    old = [snap("/backups", "web", now - timedelta(days=d)) for d in (3, 2, 1)]
    world = FakeOrbStack([record()], snapshots={("/backups", "web"): old})
    commands = run(orbstack.snapshot, world, machine="web", directory="/backups", keep=2)
    assert commands == [EXPORT, shlex.join(["rm", "-f", "--", old[0]["path"], old[1]["path"]])]


def test_snapshot_younger_than_max_age_is_a_noop():
    now = datetime.now(timezone.utc)
    world = FakeOrbStack(
        [record()],
        snapshots={("/backups", "web"): [snap("/backups", "web", now - timedelta(minutes=5))]},
    )
    assert run(orbstack.snapshot, world, machine="web", directory="/backups", max_age=3600) == []
    assert world.noops[0].startswith("newest snapshot of web is ")


def test_snapshot_older_than_max_age_exports_again():
    now = datetime.now(timezone.utc)
    world = FakeOrbStack(
        [record()],
        snapshots={("/backups", "web"): [snap("/backups", "web", now - timedelta(hours=2))]},
    )
    assert run(orbstack.snapshot, world, machine="web", directory="/backups",
               max_age=timedelta(hours=1)) == [EXPORT]


def test_snapshot_by_default_is_a_noop_on_a_second_run_the_same_day():
    # Default max_age is a day: re-running a deploy must not pile up archives.
    now = datetime.now(timezone.utc)
    world = FakeOrbStack(
        [record()],
        snapshots={("/backups", "web"): [snap("/backups", "web", now - timedelta(hours=3))]},
    )
    assert run(orbstack.snapshot, world, machine="web", directory="/backups", keep=7) == []
    assert "younger than max_age=86400s" in world.noops[0]


def test_snapshot_by_default_exports_again_the_next_day():
    now = datetime.now(timezone.utc)
    world = FakeOrbStack(
        [record()],
        snapshots={("/backups", "web"): [snap("/backups", "web", now - timedelta(hours=25))]},
    )
    assert run(orbstack.snapshot, world, machine="web", directory="/backups") == [EXPORT]


def test_snapshot_not_due_still_prunes_down_to_keep():
    # Lowering keep takes effect on the next run, without a new export.
    now = datetime.now(timezone.utc)
    have = [snap("/backups", "web", now - timedelta(hours=h)) for h in (30, 20, 10, 1)]
    world = FakeOrbStack([record()], snapshots={("/backups", "web"): have})
    assert run(orbstack.snapshot, world, machine="web", directory="/backups", keep=2) == [
        shlex.join(["rm", "-f", "--", have[0]["path"], have[1]["path"]]),
    ]
    world = FakeOrbStack([record()], snapshots={("/backups", "web"): have[2:]})
    assert run(orbstack.snapshot, world, machine="web", directory="/backups", keep=2) == []


def test_snapshot_max_age_zero_exports_on_every_run():
    now = datetime.now(timezone.utc)
    world = FakeOrbStack(
        [record()],
        snapshots={("/backups", "web"): [snap("/backups", "web", now - timedelta(seconds=2))]},
    )
    assert run(orbstack.snapshot, world, machine="web", directory="/backups", max_age=0) == [EXPORT]


def test_snapshot_max_age_none_exports_only_when_there_is_none():
    old = [snap("/backups", "web", datetime(2020, 1, 1, tzinfo=timezone.utc))]
    world = FakeOrbStack([record()], snapshots={("/backups", "web"): old})
    assert run(orbstack.snapshot, world, machine="web", directory="/backups", max_age=None) == []
    assert run(orbstack.snapshot, FakeOrbStack([record()]), machine="web", directory="/backups",
               max_age=None) == [EXPORT]


@pytest.mark.parametrize("bad", [-1, "daily", True])
def test_snapshot_bad_max_age_is_refused(bad):
    assert "max_age must be seconds >= 0" in refused(
        orbstack.snapshot, FakeOrbStack([record()]), machine="web", directory="/b", max_age=bad,
    )


def test_snapshot_directory_with_spaces_is_quoted():
    [command] = run(orbstack.snapshot, FakeOrbStack(), machine="web",
                    directory="/Users/me/Orb Backups/")
    assert command.startswith("""f='/Users/me/Orb Backups'/web-"$(date -u +%Y%m%dT%H%M%SZ)".tar.zst; """)
    assert command.endswith(f"""mkdir -p '/Users/me/Orb Backups' && {pio("machine", "export", "web")} "$f\"""")


def test_snapshot_never_overwrites_an_archive_of_the_same_second(tmp_path):
    # The real command, run by sh, when this second's archive name is already taken:
    # it stops before the binary runs.
    import os
    import subprocess

    now = datetime.now(timezone.utc)
    for ahead in range(3):  # whichever second the shell's date lands on
        taken = tmp_path / f"web-{(now + timedelta(seconds=ahead)).strftime('%Y%m%dT%H%M%SZ')}.tar.zst"
        taken.write_text("older snapshot\n")
    [command] = run(orbstack.snapshot, FakeOrbStack(), machine="web", directory=str(tmp_path))
    env = dict(os.environ, PYINFRA_ORBSTACK_ORBCTL="/nonexistent/orbctl")
    result = subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True)
    assert result.returncode == 1
    assert "already exists (one snapshot per second)" in result.stderr
    assert {p.read_text() for p in tmp_path.glob("web-*.tar.zst")} == {"older snapshot\n"}


def test_restore_missing_machine_from_the_newest_snapshot_and_waits():
    now = datetime.now(timezone.utc)
    snaps = [snap("/backups", "web", now - timedelta(days=d)) for d in (2, 1)]
    world = FakeOrbStack(snapshots={("/backups", "web"): snaps})
    assert run(orbstack.restore, world, machine="web", directory="/backups") == [
        pio("machine", "import", "-n", "web", "--start", snaps[-1]["path"]),
    ]


def test_restore_leaves_an_existing_machine_alone_without_force():
    world = FakeOrbStack([record()])
    assert run(orbstack.restore, world, machine="web", archive="/backups/web.tar.zst") == []
    assert "pass force=True" in world.noops[0]


def test_restore_with_force_replaces_the_machine():
    world = FakeOrbStack([record()])
    assert run(orbstack.restore, world, machine="web", archive="/b/web.tar.zst", force=True,
               running=False) == [
        pio("machine", "delete", "web"),
        pio("machine", "import", "-n", "web", "/b/web.tar.zst"),
    ]


def test_restore_without_any_snapshot_is_a_noop():
    world = FakeOrbStack()
    assert run(orbstack.restore, world, machine="web", directory="/backups") == []
    assert world.noops == ["no snapshot of web in /backups: nothing to restore"]


def test_restore_needs_exactly_one_source():
    assert "exactly one of archive= or directory=" in refused(orbstack.restore, machine="web")


# machine_migrated: moving a machine between Macs


def test_machine_migrated_moves_it_with_the_binary():
    world = FakeOrbStack(macs={"mac-a": [record()]})
    assert run(orbstack.machine_migrated, world, machine="web", source="mac-a",
               destination="mac-b") == [
        pio("machine", "migrate", "--from", "mac-a", "--to", "mac-b", "web"),
    ]
    assert ("MachineLocations", {"machine": "web", "macs": ("mac-a", "mac-b")}) in world.facts_read


def test_machine_migrated_passes_delete_source_checks_and_timeout():
    world = FakeOrbStack(macs={"local": [record()]})
    assert run(orbstack.machine_migrated, world, machine="web", source="local",
               destination="admin@mini.lan", delete_source=True,
               checks=["/srv/app/config.yml", "/etc/hosts"], timeout=300) == [
        pio("machine", "migrate", "--from", "local", "--to", "admin@mini.lan", "--delete-source",
            "--check", "/srv/app/config.yml", "--check", "/etc/hosts", "--timeout", "300s", "web"),
    ]


def test_machine_migrated_is_a_noop_once_it_is_on_the_destination():
    world = FakeOrbStack(macs={"mac-b": [record()]})
    assert run(orbstack.machine_migrated, world, machine="web", source="mac-a",
               destination="mac-b", delete_source=True) == []
    assert world.noops == ["machine web is already on mac-b"]
    # Kept on the source (no delete_source): on both is the wanted state.
    world = FakeOrbStack(macs={"mac-a": [record()], "mac-b": [record()]})
    assert run(orbstack.machine_migrated, world, machine="web", source="mac-a",
               destination="mac-b") == []


def test_machine_migrated_on_both_with_delete_source_is_an_error():
    # The binary deletes the source only right after its own successful import: a
    # machine of the same name on both Macs may be two different machines.
    world = FakeOrbStack(macs={"mac-a": [record()], "mac-b": [record()]})
    message = refused(orbstack.machine_migrated, world, machine="web", source="mac-a",
                      destination="mac-b", delete_source=True)
    assert "web is on both mac-a and mac-b" in message


def test_machine_migrated_refuses_bad_arguments():
    for kwargs, said in [
        ({"source": "mac-a", "destination": "mac-a"}, "the same Mac"),
        ({"source": "-oProxyCommand=x", "destination": "mac-b"}, "is not a Mac"),
        ({"source": "mac-a", "destination": ""}, "is not a Mac"),
        ({"source": "mac-a", "destination": "mac-b", "checks": ["etc/passwd"]}, "absolute paths"),
    ]:
        assert said in refused(orbstack.machine_migrated, machine="web", **kwargs)


def test_machine_migrated_missing_everywhere_still_runs():
    # An earlier operation of the deploy may create it on the source; the binary
    # refuses (exit status 3) if it is still missing then.
    world = FakeOrbStack()
    assert run(orbstack.machine_migrated, world, machine="web", source="mac-a",
               destination="mac-b") == [
        pio("machine", "migrate", "--from", "mac-a", "--to", "mac-b", "web"),
    ]


def test_machine_locations_fact_asks_the_binary_about_every_mac():
    fact = MachineLocations()
    command = fact.command(machine="web", macs=("local", "mac-b"))
    assert command.endswith(shlex.join(["machine", "where", "--json", "--mac=local", "--mac=mac-b", "web"]))
    assert fact.process(['{"local": {"name": "web", "state": "running"}, "mac-b": null}']) == {
        "local": {"name": "web", "state": "running"}, "mac-b": None,
    }


# A Mac over @ssh: the operations run the pyinfra-orbstack on its PATH, and say what to
# do while pyinfra prepares when it is missing or speaks another protocol.


def over_ssh(binary: dict | None) -> FakeOrbStack:
    world = FakeOrbStack([record(state="stopped")], stage=StateStage.Prepare)
    world.connector = object()  # not pyinfra's LocalConnector
    world.binary = binary
    return world


def test_over_ssh_the_operations_run_the_binary_on_the_mac_s_path():
    world = over_ssh({"version": "0.2.0", "protocol": _rpc.PROTOCOL_VERSION})
    world.state.current_stage = StateStage.Execute
    assert run(orbstack.machine, world, machine="web") == ["pyinfra-orbstack machine start web"]


@pytest.mark.parametrize(
    ("binary", "message"),
    [(None, "pyinfra-orbstack not found on this host"),
     ({"version": "9.0.0", "protocol": 99}, "speaks another protocol")],
)
@pytest.mark.parametrize("stage", [StateStage.Prepare, StateStage.Execute])
def test_over_ssh_a_missing_or_other_binary_fails_that_host_alone(binary, message, stage):
    # Not an OperationError while pyinfra prepares: that would stop every host of
    # the deploy, on every Mac. The command fails this host with the message.
    world = over_ssh(binary)
    world.state.current_stage = stage
    commands = run(orbstack.machine, world, machine="web")
    assert len(commands) == 1 and commands[0].startswith("echo ") and commands[0].endswith(">&2; exit 1")
    assert message in commands[0] and "pyinfra-orbstack machine" not in commands[0]

