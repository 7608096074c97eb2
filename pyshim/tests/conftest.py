"""Fixtures: the real binary, machines on the orbctl under test, and a fake binary.

One end-to-end suite, two targets. End-to-end tests run the real `pyinfra` CLI from
the venv as a subprocess, against `bin/pyinfra-orbstack` (`make build`) and the
machines of one of:

- `simulator`: our orbctl simulator `bin/orbctl`, first on PATH, with ORBSIM_HOME a
  fresh temp dir per test session. Tests may turn its knobs (ORBSIM_*).
- `orbstack`: the orbctl that the binary itself would use (PYINFRA_ORBSTACK_ORBCTL,
  PATH, OrbStack's install locations; `pyinfra-orbstack doctor` says which), as a
  real OrbStack on a Mac. No ORBSIM_* variable reaches any process, and the
  simulator's helpers (`Simulator.with_knobs`) do not exist. The suite works only in
  machines it creates, all named `pyinfra-orbstack-test-<run>-...`, and deletes them
  at the end of the session: on success, failure, Ctrl-C or SIGTERM. It never stops
  OrbStack, never touches other machines and never changes global settings.

PYINFRA_ORBSTACK_TEST_TARGET picks one; unset (or `auto`), the suite runs against
OrbStack when the orbctl found is OrbStack's own, and the simulator otherwise.
Tests that need what only the simulator can do are marked
`@pytest.mark.simulator("why")` and skip, saying why, against OrbStack.
"""

from __future__ import annotations

import json
import os
import re
import signal
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
TARGET_VARIABLE = "PYINFRA_ORBSTACK_TEST_TARGET"
TARGETS = ("auto", "simulator", "orbstack")
NAME_PREFIX = "pyinfra-orbstack-test-"  # every machine the suite creates starts so


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "simulator(why): needs what only the orbctl simulator can do; skipped against OrbStack",
    )


_cleanup_report: list[str] = []


def pytest_terminal_summary(terminalreporter):
    for line in _cleanup_report:
        terminalreporter.write_line(line)


def pytest_runtest_setup(item):
    marker = item.get_closest_marker("simulator")
    if marker is not None and _target().kind != "simulator":
        why = marker.args[0] if marker.args else "simulator-only"
        pytest.skip(f"needs the orbctl simulator ({why}); the target is {_target().describe}")


def _real_binary() -> Path | None:
    path = Path(os.environ.get("PYINFRA_ORBSTACK_BINARY") or BIN / "pyinfra-orbstack")
    return path if path.is_file() else None


@pytest.fixture(scope="session")
def real_binary() -> Path:
    path = _real_binary()
    if path is None:
        pytest.skip("bin/pyinfra-orbstack is not built (run `make build`)")
    return path


def without_simulator_knobs(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if not k.startswith("ORBSIM_")}


class Target:
    """Which orbctl the end-to-end tests drive, found once per session."""

    def __init__(self, kind: str, orbctl: str | None, describe: str, unusable: str = ""):
        self.kind, self.orbctl, self.describe, self.unusable = kind, orbctl, describe, unusable


_found: list[Target] = []


def _target() -> Target:
    if not _found:
        _found.append(_find_target())
    return _found[0]


def _doctor(binary: Path, env: dict[str, str]) -> dict[str, str]:
    """`pyinfra-orbstack doctor`'s checks: name -> text (the binary's own orbctl lookup)."""
    out = subprocess.run([str(binary), "doctor"], env=env, capture_output=True, text=True, timeout=120).stdout
    return {m[2]: m[3] for m in re.finditer(r"^(ok|warn|FAIL)\s+(\S+)\s+(.*)$", out, re.M)}


def _find_target() -> Target:
    wanted = os.environ.get(TARGET_VARIABLE) or "auto"
    if wanted not in TARGETS:
        raise pytest.UsageError(f"{TARGET_VARIABLE}={wanted}: use one of {', '.join(TARGETS)}")
    simulator = Target("simulator", str(BIN / "orbctl"), "the orbctl simulator (bin/orbctl)")
    if wanted == "simulator":
        return simulator
    binary = _real_binary()
    if binary is None:
        return simulator if wanted == "auto" else Target("orbstack", None, "OrbStack", "bin/pyinfra-orbstack is not built")
    checks = _doctor(binary, without_simulator_knobs(dict(os.environ)))
    found = re.match(r"(.*) \(from [^)]*\)$", checks.get("orbctl", ""))
    if wanted == "auto" and (found is None or "orbctl simulator" in checks.get("version", "")):
        return simulator
    if found is None:
        return Target("orbstack", None, "OrbStack", f"no orbctl: {checks.get('orbctl', 'doctor said nothing')}")
    orbctl = found[1]
    status = subprocess.run([orbctl, "status"], capture_output=True, text=True, timeout=60,
                            env=without_simulator_knobs(dict(os.environ)))
    unusable = "" if status.stdout.strip() == "Running" else (
        f"OrbStack is not running (orbctl status: {status.stdout.strip() or status.returncode}): start it")
    return Target("orbstack", orbctl, f"OrbStack ({orbctl})", unusable)


