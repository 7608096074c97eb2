"""The Mac-side facts through the real pyinfra CLI against the simulator, as each
OrbStack version prints things (ORBSIM_VERSION), and with OrbStack stopped, starting or
failing to start (ORBSIM_ORBSTACK). The simulator's output formats were written from the
orbctl reference independently of these parsers.
"""

from __future__ import annotations

import json

import pytest

from conftest import run_pyinfra


def facts(sim, *args: str, **env: str) -> tuple[dict, str]:
    result = run_pyinfra(dict(sim.env, **env), "--json", "@local", "fact", *args)
    out = json.loads(result.stdout) if result.stdout.strip() else {}
    return {name: hosts["@local"] for name, hosts in out.items()}, result.stderr


@pytest.mark.parametrize(
    ("version", "has_ip", "has_default_user"),
    [("0.14.0", False, False), ("1.9.0", False, True), ("1.11.3", True, True), ("2.2.3", True, True)],
)
def test_machine_facts_read_every_version_s_json(sim, version, has_ip, has_default_user):
    machine = sim.machine("facts")
    got, err = facts(sim, "orbstack.Machines", "orbstack.Machine", f"machine={machine}",
                     "orbstack.Version", ORBSIM_VERSION=version)
    listed = got["orbstack.Machines"][machine]
    info = got[f"orbstack.Machine (machine={machine})"]
    assert (listed["distro"], info["distro"], info["state"]) == ("debian", "debian", "running"), err
    assert bool(info["ip4"]) == has_ip  # ip4 arrived in 1.11.3
    assert bool(info["default_user"]) == has_default_user  # config{} arrived in 0.15
    assert got["orbstack.Version"]["version"] == version


@pytest.mark.parametrize("version", ["1.9.0", "1.11.3", "2.2.3"])
def test_config_value_is_the_value_or_none_when_this_orbstack_cannot_say(sim, version):
    got, err = facts(sim, "orbstack.ConfigValue", "key=memory_mib", "orbstack.Config",
                     ORBSIM_VERSION=version)
    shown = got["orbstack.Config"]["memory_mib"]
    value = got["orbstack.ConfigValue (key=memory_mib)"]
    # 2.x prints the bare value; 1.11.3 printed every line (a bug); 1.9 had no config get.
    assert value == (shown if version == "2.2.3" else None), err


@pytest.mark.parametrize(("mode", "status"), [("stopped", "Stopped"), ("starting", "Starting")])
def test_status_reports_orbstack_s_state(sim, mode, status):
    got, err = facts(sim, "orbstack.Status", ORBSIM_ORBSTACK=mode)
    assert got["orbstack.Status"] == status, err


def test_orbstack_failing_to_start_fails_the_fact_with_orbctl_s_message(sim):
    machine = sim.machine("facts")
    result = run_pyinfra(dict(sim.env, ORBSIM_ORBSTACK="broken"), "@local", "fact",
                         "orbstack.Machine", f"machine={machine}")
    assert "failed to start OrbStack" in result.stderr
    assert "could not load fact: orbstack.Machine" in result.stderr
