"""The acceptance list of issue 3: the real pyinfra CLI, the real binary, machines of
the target (the simulator, or a real OrbStack: see conftest).

Each test runs `pyinfra` as a user would and checks the result inside the machine
with `orbctl run` (orbctl's own, not our code path).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import time

import pytest

from conftest import PYINFRA, run_pyinfra

DEPLOY = '''
from io import StringIO
from pyinfra.operations import files, server

files.directory(name="directory", path="/srv/t", mode="755", _sudo=True)
files.put(name="put from path", src="payload.bin", dest="/srv/t/from-path.bin", _sudo=True)
files.put(name="put from StringIO", src=StringIO("from memory\\n"), dest="/srv/t/from-io.txt", _sudo=True)
files.put(name="put private", src=StringIO("s3cret\\n"), dest="/srv/t/secret", mode="600", _sudo=True)
files.template(name="template", src="app.conf.j2", dest="/srv/t/app.conf", greeting="hello", _sudo=True)
files.line(name="line", path="/etc/motd", line="managed by pyinfra over @orbstack", _sudo=True)
server.user(name="user", user="tuser", home="/home/tuser", shell="/bin/sh", _sudo=True)
files.put(name="put as su user", src=StringIO("mine\\n"), dest="/home/tuser/mine.txt",
          _sudo=True, _su_user="tuser")
server.shell(name="shell sudo", commands=["id -un > /srv/t/sudo-user"], _sudo=True)
server.shell(name="shell su", commands=["id -un > /home/tuser/su-user"], _sudo=True, _su_user="tuser")
server.shell(name="shell env", commands=['echo "$GREETING" > /tmp/env-out'], _env={"GREETING": "hi there"})
server.shell(name="shell chdir", commands=["pwd > /tmp/chdir-out"], _chdir="/srv/t")
server.shell(name="shell stdin", commands=["cat > /tmp/stdin-out"], _stdin="line one\\nline two")
server.shell(name="shell bash", commands=['echo "${BASH_VERSION:+bash}" > /tmp/shell-out'],
             _shell_executable="bash", _get_pty=True)
files.get(name="get", src="/srv/t/app.conf", dest="got/app.conf")
files.get(name="get with sudo", src="/srv/t/secret", dest="got/secret", _sudo=True)
'''

TEMPLATE = "greeting={{ greeting }}\nmachine={{ host.data.orbstack_machine }}\n"


def in_machine(orb, machine: str, command: str, user: str = "root") -> str:
    return orb.orbctl("run", "-m", machine, "-u", user, "sh", "-c", command).stdout


def results_table(output: str) -> dict[str, list[str]]:
    """pyinfra's final "Results" table: operation name -> [hosts, success, error, no change]."""
    rows = {}
    in_table = False
    for line in output.splitlines():
        if "--> Results:" in line:
            in_table = True
            continue
        if in_table and line.strip().startswith("-->"):
            break
        if in_table:
            cells = line.split()
            if len(cells) >= 5 and cells[0] != "Operation":
                rows[" ".join(cells[:-4])] = cells[-4:]
    return rows


@pytest.fixture(scope="module")
def deployed(orb, tmp_path_factory):
    """Runs the deploy twice against one machine; both runs' output."""
    machine = orb.machine("deploy")
    workdir = tmp_path_factory.mktemp("deploy")
    (workdir / "deploy.py").write_text(DEPLOY)
    (workdir / "app.conf.j2").write_text(TEMPLATE)
    (workdir / "payload.bin").write_bytes(bytes(range(256)) * 64 + b"\x00no newline")
    (workdir / "got").mkdir()
    first = run_pyinfra(orb.env, "-y", f"@orbstack/{machine}", "deploy.py", cwd=workdir)
    assert first.returncode == 0, first.stdout + first.stderr
    second = run_pyinfra(orb.env, "-y", f"@orbstack/{machine}", "deploy.py", cwd=workdir)
    assert second.returncode == 0, second.stdout + second.stderr
    return machine, workdir, first, second


