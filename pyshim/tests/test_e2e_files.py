"""files.put / files.get edge cases through the real CLI: replacing existing files,
failures, and the staging the connector does for sudo/su."""

from __future__ import annotations

import os
import re
import stat
import subprocess

import pytest

from conftest import run_pyinfra


@pytest.fixture(scope="module")
def machine(orb):
    return orb.machine("files")


def in_machine(orb, machine: str, command: str, user: str = "root") -> str:
    return orb.orbctl("run", "-m", machine, "-u", user, "sh", "-c", command).stdout


def deploy(orb, tmp_path, machine: str, body: str):
    (tmp_path / "deploy.py").write_text("from io import BytesIO, StringIO\nfrom pyinfra.operations import files\n" + body)
    result = run_pyinfra(orb.env, "-y", f"@orbstack/{machine}", "deploy.py", cwd=tmp_path)
    return result, result.stdout + result.stderr


def no_staging_left(orb, machine: str) -> bool:
    return in_machine(orb, machine, "ls -d /tmp/pyinfra-orbstack-* 2>/dev/null || true") == ""


def test_sudo_put_over_an_existing_file_keeps_its_mode_and_owner(orb, tmp_path, machine):
    in_machine(orb, machine, "printf old > /etc/t-keep && chown root:adm /etc/t-keep && chmod 640 /etc/t-keep")
    result, output = deploy(orb, tmp_path, machine,
                            "files.put(src=BytesIO(b'new\\x00bytes'), dest='/etc/t-keep', _sudo=True)\n")
    assert result.returncode == 0, output
    assert in_machine(orb, machine, "od -c /etc/t-keep | head -1").split()[1:] == list("new") + ["\\0"] + list("bytes")
    assert in_machine(orb, machine, "stat -c '%a %U %G' /etc/t-keep") == "640 root adm\n"
    assert in_machine(orb, machine, "ls -a /etc | grep -c pyinfra || true") == "0\n"  # no temp file left
    assert no_staging_left(orb, machine)


@pytest.mark.parametrize("sudo", [False, True])
def test_put_and_get_of_a_path_with_spaces_quotes_and_unicode(orb, tmp_path, machine, sudo):
    name = "/tmp/t dir ✓/it's \"q\" $HOME.txt"
    result, output = deploy(orb, tmp_path, machine,
                            f"files.put(src=StringIO('ü\\n'), dest={name!r}, _sudo={sudo})\n"
                            f"files.get(src={name!r}, dest='got ✓', _sudo={sudo})\n")
    assert result.returncode == 0, output
    assert (tmp_path / "got ✓").read_text() == "ü\n"
    owner = "root" if sudo else "dev"
    assert in_machine(orb, machine, "stat -c %U \"/tmp/t dir ✓/it's \\\"q\\\" \\$HOME.txt\"") == f"{owner}\n"
    assert no_staging_left(orb, machine)
    in_machine(orb, machine, "rm -rf '/tmp/t dir ✓'")


def test_plain_put_over_an_existing_file_keeps_its_mode(orb, tmp_path, machine):
    in_machine(orb, machine, "printf old > ~/keep && chmod 600 ~/keep", user="dev")
    result, output = deploy(orb, tmp_path, machine, "files.put(src=StringIO('new'), dest='/home/dev/keep')\n")
    assert result.returncode == 0, output
    assert in_machine(orb, machine, "cat /home/dev/keep; stat -c ' %a %U' /home/dev/keep") == "new 600 dev\n"


def test_put_without_permission_fails_with_the_remote_error(orb, tmp_path, machine):
    result, output = deploy(orb, tmp_path, machine, "files.put(src=StringIO('x'), dest='/etc/t-denied')\n")
    assert result.returncode != 0
    assert "Permission denied" in output
    assert "Traceback" not in output
    assert in_machine(orb, machine, "test -e /etc/t-denied && echo there || echo absent") == "absent\n"


def test_sudo_put_into_a_missing_directory_fails_and_cleans_up(orb, tmp_path, machine):
    result, output = deploy(orb, tmp_path, machine,
                            "files.put(src=StringIO('x'), dest='/no/such/dir/file', create_remote_dir=False, _sudo=True)\n")
    assert result.returncode != 0
    assert re.search(r"/no/such/dir/.*(Directory nonexistent|No such file or directory)", output), output
    # The error names the destination the user asked for, not a temp file.
    assert f"writing /no/such/dir/file on {machine} failed: " in output, output
    assert "Traceback" not in output
    assert no_staging_left(orb, machine)


@pytest.mark.parametrize("sudo", [False, True])
def test_get_of_a_missing_file_fails_with_the_remote_error(orb, tmp_path, machine, sudo):
    result, output = deploy(orb, tmp_path, machine,
                            f"files.get(src='/etc/no-such-file', dest='got', _sudo={sudo})\n")
    assert result.returncode != 0
    assert f"reading /etc/no-such-file on {machine} failed: cat: /etc/no-such-file: No such file or directory" \
        in output, output
    assert "Traceback" not in output
    assert not (tmp_path / "got").exists()


