"""Fixtures: the real binary, the orbctl simulator with real machines, and a fake binary.

End-to-end tests run the real `pyinfra` CLI from the venv as a subprocess, against
`bin/pyinfra-orbstack` (`make build`) and the simulator `bin/orbctl`, with
ORBSIM_HOME a fresh temp dir per test session. They skip, saying why, when those
are not built or the simulator cannot create machines here (it needs root).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TESTS = Path(__file__).resolve().parent
BIN = REPO / "bin"
PYINFRA = Path(sys.executable).parent / "pyinfra"
DEFAULT_USER = "dev"


def _real_binary() -> Path | None:
    path = Path(os.environ.get("PYINFRA_ORBSTACK_BINARY") or BIN / "pyinfra-orbstack")
    return path if path.is_file() else None


@pytest.fixture(scope="session")
def real_binary() -> Path:
    path = _real_binary()
    if path is None:
        pytest.skip("bin/pyinfra-orbstack is not built (run `make build`)")
    return path


@pytest.fixture(scope="session")
def sim_env(real_binary, tmp_path_factory) -> dict[str, str]:
    """Environment for subprocesses: simulator first on PATH, its own state dir."""
    orbctl = BIN / "orbctl"
    if not orbctl.is_file():
        pytest.skip("bin/orbctl (the simulator) is not built (run `make build`)")
    env = dict(os.environ)
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
    env["ORBSIM_HOME"] = str(tmp_path_factory.mktemp("orbsim"))
    env["PYINFRA_ORBSTACK_BINARY"] = str(real_binary)
    env.pop("PYINFRA_ORBSTACK_ORBCTL", None)
    env["PYTHONUNBUFFERED"] = "1"
    yield env
    subprocess.run([str(orbctl), "stop", "-a"], env=env, capture_output=True, timeout=120)


class Simulator:
    """Creates simulator machines once per session, each one name per role."""

    def __init__(self, env: dict[str, str]):
        self.env = env
        self.created: dict[str, str] = {}

    def orbctl(self, *args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess:
        result = subprocess.run(
            ["orbctl", *args], env=self.env, capture_output=True, text=True, timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"orbctl {' '.join(args)} failed: {result.stderr}")
        return result

    def machine(self, role: str) -> str:
        """A running debian machine for this role, created on first use.

        Its default user is `dev` with passwordless sudo, as OrbStack makes it.
        """
        if role not in self.created:
            name = f"t-{role}-{uuid.uuid4().hex[:6]}"
            result = self.orbctl("create", "-u", DEFAULT_USER, "debian", name, check=False)
            if result.returncode != 0:
                # As root the simulator must work: a broken `create` fails the suite
                # instead of quietly skipping every end-to-end test.
                if os.geteuid() == 0:
                    raise AssertionError(f"orbctl create failed as root: {result.stderr.strip()}")
                pytest.skip(f"the simulator cannot create machines here: {result.stderr.strip()}")
            self.created[role] = name
        return self.created[role]


@pytest.fixture(scope="session")
def sim(sim_env) -> Simulator:
    return Simulator(sim_env)


def run_pyinfra(env: dict[str, str], *args: str, cwd: Path | None = None, timeout: float = 180,
                input: str | None = None) -> subprocess.CompletedProcess:
    """The real pyinfra CLI, as a user would run it.

    In its own session, without a terminal: a password prompt reads `input`
    (getpass falls back to stdin) instead of the terminal running the tests.
    """
    return subprocess.run(
        [str(PYINFRA), *args], env=env, cwd=cwd, capture_output=True, text=True,
        timeout=timeout, input=input if input is not None else "", start_new_session=True,
    )


@pytest.fixture()
def fake_binary(tmp_path, monkeypatch):
    """Point the shim at tests/fake_binary.py in a given FAKE_MODE; returns the env to use."""

    def make(mode: str = "ok", **extra: str) -> dict[str, str]:
        wrapper = tmp_path / f"fake-{mode}"
        wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} {TESTS / "fake_binary.py"} "$@"\n')
        wrapper.chmod(0o755)
        monkeypatch.setenv("PYINFRA_ORBSTACK_BINARY", str(wrapper))
        monkeypatch.setenv("FAKE_MODE", mode)
        for key, value in extra.items():
            monkeypatch.setenv(key, value)
        return dict(os.environ)

    return make
