"""Fixtures that point pyinfra's own end-to-end tests (tests/end-to-end in its sdist)
at `@orbstack` machines. run.py appends `from orbstack_fixtures import *` to upstream's
conftest.py, so the `helpers` fixture here replaces upstream's; no test body changes
but its target (run.py, TARGETS).

Upstream's targets, and what stands in for them:

- `@local`: a machine (`e2e-local`) whose root user works in `/mnt/mac$PWD`, the
  controller's directory as OrbStack mounts the Mac in every machine: relative paths
  and files the tests read back on the controller are the same files.
- the SSH server container (a user `pyinfra`, password `password`, sudo that asks for
  it): a new machine `localhost` per test with that user, so `localhost] Success`
  reads as upstream wrote it.
- `docker run -d IMAGE` + `@docker/ID` + testinfra's `docker://ID`: a machine created
  from the same image by the connector (`orbstack_image`), commands as root in `/`,
  checked through testinfra with `orbstack://NAME` (OrbStackBackend below, which runs
  testinfra's commands with `orbctl run -m NAME -u root`). The message the docker
  connector prints for its container (`docker build complete`) becomes ours for the
  machine (`Created OrbStack machine: NAME`).
- `@podman/IMAGE`: its one test asserts `podman build complete`, a line only pyinfra's
  podman connector prints, in the test body: skipped, saying so.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from typing import Any

import pytest
import testinfra
import testinfra.backend
from testinfra.backend import base

ORBCTL = os.environ.get("UPSTREAM_E2E_ORBCTL", "orbctl")

SKIPPED = {
    "test_int_podman_install_package_ubuntu": (
        "asserts 'podman build complete', a line only pyinfra's @podman connector prints; the same "
        "operation (apt.packages iftop update=true on ubuntu:22.04) runs in test_int_docker_install_package_ubuntu"
    ),
}


def orbctl(*args: str, stdin: str | None = None) -> str:
    result = subprocess.run([ORBCTL, *args], input=stdin, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise AssertionError(f"orbctl {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout


class OrbStackBackend(base.BaseBackend):  # type: ignore[misc]
    """testinfra's `orbstack://MACHINE`: commands as root through orbctl run."""

    NAME = "orbstack"

    def __init__(self, name: str, *args: Any, **kwargs: Any):
        self.name = name
        super().__init__(self.name, *args, **kwargs)

    def run(self, command: str, *args: str, **kwargs: Any) -> base.CommandResult:
        cmd = self.get_command(command, *args)
        out = self.run_local(f"{ORBCTL} run -m %s -u root /bin/sh -c %s", self.name, cmd)
        out.command = self.encode(cmd)
        return out


testinfra.backend.BACKENDS["orbstack"] = f"{__name__}.OrbStackBackend"


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    for item in items:
        reason = SKIPPED.get(item.originalname)
        if reason:
            item.add_marker(pytest.mark.skip(reason=f"cannot apply to an OrbStack machine: {reason}"))


@pytest.fixture(scope="session", autouse=True)
def local_machine() -> Any:
    """The machine of the `@local` tests, its root user allowed to write the controller's files."""
    orbctl("create", "debian", "e2e-local")
    try:
        yield "e2e-local"
    finally:
        orbctl("delete", "-f", "e2e-local")


def _helpers_class(upstream: Any) -> Any:
    class OrbStackHelpers(upstream):  # type: ignore[misc]
        @staticmethod
        def ssh_server() -> Any:
            """A machine as upstream's SSH container: user pyinfra, password password, sudo asking for it."""
            orbctl("create", "debian", "localhost")
            try:
                orbctl("run", "-m", "localhost", "-u", "root", "sh", "-c",
                       "useradd -m -s /bin/bash pyinfra && echo pyinfra:password | chpasswd && "
                       "echo 'pyinfra ALL=(ALL) ALL' > /etc/sudoers.d/pyinfra && chmod 440 /etc/sudoers.d/pyinfra")
                yield "localhost"
            finally:
                orbctl("delete", "-f", "localhost")

        @staticmethod
        def run_container_test_host(container: str, cmd: str, callback: Any) -> None:
            name = f"e2e-{uuid.uuid4().hex[:8]}"
            try:
                upstream.run_check_output(
                    f"pyinfra -y @orbstack/{name} --data orbstack_image={container} "
                    f"--data orbstack_user=root --data orbstack_workdir=/ {cmd}",
                    expected_lines=[f"Created OrbStack machine: {name}"],
                )
                host = testinfra.get_host(f"orbstack://{name}")
                callback(host)
            finally:
                subprocess.run([ORBCTL, "delete", "-f", name], capture_output=True, timeout=600)

    return OrbStackHelpers