def test_get_gives_local_files_the_mode_open_would(orb, tmp_path, machine):
    # @ssh and @local write into open(dest, "wb"): a new file gets 0666 less the
    # umask, an existing one keeps its mode.
    in_machine(orb, machine, "printf new > /tmp/t-get-a; printf new > /tmp/t-get-b")
    (tmp_path / "existing").write_text("old")
    (tmp_path / "existing").chmod(0o640)
    old_umask = os.umask(0o022)  # the pyinfra child inherits it
    try:
        result, output = deploy(orb, tmp_path, machine,
                                "files.get(src='/tmp/t-get-a', dest='new')\n"
                                "files.get(src='/tmp/t-get-b', dest='existing')\n")
    finally:
        os.umask(old_umask)
    assert result.returncode == 0, output
    assert (tmp_path / "new").read_text() == (tmp_path / "existing").read_text() == "new"
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "existing").stat().st_mode) == 0o640


def test_rsync_says_it_is_not_supported_and_what_to_use(orb, tmp_path, machine):
    (tmp_path / "src").mkdir()
    # Without -y the operation is prepared first, where pyinfra reports its error cleanly.
    (tmp_path / "deploy.py").write_text("from pyinfra.operations import files\n"
                                        "files.rsync(src='src/', dest='/tmp/t-rsync')\n")
    result = run_pyinfra(orb.env, f"@orbstack/{machine}", "deploy.py", cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "The @orbstack connector does not support files.rsync" in output, output
    assert "Use files.sync instead" in output


def test_su_get_of_a_file_only_that_user_can_read(orb, tmp_path, machine):
    in_machine(orb, machine, "id alice >/dev/null 2>&1 || useradd -m alice; "
                             "printf 'for alice' > /home/alice/private && chown alice /home/alice/private "
                             "&& chmod 600 /home/alice/private && chmod 700 /home/alice")
    result, output = deploy(orb, tmp_path, machine,
                            "files.get(src='/home/alice/private', dest='got', _sudo=True, _sudo_user='alice')\n")
    assert result.returncode == 0, output
    assert (tmp_path / "got").read_text() == "for alice"
    assert no_staging_left(orb, machine)


def test_sudo_put_and_get_stage_under_temp_dir(orb, tmp_path, machine):
    # `_temp_dir` says where temp files may go (e.g. when /tmp is small or noexec).
    in_machine(orb, machine, "mkdir -p /var/tmp/t-stage && chmod 1777 /var/tmp/t-stage")
    (tmp_path / "deploy.py").write_text(
        "from io import StringIO\nfrom pyinfra.operations import files\n"
        "files.put(src=StringIO('staged'), dest='/root/t-staged', _sudo=True, _temp_dir='/var/tmp/t-stage')\n"
        "files.get(src='/root/t-staged', dest='got', _sudo=True, _temp_dir='/var/tmp/t-stage')\n"
    )
    result = run_pyinfra(orb.env, "-y", "-vv", f"@orbstack/{machine}", "deploy.py", cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert (tmp_path / "got").read_text() == "staged"
    # -vv shows each transfer's escalated command, naming its stage directory.
    assert output.count("/var/tmp/t-stage/pyinfra-orbstack-") == 2, output
    assert "/tmp/pyinfra-orbstack-" not in output
    assert in_machine(orb, machine, "ls -A /var/tmp/t-stage") == ""


@pytest.mark.parametrize("sudo", [False, True])
def test_put_to_a_read_only_file_system_fails_and_leaves_it_alone(orb, tmp_path, machine, sudo):
    in_machine(orb, machine, "mountpoint -q /t-ro || { mkdir -p /t-ro && printf old > /t-ro/f && "
                             "chown dev /t-ro /t-ro/f && mount -o bind,ro /t-ro /t-ro; }")
    result, output = deploy(orb, tmp_path, machine, f"files.put(src=StringIO('new'), dest='/t-ro/f', _sudo={sudo})\n")
    assert result.returncode != 0
    assert f"writing /t-ro/f on {machine} failed: " in output, output
    assert "Read-only file system" in output
    assert "Traceback" not in output
    assert in_machine(orb, machine, "cat /t-ro/f") == "old"
    assert no_staging_left(orb, machine)


def test_sync_uploads_a_tree_and_then_changes_nothing(orb, tmp_path, machine):
    (tmp_path / "tree/sub").mkdir(parents=True)
    (tmp_path / "tree/a.txt").write_text("a\n")
    (tmp_path / "tree/sub/b.bin").write_bytes(b"\x00\xffb")
    body = "files.sync(src='tree', dest='/opt/t-synced', user='dev', _sudo=True)\n"
    first, output = deploy(orb, tmp_path, machine, body)
    assert first.returncode == 0, output
    assert in_machine(orb, machine, "cd /opt/t-synced && find . -type f | sort | xargs sha256sum") == \
        subprocess.run("find . -type f | sort | xargs sha256sum", shell=True, cwd=tmp_path / "tree",
                       capture_output=True, text=True).stdout
    assert in_machine(orb, machine, "stat -c %U /opt/t-synced/sub/b.bin") == "dev\n"
    second, output = deploy(orb, tmp_path, machine, body)
    assert second.returncode == 0, output
    assert "No changes" in output and "Success" not in output.split("--> Results")[0], output
