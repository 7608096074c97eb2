"""pyinfra's own end-to-end tests against `@orbstack` machines (make test-pyinfra-e2e).

For each pyinfra version asked for (default: the oldest pyshim/pyproject.toml allows and
the newest 3.x on PyPI), in .cache/upstream-e2e/:

1. a venv with that pyinfra, pytest, pytest-testinfra and this shim (editable);
2. pyinfra's sdist (`pip download --no-binary :all: --no-deps pyinfra==X`), unpacked
   afresh: its tests/end-to-end/ with only the targets changed (TARGETS: each
   replacement must apply exactly as often as listed, so an upstream change stops the
   run instead of passing unnoticed) and orbstack_fixtures.py appended to its conftest;
   no assertion is touched;
3. pytest in the sdist's root (the docker tests upload its README.md), with the
   simulator (`bin/orbctl`, a fresh ORBSIM_HOME, deleted afterwards) or whatever orbctl
   PATH finds when UPSTREAM_E2E_TARGET=orbstack;
4. a report per test: pass, skipped with the reason, or FAIL with the first line of
   the failure; in .cache/upstream-e2e/summary.md too. Exit 1 if any test failed or
   none ran.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
CACHE = REPO / ".cache" / "upstream-e2e"
LOCAL_TARGET = "@orbstack/e2e-local --data orbstack_user=root --data orbstack_workdir=/mnt/mac$(pwd)"

# file -> [(upstream text, replacement)], then a text that must be gone. Targets only.
TARGETS: dict[str, tuple[list[tuple[str, str]], str]] = {
    "test_e2e_local.py": ([
        # the target, run in a machine in the controller's directory (as OrbStack mounts the Mac)
        ('"pyinfra -y -v @local ', f'"pyinfra -y -v {LOCAL_TARGET} '),
        # the target's name as pyinfra prints it before "Success" / "No changes"
        ('"@local] ', '"@orbstack/e2e-local] '),
    ], "@local"),
    "test_e2e_ssh.py": ([], "--ssh-"),  # SSH_COMMAND and SSH_FIXTURE below: a block each
}

SSH_COMMAND = re.compile(r'PYINFRA_COMMAND = \(\n.*?\n\)\n', re.S)
SSH_COMMAND_NEW = 'PYINFRA_COMMAND = "pyinfra -y -v @orbstack/localhost --data orbstack_user=pyinfra "\n'
SSH_FIXTURE = re.compile(
    r'@pytest\.fixture\(autouse=True\)\ndef run_docker_ssh_server\(helpers\):\n.*?(?=\n\n\n@pytest\.mark)', re.S)
SSH_FIXTURE_NEW = ('@pytest.fixture(autouse=True)\ndef run_docker_ssh_server(helpers):\n'
                   '    # @orbstack: a new machine per test, as upstream\'s new container (orbstack_fixtures.py)\n'
                   '    yield from helpers.ssh_server()')

CONFTEST_TAIL = '''

# --- @orbstack (pyinfra-orbstack's pyshim/upstream_e2e/run.py): targets and fixtures only ---
from orbstack_fixtures import *  # noqa: E402,F401,F403
from orbstack_fixtures import _helpers_class  # noqa: E402

Helpers = _helpers_class(Helpers)
'''


def sh(*args: str | Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], check=True, text=True, **kwargs)  # type: ignore[call-overload,no-any-return]


def oldest_supported() -> str:
    text = (REPO / "pyshim" / "pyproject.toml").read_text()
    m = re.search(r'"pyinfra>=([0-9.]+),', text)
    if not m:
        sys.exit("no pyinfra>=X lower bound in pyshim/pyproject.toml")
    return m.group(1)


def venv_for(which: str, oldest: str) -> tuple[Path, str]:
    spec = {"oldest": f"pyinfra=={oldest}", "newest": f"pyinfra>={oldest},<4"}.get(which, f"pyinfra=={which}")
    venv = CACHE / f"venv-{which}"
    py = venv / "bin" / "python"
    stamp = venv / ".spec"
    if not py.exists() or not stamp.exists() or stamp.read_text() != spec:
        shutil.rmtree(venv, ignore_errors=True)
        sh(sys.executable, "-m", "venv", venv)
        sh(py, "-m", "pip", "install", "-q", "--disable-pip-version-check", spec, "gevent>=24", "pytest",
           "pytest-testinfra")
        sh(py, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps", "-e", REPO / "pyshim")
        stamp.write_text(spec)
    elif which == "newest":  # the newest pyinfra may have moved on since the venv was made
        sh(py, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-U", spec)
    version = sh(py, "-c", "import importlib.metadata as m; print(m.version('pyinfra'))",
                 capture_output=True).stdout.strip()
    return venv, version


def unpack_sdist(py: Path, version: str) -> Path:
    sdists = CACHE / "sdists"
    sdists.mkdir(parents=True, exist_ok=True)
    archive = sdists / f"pyinfra-{version}.tar.gz"
    if not archive.exists():
        sh(py, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--no-binary", ":all:", "--no-deps",
           "-d", sdists, f"pyinfra=={version}")
    src = CACHE / f"pyinfra-{version}"
    shutil.rmtree(src, ignore_errors=True)
    with tarfile.open(archive) as tar:
        tar.extractall(CACHE, filter="data")
    if not (src / "tests" / "end-to-end").is_dir():
        sys.exit(f"{archive} has no tests/end-to-end")
    return src


def retarget(src: Path) -> None:
    e2e = src / "tests" / "end-to-end"
    for name, (replacements, gone) in TARGETS.items():
        path = e2e / name
        text = path.read_text()
        for old, new in replacements:
            if old not in text:
                sys.exit(f"{path}: no {old!r}: upstream changed; update TARGETS in {__file__}")
            text = text.replace(old, new)
        if name == "test_e2e_ssh.py":
            for pattern, new in ((SSH_COMMAND, SSH_COMMAND_NEW), (SSH_FIXTURE, SSH_FIXTURE_NEW)):
                text, n = pattern.subn(new.replace("\\", "\\\\"), text)  # new is literal text
                if n != 1:
                    sys.exit(f"{path}: {pattern.pattern!r} matched {n} times: upstream changed; update {__file__}")
        left = text.replace("@orbstack/e2e-local", "").count(gone)
        if left:
            sys.exit(f"{path}: {left} x {gone!r} left after retargeting: upstream changed; "
                     f"update TARGETS in {__file__}")
        path.write_text(text)
    shutil.copy(HERE / "orbstack_fixtures.py", e2e / "orbstack_fixtures.py")
    with open(e2e / "conftest.py", "a") as f:
        f.write(CONFTEST_TAIL)


def report(version: str, junit: Path) -> tuple[list[str], int, int]:
    rows, passed, failed = [], 0, 0
    for case in ET.parse(junit).getroot().iter("testcase"):
        where = case.get("file") or case.get("classname", "").replace(".", "/")
        test = f"{Path(where).name}::{case.get('name')}"
        skipped = case.find("skipped")
        failure = case.find("failure")
        if failure is None:
            failure = case.find("error")
        if failure is not None:
            first = (failure.get("message") or "").splitlines()[0:1]
            rows.append(f"| {version} | {test} | FAIL: {first[0] if first else 'see the log'} |")
            failed += 1
        elif skipped is not None:
            rows.append(f"| {version} | {test} | skipped: {skipped.get('message', '')} |")
        else:
            rows.append(f"| {version} | {test} | pass |")
            passed += 1
    return rows, passed, failed


def run_version(which: str, oldest: str, target: str) -> tuple[list[str], int, int]:
    venv, version = venv_for(which, oldest)
    print(f"== pyinfra {version} ({which}): its tests/end-to-end against @orbstack ({target})", flush=True)
    src = unpack_sdist(venv / "bin" / "python", version)
    retarget(src)
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(venv / "bin"), str(REPO / "bin"), env.get("PATH", "")])
    env["PYINFRA_ORBSTACK_BINARY"] = str(REPO / "bin" / "pyinfra-orbstack")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    home = None
    if target == "simulator":
        env = {k: v for k, v in env.items() if not k.startswith("ORBSIM_")}
        home = tempfile.mkdtemp(prefix="upstream-e2e-orbsim-")
        env.update(ORBSIM_HOME=home, ORBSIM_MAC_USER="dev", UPSTREAM_E2E_ORBCTL=str(REPO / "bin" / "orbctl"))
    junit = CACHE / f"junit-{version}.xml"
    try:
        subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pytest", "-p", "no:cacheprovider", "-v", "-rs",
             f"--junitxml={junit}", "-o", "junit_family=xunit1",
             # every end_to_end test (upstream's addopts deselects them), without tests/conftest.py
             # (the unit tests' fixtures, which need pyinfra's dev dependencies)
             "-m", "end_to_end", "--confcutdir=tests/end-to-end", "tests/end-to-end"],
            cwd=src, env=env, timeout=3600,
        )
    finally:
        if home is not None:
            subprocess.run([str(REPO / "bin" / "orbctl"), "delete", "-a", "-f"], env=env, capture_output=True,
                           timeout=600)
            shutil.rmtree(home, ignore_errors=True)
    if not junit.exists():
        return [f"| {version} | (no report) | FAIL: pytest wrote no report |"], 0, 1
    return report(version, junit)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("versions", nargs="*", default=["oldest", "newest"],
                        help="oldest, newest or a pyinfra version (default: oldest newest)")
    args = parser.parse_args()
    target = os.environ.get("UPSTREAM_E2E_TARGET", "simulator")
    if target not in ("simulator", "orbstack"):
        sys.exit(f"UPSTREAM_E2E_TARGET={target}: use simulator or orbstack")
    CACHE.mkdir(parents=True, exist_ok=True)
    oldest = oldest_supported()
    rows = ["| pyinfra | test | result |", "|---|---|---|"]
    passed = failed = 0
    for which in args.versions:
        r, p, f = run_version(which, oldest, target)
        rows += r
        passed, failed = passed + p, failed + f
    summary = "\n".join(rows) + "\n"
    (CACHE / "summary.md").write_text(summary)
    print("\n" + summary)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed or not passed else 0


if __name__ == "__main__":
    sys.exit(main())