def test_deploy_puts_files_byte_exact(orb, deployed):
    machine, workdir, _, _ = deployed
    remote = in_machine(orb, machine, "sha256sum /srv/t/from-path.bin").split()[0]
    assert remote == hashlib.sha256((workdir / "payload.bin").read_bytes()).hexdigest()
    assert in_machine(orb, machine, "cat /srv/t/from-io.txt") == "from memory\n"


def test_deploy_sets_mode_and_owner_of_sudo_and_su_uploads(orb, deployed):
    machine, *_ = deployed
    assert in_machine(orb, machine, "stat -c '%a %U' /srv/t/secret") == "600 root\n"
    assert in_machine(orb, machine, "stat -c '%U' /home/tuser/mine.txt") == "tuser\n"
    # Staging directories were cleaned up.
    assert in_machine(orb, machine, "ls -d /tmp/pyinfra-orbstack-* 2>/dev/null || true") == ""


def test_deploy_renders_template_and_line(orb, deployed):
    machine, *_ = deployed
    assert in_machine(orb, machine, "cat /srv/t/app.conf") == f"greeting=hello\nmachine={machine}\n"
    assert "managed by pyinfra over @orbstack\n" in in_machine(orb, machine, "cat /etc/motd")


def test_deploy_runs_shell_with_control_arguments(orb, deployed):
    machine, *_ = deployed
    assert in_machine(orb, machine, "cat /srv/t/sudo-user") == "root\n"
    assert in_machine(orb, machine, "cat /home/tuser/su-user") == "tuser\n"
    assert in_machine(orb, machine, "cat /tmp/env-out") == "hi there\n"
    assert in_machine(orb, machine, "cat /tmp/chdir-out") == "/srv/t\n"
    assert in_machine(orb, machine, "cat /tmp/stdin-out") == "line one\nline two\n"
    assert in_machine(orb, machine, "cat /tmp/shell-out") == "bash\n"
    assert in_machine(orb, machine, "getent passwd tuser").startswith("tuser:")


def test_deploy_gets_files(deployed):
    _, workdir, _, _ = deployed
    assert (workdir / "got/app.conf").read_text().startswith("greeting=hello\n")
    assert (workdir / "got/secret").read_text() == "s3cret\n"


MORE_CONTROL_ARGUMENTS = '''
from pyinfra.operations import server
server.shell(name="sudo user", commands=["id -un > /tmp/ca/sudo-user"], _sudo=True, _sudo_user="nobody")
server.shell(name="sudo login", commands=["pwd > /tmp/ca/sudo-login"], _sudo=True, _use_sudo_login=True)
server.shell(name="sudo env", commands=['echo "$KEPT" > /tmp/ca/sudo-env'], _sudo=True,
             _preserve_sudo_env=True, _env={"KEPT": "kept"})
server.shell(name="su login", commands=["pwd > /tmp/ca/su-login"], _sudo=True, _su_user="dev", _use_su_login=True)
server.shell(name="su shell", commands=['echo "$SHELL" > /tmp/ca/su-shell'], _sudo=True, _su_user="dev",
             _su_shell="bash")
server.shell(name="stdin beyond", commands=["cat > /tmp/ca/stdin; read more || echo eof >> /tmp/ca/stdin"],
             _stdin="given")
server.shell(name="no stdin", commands=["read x || echo eof > /tmp/ca/no-stdin"], _timeout=10)
server.shell(name="retries", commands=["echo x >> /tmp/ca/tries; [ $(wc -l < /tmp/ca/tries) -ge 3 ]"],
             _retries=2, _retry_delay=0)
'''


