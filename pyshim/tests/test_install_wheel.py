"""A user's install: the platform wheel in a fresh venv, with no Go and no checkout on PATH.

Builds this machine's wheel with pyshim/mkwheel.py around bin/pyinfra-orbstack
(`make build`), `pip install`s it (dependencies from PyPI) into a new venv, then runs
what a user runs: the `pyinfra-orbstack` console script, and `pyinfra @orbstack/NAME
exec` against a machine of the target (conftest), with the newest pyinfra and with the
oldest that pyproject.toml allows. Skips, saying why, where no target can run.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.version import Version

from conftest import BIN, REPO, TESTS

MKWHEEL = REPO / "pyshim" / "mkwheel.py"
PYPROJECT = REPO / "pyshim" / "pyproject.toml"
GO_TARGETS = {("Linux", "x86_64"): "linux_amd64", ("Linux", "aarch64"): "linux_arm64",
              ("Darwin", "arm64"): "darwin_arm64", ("Darwin", "x86_64"): "darwin_amd64"}


def _binary_version(binary: Path) -> str:
    """The version `make build` stamped into the binary (from .ci/version at build time).

    The wheel is built with the same value, as `make wheel` does; reading it back from
    the binary keeps the test right when a commit lands between build and test.
    """
    out = subprocess.run([str(binary), "version"], capture_output=True, text=True, timeout=30)
    m = re.match(r"pyinfra-orbstack (\S+) \(protocol \d+\)", out.stdout)
    assert m, f"`{binary} version` printed {out.stdout!r} {out.stderr!r}"
    return m[1]


def _user_path() -> str:
    """PATH without Go, without the checkout's bin/ and without the dev venv."""
    keep = []
    for entry in os.environ.get("PATH", "").split(os.pathsep):
        if not entry or Path(entry).resolve() in (BIN.resolve(), Path(sys.executable).parent.resolve()):
            continue
        if (Path(entry) / "go").exists():
            continue
        keep.append(entry)
    return os.pathsep.join(keep)


def oldest_pyinfra() -> str:
    """The lowest pyinfra that pyproject.toml's dependency admits."""
    m = re.search(r'"pyinfra>=([0-9.]+),', PYPROJECT.read_text())
    assert m, "pyproject.toml names no lower bound for pyinfra"
    return m[1]


def target_env(env: dict[str, str], orb) -> dict[str, str]:
    """env, with the target's orbctl (and, for the simulator, its state directory)."""
    return dict(env, PYINFRA_ORBSTACK_ORBCTL=orb.orbctl_path, **simulator_state(orb))


def simulator_state(orb) -> dict[str, str]:
    """For the simulator, its state directory; nothing for OrbStack."""
    return {k: v for k, v in orb.env.items() if k.startswith("ORBSIM_")}


@pytest.fixture(scope="module")
def installed(real_binary, tmp_path_factory):
    """A fresh venv with this machine's wheel installed; returns (venv bin dir, env, version)."""
    return install_wheel(real_binary, tmp_path_factory.mktemp("install"))


@pytest.fixture(scope="module")
def installed_with_oldest_pyinfra(real_binary, tmp_path_factory):
    return install_wheel(real_binary, tmp_path_factory.mktemp("install-oldest"), f"pyinfra=={oldest_pyinfra()}")


def install_wheel(real_binary: Path, work: Path, *requirements: str):
    target = GO_TARGETS.get((platform.system(), platform.machine()))
    if target is None:
        pytest.skip(f"no wheel for {platform.system()}/{platform.machine()}")
    version = _binary_version(real_binary)
    assert re.fullmatch(r"\d+\.\d+\.\d+(-[0-9A-Za-z.]+)?", version), f"{version!r} is not what .ci/version prints"
    build = subprocess.run(
        [sys.executable, str(MKWHEEL), "--version", version, "--out", str(work / "dist"),
         "--binary", f"{target}={real_binary}"],
        capture_output=True, text=True,
    )
    assert build.returncode == 0, f"mkwheel failed: {build.stderr}"
    wheel = Path(build.stdout.split()[0])  # manylinux before musllinux: what pip on glibc picks

    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYINFRA_ORBSTACK_", "GO", "VIRTUAL_ENV", "PYTHON"))}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{_user_path()}"
    assert shutil.which("go", path=env["PATH"]) is None, "go is still on the test's PATH"
    pip = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel),
         *requirements],
        env=env, capture_output=True, text=True, timeout=600, cwd=work,
    )
    assert pip.returncode == 0, f"pip install {wheel.name} failed:\n{pip.stdout}\n{pip.stderr}"
    return venv / "bin", env, version


