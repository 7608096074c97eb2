"""One rule for relative remote paths (docs/connector.md, "Relative paths"): in
`orbstack_workdir` when it is set, else in the connector user's home, for commands,
files.put and files.get alike, with and without _sudo, _su_user and a login
escalation. Issue 15: plain transfers used to land in the home while commands ran in
the workdir, so `files.put(dest="x", mode=...)` uploaded to ~/x and then failed to
chmod `x`."""

from __future__ import annotations

import pytest

from conftest import run_pyinfra

WORKDIR = "/srv/relwd"

# Every relative path of the deploy: commands, plain/escalated puts and gets.
DEPLOY = '''
from io import StringIO
from pyinfra.operations import files, server

server.shell(name="command", commands=["echo command > c.txt"])
files.put(name="put", src=StringIO("plain\\n"), dest="p.txt")
files.put(name="put with mode", src=StringIO("moded\\n"), dest="m.txt", mode="640")
files.put(name="put sudo", src=StringIO("sudo\\n"), dest="s.txt", _sudo=True)
files.put(name="put su", src=StringIO("su\\n"), dest="u.txt", _sudo=True, _su_user="root")
files.put(name="put sudo login", src=StringIO("login\\n"), dest="l.txt", _sudo=True, _use_sudo_login=True)
files.get(name="get", src="c.txt", dest="got-c")
files.get(name="get sudo", src="s.txt", dest="got-s", _sudo=True)
files.get(name="get su", src="u.txt", dest="got-u", _sudo=True, _su_user="root")
files.get(name="get sudo login", src="p.txt", dest="got-l", _sudo=True, _use_sudo_login=True)
'''

NAMES = ("c.txt", "p.txt", "m.txt", "s.txt", "u.txt", "l.txt")


@pytest.fixture(scope="module")
def machine(orb):
    name = orb.machine("relpaths")
    in_machine(orb, name, f"mkdir -p {WORKDIR} && chmod 1777 {WORKDIR}")
    return name


def in_machine(orb, machine: str, command: str) -> str:
    return orb.orbctl("run", "-m", machine, "-u", "root", "sh", "-c", command).stdout


def where(orb, machine: str) -> dict[str, list[str]]:
    """Which of the deploy's files are in the workdir, dev's home and root's home."""
    found: dict[str, list[str]] = {}
    for place in (WORKDIR, "/home/dev", "/root"):
        listed = in_machine(orb, machine, f"cd {place} && ls -1 {' '.join(NAMES)} 2>/dev/null; true").split()
        found[place] = sorted(listed)
    return found


@pytest.mark.parametrize("workdir", [WORKDIR, ""], ids=["with-workdir", "without-workdir"])
def test_relative_paths_resolve_in_one_place(orb, tmp_path, machine, workdir):
    in_machine(orb, machine, f"cd {WORKDIR} && rm -f {' '.join(NAMES)}; cd /home/dev && rm -f {' '.join(NAMES)}; "
                             f"cd /root && rm -f {' '.join(NAMES)}")
    (tmp_path / "deploy.py").write_text(DEPLOY)
    args = ["--data", f"orbstack_workdir={workdir}"] if workdir else []
    result = run_pyinfra(orb.env, "-y", *args, f"@orbstack/{machine}", "deploy.py", cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output

    base = workdir or "/home/dev"
    found = where(orb, machine)
    assert found[base] == sorted(NAMES), (found, output)
    assert all(found[place] == [] for place in found if place != base), found
    assert in_machine(orb, machine, f"cd {base} && stat -c '%a %U' m.txt s.txt u.txt l.txt") == (
        "640 dev\n644 root\n644 root\n644 root\n")
    assert (tmp_path / "got-c").read_text() == "command\n"
    assert (tmp_path / "got-s").read_text() == "sudo\n"
    assert (tmp_path / "got-u").read_text() == "su\n"
    assert (tmp_path / "got-l").read_text() == "plain\n"


def test_a_missing_relative_path_is_named_as_resolved(orb, tmp_path, machine):
    (tmp_path / "deploy.py").write_text(
        "from pyinfra.operations import files\nfiles.get(src='no-such-file', dest='x')\n")
    result = run_pyinfra(orb.env, "-y", "--data", f"orbstack_workdir={WORKDIR}", f"@orbstack/{machine}",
                         "deploy.py", cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"{WORKDIR}/no-such-file" in output, output
    assert not (tmp_path / "x").exists()
