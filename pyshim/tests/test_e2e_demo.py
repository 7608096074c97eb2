"""The connector against a real OrbStack: runs only where orbctl is the real one (macOS).

Everywhere else (Linux, or where `orbctl version` says it is our simulator) every test
here skips with the reason. The GitHub workflow `orbstack-macos.yml` runs this module
on a macOS runner when OrbStack can start there.

It creates one throwaway machine, deploys to it with the real pyinfra CLI, and
deletes it by name at the end, whatever happened.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from conftest import REPO, run_pyinfra

ORBSTACK_LOCATIONS = [
    "/usr/local/bin/orbctl",
    "/opt/homebrew/bin/orbctl",
    str(Path.home() / ".orbstack" / "bin" / "orbctl"),
    "/Applications/OrbStack.app/Contents/MacOS/bin/orbctl",
]


def _real_orbctl() -> tuple[str | None, str]:
    """The real orbctl's path, or None and why these tests cannot run here."""
    if platform.system() != "Darwin":
        return None, f"OrbStack runs only on macOS (this is {platform.system()})"
    candidates = [shutil.which("orbctl"), *ORBSTACK_LOCATIONS]
    orbctl = next((c for c in candidates if c and os.access(c, os.X_OK)), None)
    if orbctl is None:
        return None, "no orbctl on PATH or in OrbStack's install locations"
    version = subprocess.run([orbctl, "version"], capture_output=True, text=True, timeout=60)
    if "(orbsim)" in version.stdout:
        return None, f"{orbctl} is the simulator, not OrbStack"
    status = subprocess.run([orbctl, "status"], capture_output=True, text=True, timeout=60)
    if status.stdout.strip() != "Running":
        return None, f"OrbStack is not running (orbctl status: {status.stdout.strip() or status.returncode})"
    return orbctl, ""


@pytest.fixture(scope="module")
def real_machine(tmp_path_factory):
    """A fresh debian machine on the real OrbStack, deleted by name afterwards."""
    orbctl, why = _real_orbctl()
    if orbctl is None:
        pytest.skip(why)
    name = f"pyinfra-orbstack-test-{uuid.uuid4().hex[:8]}"
    env = dict(os.environ, PYINFRA_ORBSTACK_ORBCTL=orbctl)
    created = subprocess.run([orbctl, "create", "debian", name], capture_output=True, text=True, timeout=600)
    assert created.returncode == 0, f"orbctl create failed: {created.stderr}"
    try:
        yield name, env, orbctl
    finally:
        subprocess.run([orbctl, "delete", "-f", name], capture_output=True, timeout=300)


def test_exec_runs_in_the_real_machine(real_machine):
    name, env, _ = real_machine
    result = run_pyinfra(env, f"@orbstack/{name}", "exec", "--", "uname", "-n")
    assert result.returncode == 0, result.stderr
    assert f"[@orbstack/{name}] {name}" in result.stdout + result.stderr


def test_demo_deploy_converges_on_the_real_machine(real_machine):
    name, env, _ = real_machine
    demo = REPO / "testdata" / "demo"
    first = run_pyinfra(env, "-y", f"@orbstack/{name}", "deploy.py", cwd=demo, timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr
    second = run_pyinfra(env, "-y", f"@orbstack/{name}", "deploy.py", cwd=demo, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    total = next(line for line in (second.stdout + second.stderr).splitlines() if "Grand total" in line)
    # Only the demo's server.shell operation reports a change on a second run.
    assert total.split()[3] == "1", total


def test_a_put_file_comes_back_byte_exact(real_machine, tmp_path):
    name, env, _ = real_machine
    payload = os.urandom(8 << 20)
    (tmp_path / "blob.bin").write_bytes(payload)
    (tmp_path / "roundtrip.py").write_text(
        "from pyinfra.operations import files\n"
        "files.put(src='blob.bin', dest='/tmp/blob.bin')\n"
        "files.get(src='/tmp/blob.bin', dest='back.bin')\n"
    )
    result = run_pyinfra(env, "-y", f"@orbstack/{name}", "roundtrip.py", cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert hashlib.sha256((tmp_path / "back.bin").read_bytes()).hexdigest() == hashlib.sha256(payload).hexdigest()
