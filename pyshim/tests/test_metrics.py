"""Deploy metrics (PYINFRA_ORBSTACK_METRICS / host data orbstack_metrics), checked
against runs of the real pyinfra CLI whose work is known, in simulator machines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_pyinfra

KNOWN_WORK = """\
from io import StringIO
from pyinfra.operations import files, server
server.shell(name="two commands", commands=["echo a", "echo b"])
server.shell(name="fails", commands=["exit 3"], _ignore_errors=True)
server.shell(name="too slow", commands=["sleep 5"], _timeout=1, _ignore_errors=True)
files.put(name="upload", src=StringIO("x" * 1000), dest="/tmp/metrics-up.txt")
files.get(name="download", src="/tmp/metrics-up.txt", dest="got.txt")
"""


def deploy(orb, tmp_path: Path, text: str, *target: str, **env: str):
    (tmp_path / "deploy.py").write_text(text)
    result = run_pyinfra({**orb.env, **env}, "-y", *target, "deploy.py", cwd=tmp_path)
    return result, result.stdout + result.stderr


def test_metrics_of_a_run_whose_work_is_known(orb, tmp_path):
    machine = orb.machine("metrics")
    result, output = deploy(orb, tmp_path, KNOWN_WORK, f"@orbstack/{machine}",
                            PYINFRA_ORBSTACK_METRICS=str(tmp_path / "m.json"))
    assert result.returncode == 0, output
    data = json.loads((tmp_path / "m.json").read_text())
    host = data["hosts"][f"@orbstack/{machine}"]
    ops = host["operations"]
    assert ops["two commands"]["commands"] == 2 and ops["two commands"]["errors"] == {}
    assert ops["fails"]["errors"] == {"exit_status": 1}
    assert ops["too slow"]["errors"] == {"timeout": 1}
    assert (ops["upload"]["uploads"], ops["upload"]["upload_bytes"]) == (1, 1000)
    assert (ops["download"]["downloads"], ops["download"]["download_bytes"]) == (1, 1000)
    assert (host["uploads"], host["upload_bytes"], host["download_bytes"]) == (1, 1000, 1000)
    assert host["errors"] == {"exit_status": 1, "timeout": 1}
    assert host["commands"] == sum(op["commands"] for op in ops.values())
    assert ops["two commands"]["output_bytes"] == len("a\nb\n")
    # The 1 s timeout is time in the command, not in the connector.
    assert ops["too slow"]["command_seconds"] >= 1 > ops["too slow"]["connector_seconds"]
    assert host["command_seconds"] >= sum(op["command_seconds"] for op in ops.values()) - 1e-3
    # One session served every command of the host; none ran the per-call way.
    assert host["sessions_started"] >= 1 and host["per_call_runs"] == 0
    assert host["sessions_reused"] == host["commands"] - host["sessions_started"]
    assert (host["started"], host["created"]) == (False, False)
    assert data["orbctl"]["run"] >= 1
    # The same, as a table at the end of the run.
    assert "--> pyinfra-orbstack metrics:" in output
    row = next(line for line in output.splitlines() if line.strip().startswith(f"@orbstack/{machine} "))
    assert f" {host['commands']} " in row and "exit_status 1, timeout 1" in row
    assert f"JSON: {tmp_path / 'm.json'}" in output


def test_metrics_are_off_by_default(orb, tmp_path):
    machine = orb.machine("metrics")
    env = {k: v for k, v in orb.env.items() if k != "PYINFRA_ORBSTACK_METRICS"}
    (tmp_path / "deploy.py").write_text("from pyinfra.operations import server\nserver.shell(commands=['true'])\n")
    result = run_pyinfra(env, "-y", f"@orbstack/{machine}", "deploy.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "pyinfra-orbstack metrics" not in result.stdout + result.stderr
    assert list(tmp_path.glob("*.json")) == []


def test_host_data_switches_them_on_with_the_default_file(orb, tmp_path):
    machine = orb.machine("metrics")
    (tmp_path / "inventory.py").write_text(f"hosts = [('@orbstack/{machine}', {{'orbstack_metrics': True}})]\n")
    result, output = deploy(orb, tmp_path, "from pyinfra.operations import server\nserver.shell(commands=['true'])\n",
                            "inventory.py")
    assert result.returncode == 0, output
    data = json.loads((tmp_path / "pyinfra-orbstack-metrics.json").read_text())
    assert data["hosts"][f"@orbstack/{machine}"]["commands"] >= 1


def test_many_tiny_operations_and_per_call_commands_get_hints(orb, tmp_path):
    machine = orb.machine("metrics")
    many = "from pyinfra.operations import server\n" + "".join(
        f"server.shell(name='step {i}', commands=['true'])\n" for i in range(12))
    result, output = deploy(orb, tmp_path, many, f"@orbstack/{machine}",
                            PYINFRA_ORBSTACK_METRICS="1", PYINFRA_ORBSTACK_SESSIONS="0")
    assert result.returncode == 0, output
    hints = json.loads((tmp_path / "pyinfra-orbstack-metrics.json").read_text())["hints"]
    assert any("12 operations" in h and "joined into one server.shell command" in h for h in hints), hints
    assert any("each of its 12 commands started an orbctl process of its own" in h
               and "PYINFRA_ORBSTACK_SESSIONS=0" in h for h in hints), hints
    assert "Hint: " in output


@pytest.mark.simulator("stops a machine of the session to have it started at connect")
def test_a_machine_started_at_connect_is_counted(orb, tmp_path):
    name = orb.new_name("metricsstart")
    orb.orbctl("create", "debian", name, timeout=600)
    try:
        orb.orbctl("stop", name)
        result, output = deploy(orb, tmp_path, "from pyinfra.operations import server\nserver.shell(commands=['true'])\n",
                                f"@orbstack/{name}", PYINFRA_ORBSTACK_METRICS="1")
        assert result.returncode == 0, output
        host = json.loads((tmp_path / "pyinfra-orbstack-metrics.json").read_text())["hosts"][f"@orbstack/{name}"]
        assert (host["started"], host["created"]) == (True, False)
        assert any("was started at connect" in h for h in json.loads(
            (tmp_path / "pyinfra-orbstack-metrics.json").read_text())["hints"])
    finally:
        orb.orbctl("delete", "-f", name, check=False)


def test_a_metrics_file_that_cannot_be_written_is_said_and_the_deploy_still_succeeds(orb, tmp_path):
    machine = orb.machine("metrics")
    target = tmp_path / "no-such-dir" / "m.json"
    result, output = deploy(orb, tmp_path, "from pyinfra.operations import server\nserver.shell(commands=['true'])\n",
                            f"@orbstack/{machine}", PYINFRA_ORBSTACK_METRICS=str(target))
    assert result.returncode == 0, output
    assert f"could not write {target}: No such file or directory" in output
    assert "--> pyinfra-orbstack metrics:" in output and "Traceback" not in output