def run(venv_bin: Path, env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    cmd = [str(venv_bin / args[0]), *args[1:]]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=venv_bin.parent)


def test_installed_binary_is_the_bundled_one_and_executable(installed):
    venv_bin, env, _ = installed
    result = run(venv_bin, env, "python", "-c",
                 "import pyinfra_orbstack._binary as b, os; p = b.find_binary(); print(p); print(oct(os.stat(p).st_mode & 0o777))")
    assert result.returncode == 0, result.stderr
    path, mode = result.stdout.split()
    assert Path(path).is_relative_to(venv_bin.parent), f"the shim runs {path}, not the binary inside the installed package"
    assert path.endswith("pyinfra_orbstack/bin/pyinfra-orbstack")
    assert mode == "0o755"


def test_console_script_reports_the_same_version_as_the_shim(installed):
    venv_bin, env, version = installed

    binary = run(venv_bin, env, "pyinfra-orbstack", "version")
    shim = run(venv_bin, env, "python", "-c", "import pyinfra_orbstack; print(pyinfra_orbstack.__version__)")

    assert binary.returncode == 0, binary.stderr
    assert shim.returncode == 0, shim.stderr
    m = re.match(r"pyinfra-orbstack (\S+) \(protocol (\d+)\)", binary.stdout)
    assert m, f"unexpected `pyinfra-orbstack version` output: {binary.stdout!r}"
    assert m[1] == version
    # The binary speaks semver (1.2.4-dev.4), the wheel PEP 440 (1.2.4.dev4): the same version.
    assert Version(m[1]) == Version(shim.stdout.strip())
    assert shim.stdout.strip() == str(Version(version))
    dist = run(venv_bin, env, "python", "-c", "import importlib.metadata as m; print(m.version('pyinfra-orbstack'))")
    assert dist.stdout.strip() == shim.stdout.strip(), "pip's idea of the version is the shim's"


@pytest.mark.parametrize("pyinfra", ["newest", "oldest"])
def test_pyinfra_exec_runs_in_a_machine(request, orb, pyinfra):
    venv_bin, env, _ = request.getfixturevalue("installed" if pyinfra == "newest" else "installed_with_oldest_pyinfra")
    name = orb.machine("install")
    env = target_env(env, orb)
    if pyinfra == "oldest":
        shown = run(venv_bin, env, "python", "-c", "import importlib.metadata as m; print(m.version('pyinfra'))")
        assert Version(shown.stdout.strip()) == Version(oldest_pyinfra())

    result = run(venv_bin, env, "pyinfra", f"@orbstack/{name}", "exec", "--", "uname", "-a", timeout=300)

    assert result.returncode == 0, f"pyinfra exec failed:\n{result.stdout}\n{result.stderr}"
    # uname -a inside the machine: its kernel name and its hostname, the machine's name.
    output = result.stdout + result.stderr  # pyinfra logs command output to stderr
    assert f"[@orbstack/{name}] Linux {name} " in output, output


def test_installed_shim_refuses_a_binary_of_another_protocol(installed, tmp_path):
    venv_bin, env, _ = installed
    # The real binary always speaks its own protocol; a stand-in speaks version 1.
    fake = tmp_path / "pyinfra-orbstack-v1"
    fake.write_text(f'#!/bin/sh\nexec {sys.executable} {TESTS / "fake_binary.py"} "$@"\n')
    fake.chmod(0o755)
    env = dict(env, PYINFRA_ORBSTACK_BINARY=str(fake), FAKE_MODE="ok", FAKE_PROTOCOL_VERSION="1")

    result = run(venv_bin, env, "pyinfra", "@orbstack/fake", "exec", "--", "true")

    assert result.returncode != 0
    assert "protocol version 1" in result.stdout + result.stderr, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_installed_wheel_gives_the_cli_its_orbstack_fact_names(installed, orb, tmp_path):
    """`pyinfra @local fact orbstack.X` imports a top-level `orbstack` module: the wheel must ship it."""
    venv_bin, env, _ = installed
    orbctl_dir = tmp_path / "orbctl-only"
    orbctl_dir.mkdir()
    (orbctl_dir / "orbctl").symlink_to(orb.orbctl_path)  # orbctl alone, not the checkout's bin/
    env = dict(env, PATH=f"{orbctl_dir}{os.pathsep}{env['PATH']}", **simulator_state(orb))

    result = run(venv_bin, env, "pyinfra", "@local", "fact", "orbstack.Status")

    assert result.returncode == 0, f"pyinfra fact failed:\n{result.stdout}\n{result.stderr}"
    assert '"Running"' in result.stdout + result.stderr, result.stdout + result.stderr