class Machines:
    """Throwaway machines on the target, each named <prefix><role>; deleted by delete_ours."""

    kind = "orbstack"

    def __init__(self, env: dict[str, str], orbctl: str, prefix: str):
        self.env = env
        self.orbctl_path = orbctl
        self.prefix = prefix
        self.created: dict[str, str] = {}
        self.deleted: list[str] = []

    def orbctl(self, *args: str, check: bool = True, timeout: float = 180,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [self.orbctl_path, *args], env=env or self.env, capture_output=True, text=True, timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"orbctl {' '.join(args)} failed: {result.stderr}")
        return result

    def new_name(self, role: str) -> str:
        """A machine name of this session: the end of the session deletes such machines."""
        return f"{self.prefix}{role}"

    def create(self, role: str) -> str:
        """A new running debian machine whose default user is `dev` with passwordless sudo,
        as OrbStack makes it."""
        name = self.new_name(role)
        result = self.orbctl("create", "-u", DEFAULT_USER, "debian", name, check=False, timeout=600)
        if result.returncode != 0:
            # As root the simulator must work, and a real OrbStack always should: a broken
            # `create` fails the suite instead of quietly skipping every end-to-end test.
            if os.geteuid() == 0 or not isinstance(self, Simulator):
                raise AssertionError(f"orbctl create failed: {result.stderr.strip()}")
            pytest.skip(f"the simulator cannot create machines here: {result.stderr.strip()}")
        return name

    def machine(self, role: str) -> str:
        """The running debian machine for this role, created on first use."""
        if role not in self.created:
            self.created[role] = self.create(role)
        return self.created[role]

    def delete_ours(self, prefix: str | None = None) -> list[str]:
        """Deletes this session's machines (by name: OrbStack 2.2.3 crashes deleting by ID)."""
        listed = self.orbctl("list", "-q", check=False, timeout=120).stdout.split()
        ours = [m for m in listed if m.startswith(prefix or self.prefix)]
        if ours:
            self.orbctl("delete", "-f", *ours, check=False, timeout=600)
            self.deleted.extend(ours)
        for role, name in list(self.created.items()):
            if name in ours:
                del self.created[role]
        return ours


class Simulator(Machines):
    """Machines of the orbctl simulator, in this session's own ORBSIM_HOME."""

    kind = "simulator"

    def with_knobs(self, **knobs: str) -> dict[str, str]:
        """This session's environment with simulator knobs (ORBSIM_*) set."""
        assert all(k.startswith("ORBSIM_") for k in knobs), knobs
        return dict(self.env, **knobs)


def _session_prefix() -> str:
    return f"{NAME_PREFIX}{uuid.uuid4().hex[:6]}-"


@pytest.fixture(scope="session")
def orb(real_binary, tmp_path_factory):
    """The target's machines for this session, with the environment to run pyinfra in."""
    target = _target()
    env = dict(os.environ)
    env["PYINFRA_ORBSTACK_BINARY"] = str(real_binary)
    env["PYTHONUNBUFFERED"] = "1"
    if target.kind == "simulator":
        if not (BIN / "orbctl").is_file():
            pytest.skip("bin/orbctl (the simulator) is not built (run `make build`)")
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
        env["ORBSIM_HOME"] = str(tmp_path_factory.mktemp("orbsim"))
        env.pop("PYINFRA_ORBSTACK_ORBCTL", None)
        machines: Machines = Simulator(env, str(BIN / "orbctl"), _session_prefix())
    else:
        if target.unusable:
            pytest.skip(f"cannot run against OrbStack: {target.unusable}")
        env = without_simulator_knobs(env)
        machines = Machines(env, target.orbctl, _session_prefix())
    # SIGTERM and SIGHUP (a CI timeout, a closed terminal) end the session as Ctrl-C
    # does, so the machines are deleted below.
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield machines
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        machines.delete_ours()
        left = [m for m in machines.orbctl("list", "-q", check=False).stdout.split() if m.startswith(machines.prefix)]
        # pytest_terminal_summary shows it: the user sees what the suite did to their OrbStack.
        _cleanup_report.append(f"{target.describe}: deleted the {len(machines.deleted)} machines this session made "
                               f"({machines.prefix}*)" + (f"; could not delete {left}" if left else ""))
        if isinstance(machines, Simulator):
            machines.orbctl("stop", "-a", check=False, timeout=120)


