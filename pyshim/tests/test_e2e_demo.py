"""The demo deploy and a file round trip, on a machine of the target (the simulator, or a
real OrbStack: see conftest), with the real pyinfra CLI.

What a user does first: `pyinfra @orbstack/NAME exec`, then testdata/demo/deploy.py twice
(the second run changes nothing), then a file up and back.
"""

from __future__ import annotations

import hashlib
import os

from conftest import REPO, run_pyinfra


def test_exec_runs_in_the_machine(orb):
    name = orb.machine("demo")
    result = run_pyinfra(orb.env, f"@orbstack/{name}", "exec", "--", "uname", "-n")
    assert result.returncode == 0, result.stderr
    assert f"[@orbstack/{name}] {name}" in result.stdout + result.stderr


def test_demo_deploy_converges(orb):
    name = orb.machine("demo")
    demo = REPO / "testdata" / "demo"
    first = run_pyinfra(orb.env, "-y", f"@orbstack/{name}", "deploy.py", cwd=demo, timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr
    second = run_pyinfra(orb.env, "-y", f"@orbstack/{name}", "deploy.py", cwd=demo, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    total = next(line for line in (second.stdout + second.stderr).splitlines() if "Grand total" in line)
    # Nothing changes on a second run (pyinfra prints "-" for no operation with changes).
    # Without inventory.py the host is in no `web` group: the nginx part is make demo's.
    assert total.split()[3] == "-", total


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
