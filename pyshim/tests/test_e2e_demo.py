"""What a user does first, on a machine of the target (the simulator, or a real
OrbStack: see conftest), with the real pyinfra CLI: `pyinfra @orbstack/NAME exec`, then a
file up and back. (The first deploy itself, examples/01-first-deploy, which `make demo`
runs, is tested twice over by test_examples.py.)
"""

from __future__ import annotations

import hashlib
import os

from conftest import run_pyinfra


def test_exec_runs_in_the_machine(orb):
    name = orb.machine("demo")
    result = run_pyinfra(orb.env, f"@orbstack/{name}", "exec", "--", "uname", "-n")
    assert result.returncode == 0, result.stderr
    assert f"[@orbstack/{name}] {name}" in result.stdout + result.stderr


def test_a_put_file_comes_back_byte_exact(orb, tmp_path):
    name = orb.machine("demo")
    payload = os.urandom(8 << 20)
    (tmp_path / "blob.bin").write_bytes(payload)
    (tmp_path / "roundtrip.py").write_text(
        "from pyinfra.operations import files\n"
        "files.put(src='blob.bin', dest='/tmp/blob.bin')\n"
        "files.get(src='/tmp/blob.bin', dest='back.bin')\n"
    )
    result = run_pyinfra(orb.env, "-y", f"@orbstack/{name}", "roundtrip.py", cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert hashlib.sha256((tmp_path / "back.bin").read_bytes()).hexdigest() == hashlib.sha256(payload).hexdigest()