@pytest.fixture(scope="session")
def remote_macs(orb, real_binary, tmp_path_factory):
    """Remote Macs for issue 13 (pyshim/tests/remote_macs.py), at least two, in order:
    `remote_macs.list`, or by alias `remote_macs["mac-a"]`.

    Simulator: two fake Macs, `mac-a` and `mac-b` (each an sshd on 127.0.0.1 with its
    own ORBSIM_HOME), more with `remote_macs.start(alias, binary=...)`; at the end every
    machine of each is deleted and the sshds are stopped. OrbStack: the real Macs named
    by PYINFRA_ORBSTACK_TEST_REMOTE_MACS (ssh aliases), skipping without it; at the
    end only this session's machines (named `orb.prefix...`: `remote_macs.new_name`)
    are deleted from them. `remote_macs.env` sets PYINFRA_ORBSTACK_SSH_CONFIG to
    the ssh config that names them (fake Macs; for real ones, as the user set it).
    """
    import remote_macs as harness

    if _target().kind == "simulator":
        if os.geteuid() != 0 or not Path(harness.SSHD).is_file():
            pytest.skip(f"fake Macs need root and {harness.SSHD} (apt-get install openssh-server; .ci/deps)")
        macs: harness.FakeMacs | harness.RealMacs = harness.FakeMacs(
            BIN, orb.prefix, tmp_path_factory.mktemp("remote-macs"))
        try:
            for alias in ("mac-a", "mac-b"):
                macs.start(alias)
        except BaseException:
            macs.stop()
            raise
    else:
        aliases = os.environ.get(harness.REAL_MACS_VARIABLE, "").split()
        if len(aliases) < 2:
            pytest.skip(f"set {harness.REAL_MACS_VARIABLE}='ALIAS1 ALIAS2' (ssh aliases of two Macs with OrbStack "
                        "and pyinfra-orbstack on the PATH of non-interactive shells) to test remote Macs")
        macs = harness.RealMacs(aliases, orb.prefix)
    macs.env["PYINFRA_ORBSTACK_BINARY"] = str(real_binary)  # @local, as the orb fixture's env
    macs.env["PYTHONUNBUFFERED"] = "1"
    try:
        yield macs
    finally:
        macs.stop()


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


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


def _pyinfra_version() -> tuple[int, ...]:
    out = subprocess.run([sys.executable, "-c", "import importlib.metadata as m; print(m.version('pyinfra'))"],
                         capture_output=True, text=True, timeout=60).stdout
    return tuple(int(p) for p in re.findall(r"\d+", out)[:3])


# `pyinfra --json` arrived in pyinfra 3.9; older ones print the same facts and results as text.
PYINFRA_HAS_JSON = _pyinfra_version() >= (3, 9)


def pyinfra_results(env: dict[str, str], *args: str, cwd: Path | None = None, timeout: float = 300):
    """(what `pyinfra --json ARGS` prints, parsed; the CompletedProcess).

    Before pyinfra 3.9 the same is read from its text output: each fact's JSON after
    `--> Fact data for: NAME`, and for operations the results table (success: one
    entry per host that changed).
    """
    if PYINFRA_HAS_JSON:
        result = run_pyinfra(env, "--json", *args, cwd=cwd, timeout=timeout)
        return (json.loads(result.stdout) if result.returncode == 0 and result.stdout.strip() else {}), result
    result = run_pyinfra(env, *args, cwd=cwd, timeout=timeout)
    text = result.stdout + result.stderr
    if "--> Fact data for: " in text:
        facts, decoder = {}, json.JSONDecoder()
        for m in re.finditer(r"^--> Fact data for: (.*)$", text, re.M):
            facts[m[1]] = decoder.raw_decode(text, text.index("{", m.end()))[0]
        return facts, result
    operations, in_table = [], False
    for line in text.splitlines():
        if "--> Results:" in line:
            in_table = True
        elif in_table and line.strip().startswith("-->"):
            break
        elif in_table and len(cells := line.split()) >= 5 and cells[0] != "Operation":
            name, success = " ".join(cells[:-4]), cells[-3]
            if name != "Grand total":
                operations.append({"name": name, "success": ["?"] * (0 if success == "-" else int(success))})
    return ({"results": {"operations": operations}} if result.returncode == 0 else {}), result


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
