"""Every project in examples/, run end to end as its README says, on machines of the
target (the simulator, or a real OrbStack: see conftest).

Each test runs the README's own commands (checked to appear in it verbatim) in the
example's directory, twice where the README says a second run changes nothing, then the
example's own checks. EXAMPLE_PREFIX, which every example's inventory honours, names
the machines `pyinfra-orbstack-test-<run>-exN-...`; each test deletes its machines.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, Machines

EXAMPLES = REPO / "examples"


class Example:
    """One example directory, its README, and the environment its commands run in."""

    def __init__(self, orb: Machines, directory: str, prefix: str):
        self.orb = orb
        self.dir = EXAMPLES / directory
        self.readme = (self.dir / "README.md").read_text()
        self.prefix = prefix
        venv_bin = str(Path(sys.executable).parent)
        self.env = dict(orb.env, EXAMPLE_PREFIX=prefix,
                        PATH=f"{venv_bin}{os.pathsep}{orb.env['PATH']}")

    def name(self, machine: str) -> str:
        return f"{self.prefix}{machine}"

    def run(self, command: str, timeout: float = 600, check: bool = True,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """A command of the README, as a user types it in the example's directory."""
        assert command in self.readme, f"not in {self.dir.name}/README.md: {command}"
        result = subprocess.run(["bash", "-c", command], cwd=self.dir, env=env or self.env,
                                capture_output=True, text=True, timeout=timeout, start_new_session=True)
        if check:
            assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
        return result

    def as_root(self, machine: str, *command: str) -> str:
        """A command run as root in the machine, as `orb -m NAME -u root` would (for the
        examples' own checks, not a step of the README)."""
        return self.orb.orbctl("run", "-m", self.name(machine), "-u", "root", *command).stdout

    def ip4(self, machine: str) -> str:
        info = self.orb.orbctl("info", self.name(machine), "-f", "json")
        return json.loads(info.stdout)["ip4"]

    def from_the_mac(self, machine: str, path: str = "/") -> str:
        """curl http://NAME.orb.local/PATH from this side. A Mac resolves NAME.orb.local;
        the simulator's host does not (docs/simulator.md), so curl is told the address."""
        host = f"{self.name(machine)}.orb.local"
        result = subprocess.run(
            ["curl", "-fsS", "--noproxy", "*", "-m", "10", "--resolve", f"{host}:80:{self.ip4(machine)}",
             f"http://{host}{path}"], capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        return result.stdout


def changes(output: str) -> list[str]:
    """The Success column (operations that changed something) of every results table."""
    return [line.split()[3] for line in output.splitlines() if "Grand total" in line]


def assert_no_changes(result: subprocess.CompletedProcess) -> None:
    out = result.stdout + result.stderr
    totals = changes(out)
    assert totals, out
    assert all(t in ("-", "0") for t in totals), out


@pytest.fixture()
def example(orb) -> Iterator:
    made: list[Example] = []

    def make(directory: str) -> Example:
        number = directory.split("-")[0]
        made.append(Example(orb, directory, orb.new_name(f"ex{number}-")))
        return made[-1]

    yield make
    for ex in made:
        orb.delete_ours(ex.prefix)


def test_01_first_deploy_serves_a_page_at_its_orb_local_name(example):
    ex = example("01-first-deploy")
    deploy = "pyinfra -y inventory.py deploy.py"
    first = ex.run(deploy)
    assert changes(first.stdout + first.stderr) not in ([], ["-"]), first.stdout
    assert_no_changes(ex.run(deploy))
    assert "<h1>Hello from " + ex.name("hello") + "</h1>" in ex.from_the_mac("hello")
    assert "Disallow: /" in ex.from_the_mac("hello", "/robots.txt")
    owner = ex.orb.orbctl("run", "-m", ex.name("hello"), "stat", "-c", "%U", "/srv/hello/index.html")
    assert owner.stdout.strip() == "site"


def test_02_multi_machine_app_reaches_its_database_by_orb_local_name(example):
    ex = example("02-multi-machine")
    for command in ("pyinfra -y @local machines.py", "pyinfra -y inventory.py deploy.py"):
        ex.run(command)
        assert_no_changes(ex.run(command))
    check = ex.run("pyinfra -y inventory.py check.py")
    db = f"{ex.name('db')}.orb.local:6379 ("
    for app in ("app1", "app2"):
        assert f"@orbstack/{ex.name(app)} reaches {db}" in check.stdout + check.stderr, check.stderr
        assert ex.orb.orbctl("run", "-m", ex.name(app), "app-check").stdout.strip() == "PONG"
    # The check is a check: with the database down it fails and says which app cannot reach it.
    ex.as_root("db", "/etc/init.d/redis-server", "stop")
    down = ex.run("pyinfra -y inventory.py check.py", check=False)
    assert down.returncode != 0
    assert f"cannot reach {ex.name('db')}.orb.local:6379" in down.stdout + down.stderr


def fact_data(result: subprocess.CompletedProcess) -> dict:
    """The JSON after pyinfra's `--> Fact data for: ...` line."""
    text = result.stdout + result.stderr
    start = text.index("{", text.index("--> Fact data for: "))
    return json.JSONDecoder().raw_decode(text, start)[0]


def test_03_network_aliases_in_etc_hosts_resolve_and_reach_the_port(example):
    ex = example("03-network")
    deploy = "pyinfra -y inventory.py deploy.py"
    ex.run(deploy)
    assert_no_changes(ex.run(deploy))
    front, back = (f"@orbstack/{ex.name(m)}" for m in ("front", "back"))
    check = ex.run("pyinfra -y inventory.py check.py")
    shown = r"api\.internal is \['[0-9.]+'\], ping True, port 80 open True, /health 200"
    assert re.search(shown, check.stderr), check.stderr

    network = fact_data(ex.run("pyinfra inventory.py fact orbstack.Network"))
    assert network[back]["orb_name"] == f"{ex.name('back')}.orb.local"
    assert ex.ip4("back") in network[back]["ipv4"]
    alias = fact_data(ex.run("pyinfra inventory.py --limit front fact "
                             "pyinfra_orbstack.facts.linux.DnsLookup hostname=api.internal"))
    # The alias's address is the one front resolves back's OrbStack name to (its relay).
    relay = fact_data(subprocess.run(
        ["pyinfra", "inventory.py", "--limit", "front", "fact", "pyinfra_orbstack.facts.linux.DnsLookup",
         f"hostname={ex.name('back')}.orb.local"], cwd=ex.dir, env=ex.env, capture_output=True, text=True, timeout=300))
    assert alias[front]["answers"] == relay[front]["answers"] != []
    port = fact_data(ex.run("pyinfra inventory.py --limit front fact "
                            "pyinfra_orbstack.facts.linux.TcpPort target=api.internal port=80"))
    assert port == {front: {"open": True, "method": port[front]["method"], "missing": None, "error": None}}

    # With back's web server stopped, check.py fails and says why.
    ex.as_root("back", "/etc/init.d/nginx", "stop")
    down = ex.run("pyinfra -y inventory.py check.py", check=False)
    assert down.returncode != 0 and "cannot reach http://api.internal/health" in down.stderr, down.stderr


def test_04_maintenance_restores_the_snapshot_when_the_health_check_fails(example, tmp_path):
    ex = example("04-maintenance")
    ex.env["BACKUP_DIR"] = str(tmp_path / "orb-backups")
    deploy, maintain = "pyinfra -y inventory.py deploy.py", "./maintain.sh"
    ex.run(deploy)
    assert_no_changes(ex.run(deploy))
    first = ex.run(maintain)
    assert "maintain.sh: upgraded and healthy" in first.stdout
    archives = sorted(p.name for p in (tmp_path / "orb-backups").iterdir())
    assert len(archives) == 1 and re.fullmatch(re.escape(ex.name("app")) + r"-\d{8}T\d{6}Z\.tar\.zst", archives[0])
    second = ex.run(maintain)
    assert_no_changes(second)
    assert "upgraded and healthy" in second.stdout

    # A broken service, and a change made after the snapshot: the restore brings back the snapshot.
    ex.as_root("app", "sh", "-c", "rm /var/www/html/health && touch /root/after-the-snapshot")
    broken = ex.run(maintain, check=False)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "the health check failed; restoring the snapshot" in broken.stderr
    assert "restored from the snapshot and healthy again" in broken.stderr
    assert ex.as_root("app", "ls", "/root").strip() == ""
    assert ex.as_root("app", "cat", "/var/www/html/health") == "ok\n"


def test_05_ci_pipeline_deploys_tests_and_leaves_no_machine(example):
    ex = example("05-ci-pipeline")
    workflow = (REPO / ".github" / "workflows" / "example-ci-pipeline.yml").read_text()
    # Both jobs run the script this test runs (make lint-workflows checks the workflow):
    # the macOS job as is, the Linux job as root (the simulator's machines need it).
    macos, linux = workflow.split("\n  linux:")
    assert "run: examples/05-ci-pipeline/ci.sh" in macos
    assert 'run: sudo env "PATH=$PWD/bin:$PWD/.venv/bin:$PATH" examples/05-ci-pipeline/ci.sh' in linux
    for _ in range(2):  # a rerun of the job is as good as the first
        result = ex.run("./ci.sh")
        out = result.stdout + result.stderr
        machine = re.search(r"^created (\S+)$", result.stdout, re.M)[1]
        assert machine.startswith(ex.name("ci-")), out
        assert "ci.sh: second deploy: no changes" in out
        assert f"@orbstack/{machine}: port 80 open, http://localhost/ 200" in out
        assert f"ci.sh: passed on {machine}" in out
        assert result.stdout.rstrip().endswith(f"deleted {machine}"), out
        listed = ex.orb.orbctl("list", "-q").stdout.split()
        assert not [m for m in listed if m.startswith(ex.prefix)], listed


def test_06_monitoring_the_exporter_and_the_node_exporter_serve_the_machine(example):
    ex = example("06-monitoring")
    deploy = "pyinfra -y inventory.py deploy.py"
    ex.run(deploy)
    assert_no_changes(ex.run(deploy))
    machine = ex.name("watched")
    resources = ex.run("pyinfra -y inventory.py resources.py")
    assert re.search(rf"@orbstack/{machine}: load [0-9.]+, memory \d+ of \d+ MiB, / \d+ % used, \d+ processes",
                     resources.stderr), resources.stderr
    # Exit 1 when any running machine does not answer, yours too on a real OrbStack: the
    # row of this one is what counts here.
    once = ex.run("pyinfra-orbstack monitor --once", check=False)
    assert re.search(rf"^{machine}\s+running\s+\d+ ms", once.stdout, re.M), once.stdout

    # The exporter as Prometheus scrapes it. `--port 0` instead of the README's 9787: the
    # tests must not depend on a fixed port being free.
    exporter = subprocess.Popen(["pyinfra-orbstack", "monitor", "--port", "0", "--interval", "1s"],
                                env=ex.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        port = None
        for line in exporter.stderr:
            if found := re.search(r"127\.0\.0\.1:(\d+)", line):
                port = found[1]
                break
        assert port, "the exporter printed no address"
        metrics = ""
        for _ in range(50):
            metrics = subprocess.run(["curl", "-fsS", "--noproxy", "*", f"http://127.0.0.1:{port}/metrics"],
                                     capture_output=True, text=True, timeout=10).stdout
            if f'orbstack_machine_probe_success{{machine="{machine}"}} 1' in metrics:
                break
            subprocess.run(["sleep", "0.2"])
        assert f'orbstack_machine_running{{machine="{machine}"}} 1' in metrics, metrics
        assert f'orbstack_machine_probe_success{{machine="{machine}"}} 1' in metrics, metrics
        assert f'orbstack_machine_resources_success{{machine="{machine}"}} 1' in metrics, metrics
    finally:
        exporter.terminate()
        exporter.wait(timeout=30)

    # The node exporter, at the address prometheus.yml scrapes by name.
    node = subprocess.run(["curl", "-fsS", "--noproxy", "*", "-m", "10", f"http://{ex.ip4('watched')}:9100/metrics"],
                          capture_output=True, text=True, timeout=30)
    assert "node_load1 " in node.stdout, node.stderr
    config = (ex.dir / "prometheus.yml").read_text()
    assert '"watched.orb.local:9100"' in config and '"127.0.0.1:9787"' in config
    assert (ex.dir / "../../docs/monitoring/alerts.yml").resolve().is_file()


def test_every_example_has_a_test_here_and_a_link_where_its_topic_is_explained():
    docs = "".join(p.read_text() for p in (REPO / "docs").glob("*.md"))
    tests = Path(__file__).read_text()
    index = (EXAMPLES / "README.md").read_text()
    assert "(examples/)" in (REPO / "README.md").read_text()
    for directory in sorted(p.name for p in EXAMPLES.iterdir() if p.is_dir()):
        assert f'example("{directory}")' in tests, directory
        assert f"](../examples/{directory})" in docs, directory
        assert f"]({directory})" in index, directory
