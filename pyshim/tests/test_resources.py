"""Resource usage facts: orbstack.Resources read inside a machine (its probe run for
real by sh on this box with and without df, stat and python3, and through the real
pyinfra CLI in a simulator machine), and orbstack.Limits read on the Mac through the
binary's `limits --json`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import pyinfra_results
from pyinfra_orbstack.facts import resources

REPO = Path(__file__).resolve().parents[2]


def run_probe(path: str) -> dict:
    result = subprocess.run(["sh", "-c", resources.PROBE_SCRIPT], env=dict(os.environ, PATH=path),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return resources.Resources().process(result.stdout.splitlines())


def only(tmp_path: Path, *tools: str) -> str:
    """A PATH holding just these tools (and sh)."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    for tool in ("sh", *tools):
        found = os.path.realpath(sys.executable) if tool == "python3" else shutil.which(tool)
        if found and not (bindir / tool).exists():
            (bindir / tool).symlink_to(found)
    return str(bindir)


def test_the_fact_and_the_exporter_run_the_same_probe():
    assert resources.PROBE_SCRIPT == (REPO / "internal/monitor/probe.sh").read_text()


def test_the_disk_of_root_matches_statvfs_with_df():
    got = run_probe(os.environ["PATH"])
    st = os.statvfs("/")
    assert got["disk"]["method"] == "df"
    assert got["disk"]["total"] == pytest.approx(st.f_frsize * st.f_blocks, rel=0.01)
    assert 0 < got["memory"]["used"] < got["memory"]["total"]
    assert got["cpus"] == os.cpu_count()
    assert got["processes"] > 1 and len(got["load"]) == 3
    assert got["missing"] == [] and got["error"] is None


@pytest.mark.parametrize(("tools", "method"), [(("stat",), "stat"), (("python3",), "python3")])
def test_without_df_the_disk_comes_from_the_next_tool(tmp_path, tools, method):
    got = run_probe(only(tmp_path, "cat", *tools))
    st = os.statvfs("/")
    assert got["disk"]["method"] == method
    assert got["disk"]["total"] == st.f_frsize * st.f_blocks
    assert got["memory"]["total"] > 0  # /proc needs no tool


def test_with_no_tool_for_the_disk_the_fact_says_what_to_install(tmp_path):
    got = run_probe(only(tmp_path))
    assert got["disk"] == {"total": None, "used": None, "available": None, "method": None}
    assert got["missing"] == ["df", "stat", "python3"]
    assert "df, stat, python3" in got["error"]
    assert got["memory"]["total"] > 0 and got["processes"] > 0


def test_a_probe_cut_short_is_an_error_not_made_up_figures():
    got = resources.Resources().process(["load=0.1 0.2 0.3", "cpus=2"])
    assert "cut short" in got["error"]


def test_resources_of_a_machine_through_pyinfra(orb):
    machine = orb.machine("resources")
    got, result = pyinfra_results(orb.env, f"@orbstack/{machine}", "fact", "orbstack.Resources")
    assert result.returncode == 0, result.stderr
    answer = got["orbstack.Resources"][f"@orbstack/{machine}"]
    assert answer["error"] is None, answer
    assert answer["disk"]["total"] >= answer["disk"]["used"] > 0
    assert 0 < answer["memory"]["used"] < answer["memory"]["total"]
    assert answer["processes"] >= 1
    if orb.kind == "simulator":
        # The machine's own PID 1, not the kernel's boot: a machine of this session is young.
        assert answer["uptime_source"] == "init" and answer["uptime_seconds"] < 3600


@pytest.mark.simulator("sets a per-machine memory limit (OrbStack 2.1+) with orbctl config set")
def test_limits_are_orbstack_s_and_each_machine_s_disk_size(orb):
    machine = orb.machine("resources")
    orb.orbctl("config", "set", f"machine.{machine}.memory_mib", "512")
    try:
        got, result = pyinfra_results(orb.env, "@local", "fact", "orbstack.Limits")
    finally:
        orb.orbctl("config", "set", f"machine.{machine}.memory_mib", "0")
    assert result.returncode == 0, result.stderr
    limits = got["orbstack.Limits"]["@local"]
    shown = dict(line.split(": ", 1) for line in orb.orbctl("config", "show").stdout.splitlines() if ": " in line)
    assert limits["cpus"] == int(shown["cpu"])
    assert limits["memory_bytes"] == int(shown["memory_mib"]) * 2**20
    mine = next(m for m in limits["machines"] if m["name"] == machine)
    assert mine["memory_bytes"] == 512 * 2**20
    assert mine["cpus"] is None  # not set
    assert isinstance(mine["disk_size"], int) and mine["disk_size"] > 0


def test_the_fact_and_the_monitor_agree_on_a_machine(orb, real_binary):
    machine = orb.machine("resources")
    got, result = pyinfra_results(orb.env, f"@orbstack/{machine}", "fact", "orbstack.Resources")
    assert result.returncode == 0, result.stderr
    fact = got["orbstack.Resources"][f"@orbstack/{machine}"]
    once = subprocess.run([str(real_binary), "monitor", "--once", "--json"], env=orb.env,
                          capture_output=True, text=True, timeout=120)
    snapshot = json.loads(once.stdout)
    monitored = next(m for m in snapshot["machines"] if m["name"] == machine)["resources"]
    assert set(monitored) == set(fact) - {"error"}
    for figure in ("cpus", "missing", "uptime_source"):
        assert monitored[figure] == fact[figure]
    assert monitored["memory"]["total"] == fact["memory"]["total"]
    assert monitored["disk"]["total"] == fact["disk"]["total"]
    assert monitored["disk"]["method"] == fact["disk"]["method"]