def test_more_control_arguments(orb, tmp_path):
    machine = orb.machine("deploy")
    in_machine(orb, machine, "rm -rf /tmp/ca && mkdir -m 1777 /tmp/ca")
    (tmp_path / "deploy.py").write_text(MORE_CONTROL_ARGUMENTS)
    result = run_pyinfra(orb.env, "-y", f"@orbstack/{machine}", "deploy.py", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    got = {name: in_machine(orb, machine, f"cat /tmp/ca/{name}").strip()
           for name in ("sudo-user", "sudo-login", "sudo-env", "su-login", "su-shell", "stdin", "no-stdin")}
    # A command reading past the given stdin (or with none) gets end-of-file, not a hang.
    assert got == {"sudo-user": "nobody", "sudo-login": "/root", "sudo-env": "kept",
                   "su-login": "/home/dev", "su-shell": "/usr/bin/bash", "stdin": "given\neof", "no-stdin": "eof"}
    # pyinfra retried the failing command twice; the connector never retries by itself.
    assert in_machine(orb, machine, "wc -l < /tmp/ca/tries").strip() == "3"


def test_second_deploy_changes_nothing(deployed):
    *_, second = deployed
    rows = results_table(second.stdout + second.stderr)
    assert rows, second.stdout + second.stderr
    for name, (hosts, success, error, no_change) in rows.items():
        if name.startswith("shell") or name == "Grand total":
            continue  # server.shell always runs
        assert (success, error, no_change) == ("-", "-", "1"), f"{name} changed on the second run"


def test_exec_runs_on_every_machine_in_parallel(orb):
    machines = [orb.machine(f"par{i}") for i in range(5)]
    started = time.monotonic()
    # Every machine of the inventory, limited to this session's: never yours.
    result = run_pyinfra(orb.env, "@orbstack", "--limit", f"@orbstack/{orb.new_name('par')}*",
                         "exec", "--", "sleep 2 && hostname")
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    for machine in machines:
        # pyinfra pads host prefixes to the longest name.
        assert re.search(rf"^\[@orbstack/{machine}\] *{machine}$", result.stderr, re.M), result.stderr
    # One after another, five 2-second commands would take 10 s.
    assert elapsed < 9, f"took {elapsed:.1f} s"


def test_exec_output_is_live_and_interleaved(orb):
    machine = orb.machine("deploy")
    proc = subprocess.Popen(
        [str(PYINFRA), f"@orbstack/{machine}", "exec", "--",
         "echo first; echo warn >&2; sleep 2; echo last"],
        env=orb.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    seen: dict[str, float] = {}
    for line in proc.stderr:
        for word in ("first", "warn", "last"):
            if line.rstrip().endswith(f"] {word}") or line.rstrip().endswith(f"{word}\x1b[0m"):
                seen.setdefault(word, time.monotonic())
    proc.wait(timeout=30)
    assert proc.returncode == 0
    assert set(seen) == {"first", "warn", "last"}
    # "first" and "warn" were shown while the command still ran, not at the end.
    assert seen["last"] - seen["first"] > 1.5
    assert seen["last"] - seen["warn"] > 1.5


def test_exec_shows_unicode_and_survives_bytes_that_are_not_utf8(orb):
    machine = orb.machine("deploy")
    result = run_pyinfra(orb.env, f"@orbstack/{machine}", "exec", "--",
                         r"printf 'h\303\251llo \342\234\223 \346\227\245\n\377\376raw\n'")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert f"[@orbstack/{machine}] héllo ✓ 日\n" in result.stderr
    assert f"[@orbstack/{machine}] \ufffd\ufffdraw\n" in result.stderr
    assert "Traceback" not in output


def fact_output(stderr: str, fact: str):
    """The JSON pyinfra prints on stderr after `--> Fact data for: FACT`."""
    start = stderr.index("{", stderr.index(f"--> Fact data for: {fact}"))
    return json.JSONDecoder().raw_decode(stderr, start)[0]


def test_facts(orb):
    machine = orb.machine("deploy")
    result = run_pyinfra(orb.env, f"@orbstack/{machine}", "fact", "server.Os", "server.Users")
    assert result.returncode == 0, result.stdout + result.stderr
    assert fact_output(result.stderr, "server.Os") == {f"@orbstack/{machine}": "Linux"}
    assert "root" in fact_output(result.stderr, "server.Users")[f"@orbstack/{machine}"]


def test_unknown_machine_names_the_existing_ones(orb):
    existing = orb.machine("deploy")
    result = run_pyinfra(orb.env, "@orbstack/no-such-machine", "exec", "--", "true")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "No OrbStack machine named `no-such-machine`" in output
    assert existing in output
    assert "Traceback" not in output


def test_unknown_machine_with_an_invalid_name_is_not_offered_orbctl_create(orb):
    existing = orb.machine("deploy")
    result = run_pyinfra(orb.env, "@orbstack/web_1", "exec", "--", "true")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "`web_1` is not even a valid machine name" in output, output
    assert existing in output
    assert "orbctl create" not in output


def test_orbctl_override_that_is_wrong_says_so(orb):
    env = dict(orb.env, PYINFRA_ORBSTACK_ORBCTL="/nope")
    result = run_pyinfra(env, f"@orbstack/{orb.machine('deploy')}", "exec", "--", "true")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "PYINFRA_ORBSTACK_ORBCTL is set to /nope, which is not an executable file" in output
    assert "install OrbStack" not in output  # it is the override that is wrong
    assert "Traceback" not in output


@pytest.mark.parametrize("data, message", [
    ("orbstack_user=ghost", 'there is no user "ghost" in machine {machine}: create that user, or set `orbstack_user`'),
    ("orbstack_workdir=/no/such/dir", "has no directory /no/such/dir (`orbstack_workdir`)"),
])
def test_a_wrong_user_or_workdir_fails_the_connect(orb, data, message):
    # As @ssh fails at login, not at every command (or, for the workdir, instead
    # of running everything in `/`, orbctl's fallback).
    machine = orb.machine("deploy")
    result = run_pyinfra(orb.env, "--data", data, f"@orbstack/{machine}", "exec", "--", "touch t-wrong-setting")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert message.format(machine=machine) in output, output
    assert "Connected" not in output and "Traceback" not in output
    assert in_machine(orb, machine, "ls /t-wrong-setting /home/dev/t-wrong-setting 2>/dev/null || true") == ""


@pytest.mark.simulator("a stopped OrbStack")
def test_stopped_orbstack_is_started_by_orbctl(orb):
    # Like the real orbctl, the simulator starts a stopped OrbStack for any command.
    machine = orb.machine("deploy")
    result = run_pyinfra(orb.with_knobs(ORBSIM_ORBSTACK="stopped"), f"@orbstack/{machine}",
                         "exec", "--", "echo up")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"[@orbstack/{machine}] up" in result.stderr


def test_ctrl_c_mid_command_stops_it_in_the_machine(orb):
    machine = orb.machine("deploy")
    in_machine(orb, machine, "rm -f /tmp/cc.pid")
    # A terminal's Ctrl-C sends SIGINT to the whole foreground process group.
    proc = subprocess.Popen(
        [str(PYINFRA), f"@orbstack/{machine}", "exec", "--", "echo $$ > /tmp/cc.pid; exec sleep 60"],
        env=orb.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        pid = ""
        while not pid and time.monotonic() < deadline:
            pid = in_machine(orb, machine, "cat /tmp/cc.pid 2>/dev/null || true").strip()
            time.sleep(0.2)
        assert pid, "the command never started"
        os.killpg(proc.pid, signal.SIGINT)
        interrupted_at = time.monotonic()
        output, _ = proc.communicate(timeout=20)
        assert time.monotonic() - interrupted_at < 10
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert "Exiting upon user request!" in output
    assert "Traceback" not in output
    # The binary exits 130 on the interrupt, so the failure reads as with @local:
    # an interrupted command, not a binary that crashed.
    assert "stopped answering" not in output, output
    assert "Error: executed 0 commands" in output
    gone = ""
    for _ in range(25):  # orbctl forwards the signal into the machine: give it a moment
        gone = in_machine(orb, machine, f"kill -0 {pid} 2>/dev/null && echo alive || echo gone")
        if gone == "gone\n":
            break
        time.sleep(0.2)
    assert gone == "gone\n", "the command still runs in the machine"
    assert subprocess.run(["pgrep", "-s", str(proc.pid)], capture_output=True).stdout == b""


@pytest.mark.simulator("no orbctl anywhere, which a Mac with OrbStack never is")
@pytest.mark.parametrize("path", ["/usr/bin:/bin", ""])
def test_orbctl_missing(orb, path):
    env = dict(orb.env, PATH=path)
    result = run_pyinfra(env, "@orbstack/anything", "exec", "--", "true")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "orbctl was not found" in output
    assert "Traceback" not in output


def test_stopped_machine_is_started(orb):
    machine = orb.machine("stopped")
    orb.orbctl("stop", machine)
    result = run_pyinfra(orb.env, f"@orbstack/{machine}", "exec", "--", "echo up")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Started stopped OrbStack machine" in output
    assert f"[@orbstack/{machine}] up" in output
    assert json.loads(orb.orbctl("info", machine, "-f", "json").stdout)["record"]["state"] == "running"


def test_timeout_kills_the_command_in_the_machine(orb, tmp_path):
    machine = orb.machine("deploy")
    (tmp_path / "deploy.py").write_text(
        "from pyinfra.operations import server\n"
        "server.shell(name='slow', commands=['echo $$ > /tmp/slow.pid; exec sleep 60'], _timeout=2)\n"
    )
    started = time.monotonic()
    result = run_pyinfra(orb.env, "-y", f"@orbstack/{machine}", "deploy.py", cwd=tmp_path, timeout=60)
    elapsed = time.monotonic() - started
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert elapsed < 20, f"took {elapsed:.1f} s"
    assert "Traceback" not in output
    pid = in_machine(orb, machine, "cat /tmp/slow.pid").strip()
    assert in_machine(orb, machine, f"kill -0 {pid} 2>/dev/null && echo alive || echo gone") == "gone\n"


def test_nonzero_exit_fails_unless_allowed(orb, tmp_path):
    machine = orb.machine("deploy")
    result = run_pyinfra(orb.env, f"@orbstack/{machine}", "exec", "--", "echo oops >&2; exit 3")
    assert result.returncode != 0
    assert "oops" in result.stderr

    (tmp_path / "deploy.py").write_text(
        "from pyinfra.operations import server\n"
        "server.shell(name='allowed', commands=['exit 3'], _success_exit_codes=[3])\n"
    )
    allowed = run_pyinfra(orb.env, "-y", f"@orbstack/{machine}", "deploy.py", cwd=tmp_path)
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr


def binary_children(pid: int) -> list[int]:
    """The pyinfra-orbstack processes pid started (pgrep: Linux and macOS alike)."""
    out = subprocess.run(["pgrep", "-P", str(pid), "-f", "pyinfra-orbstack"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_killing_the_binary_mid_deploy_fails_fast(orb, tmp_path):
    machine = orb.machine("deploy")
    (tmp_path / "deploy.py").write_text(
        "from pyinfra.operations import server\n"
        "server.shell(name='long', commands=['touch /tmp/long-started; sleep 60'])\n"
    )
    proc = subprocess.Popen(
        [str(PYINFRA), "-y", f"@orbstack/{machine}", "deploy.py"], cwd=tmp_path, env=orb.env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 60
        binary_pid = None
        while time.monotonic() < deadline:
            binaries = binary_children(proc.pid)
            if binaries and in_machine(orb, machine, "test -e /tmp/long-started && echo y || true") == "y\n":
                binary_pid = binaries[0]
                break
            time.sleep(0.2)
        assert binary_pid, "the deploy never started its long command"
        os.kill(binary_pid, signal.SIGKILL)
        killed_at = time.monotonic()
        output, _ = proc.communicate(timeout=30)
        assert time.monotonic() - killed_at < 10
    finally:
        if proc.poll() is None:
            proc.kill()
        in_machine(orb, machine, "rm -f /tmp/long-started")
    assert proc.returncode != 0
    assert "stopped answering" in output
    assert "Traceback" not in output


def test_100mb_put_arrives_byte_exact(orb, tmp_path):
    machine = orb.machine("deploy")
    big = tmp_path / "big.bin"
    digest = hashlib.sha256()
    with open(big, "wb") as f:
        for _ in range(100):
            chunk = os.urandom(1 << 20)
            digest.update(chunk)
            f.write(chunk)
    (tmp_path / "deploy.py").write_text(
        "from pyinfra.operations import files\n"
        "files.put(name='big', src='big.bin', dest='/tmp/big.bin')\n"
    )
    started = time.monotonic()
    result = run_pyinfra(orb.env, "-y", f"@orbstack/{machine}", "deploy.py", cwd=tmp_path, timeout=300)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    try:
        assert in_machine(orb, machine, "sha256sum /tmp/big.bin").split()[0] == digest.hexdigest()
    finally:
        in_machine(orb, machine, "rm -f /tmp/big.bin")
    print(f"100 MB files.put took {elapsed:.1f} s including pyinfra start-up")


def test_sudo_password_is_used_masked_and_its_askpass_file_removed(orb, tmp_path):
    machine = orb.machine("deploy")
    in_machine(orb, machine,
               "id pwuser >/dev/null 2>&1 || useradd -m -s /bin/sh pwuser; echo 'pwuser:Pa55-word' | chpasswd; "
               "echo 'pwuser ALL=(ALL) ALL' > /etc/sudoers.d/pwuser; chmod 0440 /etc/sudoers.d/pwuser")
    (tmp_path / "deploy.py").write_text(
        "from pyinfra.operations import server\n"
        "server.shell(name='as root', commands=['id -un > /tmp/pw-sudo-out'],\n"
        "             _sudo=True, _sudo_password='Pa55-word')\n"
    )
    result = run_pyinfra(orb.env, "-y", "-vv", "--debug", "--data", "orbstack_user=pwuser",
                         f"@orbstack/{machine}", "deploy.py", cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert in_machine(orb, machine, "cat /tmp/pw-sudo-out") == "root\n"
    # -vv echoed the command, with the password masked; --debug logs don't show it either.
    assert ">>> env SUDO_ASKPASS=" in output
    assert "Pa55-word" not in output
    # pyinfra removes its askpass script after disconnecting: that call still works,
    # and the connector does it before stopping the binary instead of starting another.
    assert in_machine(orb, machine, "ls /tmp/pyinfra-sudo-askpass-* 2>/dev/null || true") == ""
    assert output.count(" serve --debug (pid ") == 1, output


def test_orbstack_image_creates_a_missing_machine(orb):
    name = orb.new_name("created")
    result = run_pyinfra(orb.env, "--data", "orbstack_image=debian:bookworm", f"@orbstack/{name}",
                         "exec", "--", "hostname")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert f"Created OrbStack machine: {name}" in output
    assert f"[@orbstack/{name}] {name}" in output
    orb.orbctl("delete", "-f", name)


def test_inventory_creation_settings_reach_orbctl_create(orb, tmp_path):
    name = orb.new_name("iso")
    (tmp_path / "init.sh").write_text("#!/bin/sh\necho from-user-data > /etc/provisioned-by\n")
    (tmp_path / "inventory.py").write_text(
        f'hosts = [("@orbstack/{name}", {{"orbstack_image": "debian:bookworm", "orbstack_isolated": True,\n'
        f'          "orbstack_cpus": 2, "orbstack_memory": "2G", "orbstack_user_data": "init.sh"}})]\n'
    )
    try:
        result = run_pyinfra(orb.env, "inventory.py", "exec", "--", "cat", "/etc/provisioned-by", cwd=tmp_path)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        assert f"[@orbstack/{name}] from-user-data" in output, "the user data (a relative path) ran"
        info = json.loads(orb.orbctl("info", name, "-f", "json").stdout)
        assert info["record"]["config"]["isolated"] is True
        assert orb.orbctl("config", "get", f"machine.{name}.cpu").stdout.strip() == "2"
        assert orb.orbctl("config", "get", f"machine.{name}.memory_mib").stdout.strip() == "2048"
    finally:
        orb.orbctl("delete", "-f", name, check=False)


def test_orbstack_start_off_refuses_a_stopped_machine(orb):
    machine = orb.machine("stopped")
    orb.orbctl("stop", machine)
    result = run_pyinfra(orb.env, "--data", "orbstack_start=False", f"@orbstack/{machine}",
                         "exec", "--", "true")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"`{machine}` is stopped and `orbstack_start` is off" in output
    assert json.loads(orb.orbctl("info", machine, "-f", "json").stdout)["record"]["state"] == "stopped"


def test_all_machines_inventory_has_groups_and_host_data(orb, tmp_path):
    machine = orb.machine("deploy")
    info = json.loads(orb.orbctl("info", machine, "-f", "json").stdout)
    (tmp_path / "deploy.py").write_text(
        "from pyinfra import host\n"
        "from pyinfra.operations import server\n"
        "d = host.data\n"
        "line = f'{d.orbstack_machine} {d.orbstack_distro} {d.orbstack_version} {d.orbstack_arch} '\n"
        "line += f'{d.orbstack_default_user} {d.orbstack_ip4} ' + ' '.join(sorted(host.groups))\n"
        "server.shell(name='record', commands=[f'echo {line} > /tmp/host-data'])\n"
    )
    result = run_pyinfra(orb.env, "-y", "@orbstack", "--limit", f"@orbstack/{machine}", "deploy.py", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    record = info["record"]
    image = record["image"]
    expected = (f"{machine} debian {image['version']} {image['arch']} {record['config']['default_username']} "
                f"{info['ip4']} @orbstack orbstack_{image['arch']} orbstack_debian orbstack_running\n")
    assert in_machine(orb, machine, "cat /tmp/host-data") == expected



@pytest.mark.simulator("a group limit runs on every debian machine: only the simulator's are all the suite's")
def test_all_machines_inventory_can_be_limited_to_a_group(orb):
    machine = orb.machine("deploy")
    limited = run_pyinfra(orb.env, "@orbstack", "--limit", "orbstack_debian", "exec", "--", "true")
    assert limited.returncode == 0, limited.stdout + limited.stderr
    assert f"@orbstack/{machine}" in limited.stderr


def test_sudo_password_prompt_retries_the_command_once_with_the_password(orb, tmp_path):
    machine = orb.machine("deploy")
    in_machine(orb, machine,
               "id pwuser >/dev/null 2>&1 || useradd -m -s /bin/sh pwuser; echo 'pwuser:Pa55-word' | chpasswd; "
               "echo 'pwuser ALL=(ALL) ALL' > /etc/sudoers.d/pwuser; chmod 0440 /etc/sudoers.d/pwuser; "
               "rm -f /tmp/pw-prompt-out /tmp/pw-prompt-count")
    (tmp_path / "deploy.py").write_text(
        "from pyinfra.operations import server\n"
        "server.shell(name='as root', commands=['echo x >> /tmp/pw-prompt-count; id -un > /tmp/pw-prompt-out'],\n"
        "             _sudo=True)\n"
    )
    # --use-sudo-password is what a user types for this (pyinfra 3.10 prompts on
    # sudo's complaint either way); --debug must not show the typed password.
    result = run_pyinfra(orb.env, "-y", "--debug", "-vv", "--use-sudo-password", "--data", "orbstack_user=pwuser",
                         f"@orbstack/{machine}", "deploy.py", cwd=tmp_path, input="Pa55-word\n")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "sudo password:" in output
    assert "Pa55-word" not in output
    assert in_machine(orb, machine, "cat /tmp/pw-prompt-out") == "root\n"
    # The first attempt failed before running anything; the retry ran it once.
    assert in_machine(orb, machine, "cat /tmp/pw-prompt-count") == "x\n"


@pytest.mark.simulator("an OrbStack without machines (a fresh ORBSIM_HOME)")
def test_all_machines_when_there_are_none(orb, tmp_path):
    env = orb.with_knobs(ORBSIM_HOME=str(tmp_path / "empty-orbsim"))
    result = run_pyinfra(env, "@orbstack", "exec", "--", "true")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "`@orbstack` means every OrbStack machine, and there are none" in output
    assert "Traceback" not in output


@pytest.mark.simulator("no orbctl anywhere, which a Mac with OrbStack never is")
def test_all_machines_without_orbctl(orb):
    result = run_pyinfra(dict(orb.env, PATH="/usr/bin:/bin"), "@orbstack", "exec", "--", "true")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Cannot list OrbStack machines: orbctl not found" in output
    assert "Traceback" not in output


@pytest.mark.simulator("an OrbStack that fails to start")
def test_orbstack_that_cannot_start(orb):
    machine = orb.machine("deploy")
    env = orb.with_knobs(ORBSIM_ORBSTACK="broken")
    result = run_pyinfra(env, f"@orbstack/{machine}", "exec", "--", "true")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "OrbStack is not running and could not be started" in output
    assert "simulated start failure" in output  # orbctl's own message is kept
    assert "Traceback" not in output
