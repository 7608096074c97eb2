"""Escalated files.put/files.get through the real CLI with the escalations a user types:
a sudo password (askpass), sudo's password prompt and pyinfra's retry, su to another
user. One request to the binary each (docs/protocol.md, "Escalated transfers"); the
escalation is pyinfra's own, so the password is masked and never on the Mac's argv."""

from __future__ import annotations

import pytest

from conftest import run_pyinfra

PASSWORD = "Pa55-word"


@pytest.fixture(scope="module")
def machines(orb):
    return orb


@pytest.fixture(scope="module")
def machine(machines):
    name = machines.machine("deploy")
    in_machine(machines, name,
               "id pwuser >/dev/null 2>&1 || useradd -m -s /bin/sh pwuser; echo 'pwuser:Pa55-word' | chpasswd; "
               "echo 'pwuser ALL=(ALL) ALL' > /etc/sudoers.d/pwuser; chmod 0440 /etc/sudoers.d/pwuser")
    return name


def in_machine(machines, machine: str, command: str) -> str:
    return machines.orbctl("run", "-m", machine, "-u", "root", "sh", "-c", command).stdout


def deploy(machines, tmp_path, machine: str, body: str, *args: str, input: str | None = None):
    (tmp_path / "deploy.py").write_text("from io import StringIO\nfrom pyinfra.operations import files\n" + body)
    result = run_pyinfra(machines.env, "-y", *args, "--data", "orbstack_user=pwuser", f"@orbstack/{machine}",
                         "deploy.py", cwd=tmp_path, input=input)
    return result, result.stdout + result.stderr


def test_sudo_password_put_and_get_use_the_askpass_and_mask_it(machines, tmp_path, machine):
    in_machine(machines, machine, "rm -f /etc/t-pw; printf 'root only' > /root/t-pw-secret; chmod 600 /root/t-pw-secret")
    result, output = deploy(machines, tmp_path, machine,
                            f"files.put(src=StringIO('by pwuser\\n'), dest='/etc/t-pw', _sudo=True, _sudo_password={PASSWORD!r})\n"
                            f"files.get(src='/root/t-pw-secret', dest='got', _sudo=True, _sudo_password={PASSWORD!r})\n",
                            "-vv", "--debug")
    assert result.returncode == 0, output
    assert in_machine(machines, machine, "cat /etc/t-pw; stat -c %U /etc/t-pw") == "by pwuser\nroot\n"
    assert (tmp_path / "got").read_text() == "root only"
    assert "SUDO_ASKPASS=" in output and "/run'" in output  # -vv shows the escalated command (masked)
    assert PASSWORD not in output
    assert in_machine(machines, machine, "ls -d /tmp/pyinfra-orbstack-* /tmp/pyinfra-sudo-askpass-* 2>/dev/null; true") == ""


def test_sudo_asking_for_a_password_is_prompted_and_the_put_retried(machines, tmp_path, machine):
    in_machine(machines, machine, "rm -f /etc/t-pw-prompt")
    result, output = deploy(machines, tmp_path, machine,
                            "files.put(src=StringIO('retried\\n'), dest='/etc/t-pw-prompt', _sudo=True)\n",
                            "--use-sudo-password", input=PASSWORD + "\n")
    assert result.returncode == 0, output
    assert "sudo password:" in output
    assert PASSWORD not in output
    assert in_machine(machines, machine, "cat /etc/t-pw-prompt; stat -c %U /etc/t-pw-prompt") == "retried\nroot\n"
    assert in_machine(machines, machine, "ls -d /tmp/pyinfra-orbstack-* 2>/dev/null; true") == ""

