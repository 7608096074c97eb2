"""Caching machine information: the hosts of one run connect with one listing of the
machines, not an `orbctl info` each, and a lifecycle change made by the run drops it.
orbctl calls are counted with the simulator's ORBSIM_LOG, through the real pyinfra CLI."""

from __future__ import annotations

import json
import subprocess
from collections import Counter

import pytest

from conftest import run_pyinfra


def create_all(orb, names: list[str]) -> None:
    procs = [subprocess.Popen([orb.orbctl_path, "create", "-u", "dev", "debian", n], env=orb.env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for n in names]
    for p in procs:
        assert p.wait(timeout=600) == 0, p.stderr.read() if p.stderr else ""


def calls(log) -> Counter[str]:
    return Counter(line.split()[0] for line in log.read_text().splitlines() if line.strip())


@pytest.mark.simulator("counts orbctl invocations with ORBSIM_LOG")
def test_twenty_hosts_connect_with_one_listing_of_the_machines(orb, tmp_path):
    names = [orb.new_name(f"fleet{i:02d}") for i in range(20)]
    create_all(orb, names)
    try:
        (tmp_path / "inventory.py").write_text(f"hosts = {[f'@orbstack/{n}' for n in names]!r}\n")
        (tmp_path / "deploy.py").write_text(
            "from pyinfra import host\nfrom pyinfra.operations import server\n"
            "server.shell(name='address', commands=[f'echo {host.data.orbstack_ip4} > /tmp/ip4'])\n"
        )
        log = tmp_path / "orbctl.log"
        result = run_pyinfra(orb.with_knobs(ORBSIM_LOG=str(log)), "-y", "inventory.py", "deploy.py",
                             cwd=tmp_path, timeout=600)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        counted = calls(log)
        assert counted["list"] + counted["info"] <= 2, counted
        # Each host still got its own address as host data, from the listing.
        for name in names:
            info = json.loads(orb.orbctl("info", name, "-f", "json").stdout)
            assert orb.orbctl("run", "-m", name, "cat", "/tmp/ip4").stdout.strip() == info["ip4"]
    finally:
        orb.orbctl("delete", "-f", *names, check=False, timeout=600)


@pytest.mark.simulator("counts orbctl invocations with ORBSIM_LOG")
def test_a_machine_started_by_the_run_is_not_seen_stopped_by_the_next_host(orb, tmp_path):
    name = orb.new_name("cachestart")
    create_all(orb, [name])
    try:
        orb.orbctl("stop", name)
        # Two hosts on one machine: the first starts it, which drops the listing, so the
        # second sees it running (a stale listing would start it a second time).
        (tmp_path / "inventory.py").write_text(
            f"hosts = [('@orbstack/first', {{'orbstack_machine': {name!r}}}),\n"
            f"         ('@orbstack/second', {{'orbstack_machine': {name!r}}})]\n"
        )
        log = tmp_path / "orbctl.log"
        result = run_pyinfra(orb.with_knobs(ORBSIM_LOG=str(log)), "-y", "inventory.py", "exec", "--", "true",
                             cwd=tmp_path)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        assert calls(log)["start"] == 1, log.read_text()
        assert output.count(f"Started stopped OrbStack machine: {name}") == 1, output
    finally:
        orb.orbctl("delete", "-f", name, check=False)
