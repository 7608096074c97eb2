"""The standing fault suite of issue 8: what a timed-out, interrupted or killed run
leaves behind, and what a run shows in the Mac's process list.

Everything is seen from outside, as a user would see it: the real `pyinfra` CLI in
its own session (as from a terminal), the real binary, the target's machines (conftest). What runs
in a machine is read with orbctl's own `orbctl run -m M -u root ps`; what runs
on the Mac is read from /proc, leaving out processes in a machine's PID namespace (on
a real Mac those run in the VM and are never in the Mac's process list). Every wait
has a deadline, and each test first proves that what it checks for was there before
the fault (the marker command ran, the transfer was under way, the secret was seen
inside the machine), so it cannot pass for want of a fault.

A failing test says what was left: the process line, the file path.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pytest

from conftest import DEFAULT_USER, PYINFRA, run_pyinfra

BIG_BYTES = 512 << 20  # long enough in transit (about a second here) to be killed mid-way
OLD_CONTENT = "old content, must survive\n"
GONE_WITHIN = 8.0  # seconds after pyinfra exits, for what it ran in the machine to be gone
HOST_GONE_WITHIN = 5.0  # ... for its processes on the Mac
PIDNS_LINK = Path("/proc/self/ns/pid")
HOST_PIDNS = os.readlink(PIDNS_LINK) if PIDNS_LINK.exists() else ""

pytestmark = pytest.mark.skipif(not HOST_PIDNS, reason="reads /proc, as on the simulator's Linux")

TRANSPORTS = {"sessions": {}, "per-call": {"PYINFRA_ORBSTACK_SESSIONS": "0"}}
each_transport = pytest.mark.parametrize("transport", list(TRANSPORTS))


def transport_env(orb, transport: str) -> dict[str, str]:
    env = dict(orb.env)
    env.pop("PYINFRA_ORBSTACK_SESSIONS", None)
    env.update(TRANSPORTS[transport])
    return env


# -- processes, as /proc shows them on the Mac side


@dataclass(frozen=True)
class Process:
    pid: int
    ppid: int
    state: str
    start: int  # clock ticks after boot: tells a reused pid apart
    args: tuple[str, ...]
    on_host: bool  # False: inside a simulator machine (its own PID namespace)

    @property
    def key(self) -> tuple[int, int]:
        return self.pid, self.start

    def line(self, limit: int = 240) -> str:
        text = " ".join(self.args)
        return f"{self.pid} {text[:limit]}{' …' if len(text) > limit else ''}"


def read_process(pid: int) -> Process | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        pidns = os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    args = raw[:-1].split(b"\0") if raw else []  # each argument ends with a NUL
    return Process(pid=pid, ppid=int(fields[1]), state=fields[0], start=int(fields[19]),
                   args=tuple(a.decode(errors="replace") for a in args), on_host=pidns == HOST_PIDNS)


def process_table() -> dict[int, Process]:
    table = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (p := read_process(int(name))) is not None:
            table[p.pid] = p
    return table


def descendants(table: dict[int, Process], root: int) -> list[Process]:
    children = defaultdict(list)
    for p in table.values():
        children[p.ppid].append(p)
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            found.append(child)
            todo.append(child.pid)
    return found


def is_serve(p: Process) -> bool:
    return bool(p.args) and os.path.basename(p.args[0]) == "pyinfra-orbstack" and "serve" in p.args[1:]


def fd_offset(pid: int, fd: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/fdinfo/{fd}").read_text().splitlines():
            if line.startswith("pos:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


class PyinfraRun:
    """One `pyinfra` CLI run in its own session (as from a terminal), watched from outside.

    A watcher thread records every process under pyinfra while it runs, so that what it
    leaves behind can still be named after it exits, when orphans no longer say whose
    they are. Use it as a context manager: on the way out, whatever of the run is still
    alive on the host is killed (by pid), so a failing test does not leak into the next.
    """

    def __init__(self, env: dict[str, str], cwd: Path, machine: str, *args: str):
        self.machine = machine
        self.before = {p.key for p in process_table().values()}
        self.seen: dict[tuple[int, int], Process] = {}
        self.returncode: int | None = None
        self.ended: float | None = None
        self._chunks: list[bytes] = []
        self.proc = subprocess.Popen(
            [str(PYINFRA), *args], env=env, cwd=cwd, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._watcher = threading.Thread(target=self._watch, daemon=True)
        self._reader.start()
        self._watcher.start()

    def __enter__(self) -> PyinfraRun:
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self._watcher.join(timeout=5)
        for p in self._host_leftovers():
            if (now := read_process(p.pid)) is not None and now.start == p.start:
                os.kill(p.pid, signal.SIGKILL)

    @property
    def output(self) -> str:
        return b"".join(self._chunks).decode(errors="replace")

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def _read(self) -> None:
        for chunk in iter(lambda: self.proc.stdout.read1(1 << 16), b""):
            self._chunks.append(chunk)

    def _watch(self) -> None:
        while True:
            done = self.proc.poll() is not None
            found = descendants(process_table(), self.proc.pid)
            for p in found:
                self.seen.setdefault(p.key, p)
            if done:
                return
            time.sleep(0.05)

    def serve(self, timeout: float = 30) -> Process:
        """The `pyinfra-orbstack serve` child of this pyinfra."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.running:
            for p in process_table().values():
                if p.ppid == self.proc.pid and is_serve(p):
                    return p
            time.sleep(0.02)
        raise AssertionError(f"no `pyinfra-orbstack serve` child of pyinfra appeared:\n{self.output}")

    def wait(self, timeout: float) -> str:
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"pyinfra did not exit within {timeout:.0f} s; its output so far:\n"
                                 f"{self.output}") from None
        self.ended = time.monotonic()
        self._reader.join(timeout=5)
        print(f"pyinfra exited with status {self.returncode}; its output:\n{self.output}")  # shown on failure
        return self.output

    def leftovers(self, within: float = HOST_GONE_WITHIN) -> list[Process]:
        """Host processes of this run still alive `within` seconds after pyinfra exited.

        Of the run: seen under pyinfra while it ran, or started since it began and
        naming its machine (an `orbctl run -m M` that was orphaned between samples).
        """
        assert self.ended is not None, "wait() first"
        while True:
            left = self._host_leftovers()
            if not left or time.monotonic() >= self.ended + within:
                return left
            time.sleep(0.1)

    def _host_leftovers(self) -> list[Process]:
        table = process_table()
        own_checks = {p.pid for p in descendants(table, os.getpid())}  # this test's own orbctl calls
        left = []
        for p in table.values():
            if not p.on_host or p.state == "Z" or p.pid in own_checks or p.pid == self.proc.pid:
                continue
            new_and_named = p.key not in self.before and any(self.machine in a for a in p.args)
            if p.key in self.seen or new_and_named:
                left.append(p)
        return left


def host_leftover_problems(run: PyinfraRun) -> list[str]:
    return [f"left running on the Mac {HOST_GONE_WITHIN:.0f} s after pyinfra exited: {p.line()}"
            for p in run.leftovers()]


def check(problems: list[str]) -> None:
    assert not problems, "\n".join(problems)


# -- inside a machine, through orbctl's own `run`


def in_machine(orb, machine: str, command: str, user: str = "root") -> str:
    return orb.orbctl("run", "-m", machine, "-u", user, "sh", "-c", command, timeout=60).stdout


def running_in_machine(orb, machine: str, marker: str) -> list[str]:
    """`ps` lines of the machine's processes whose arguments contain marker."""
    ps = orb.orbctl("run", "-m", machine, "-u", "root", "ps", "-ewwo", "pid,args", timeout=30).stdout
    return [line.strip() for line in ps.splitlines()[1:] if marker in line]


def poll(probe: Callable[[], object], until: Callable[[object], bool], timeout: float, interval: float = 0.2):
    """Calls probe until its result satisfies until, or timeout passes; returns the last result."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if until(value) or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def wait_until_running(orb, machine: str, marker: str, run: PyinfraRun, timeout: float = 30) -> list[str]:
    lines = poll(lambda: running_in_machine(orb, machine, marker), lambda lines: lines or not run.running, timeout)
    assert lines, (f"the marker command (`{marker}`) was never seen running in {machine} "
                   f"(pyinfra {'still runs' if run.running else 'exited'}):\n{run.output}")
    return lines


def still_running_after(orb, machine: str, marker: str, run: PyinfraRun) -> list[str]:
    """The marker's processes still in the machine GONE_WITHIN seconds after pyinfra exited."""
    return poll(lambda: running_in_machine(orb, machine, marker), lambda lines: not lines,
                max(0.0, run.ended + GONE_WITHIN - time.monotonic()))


def kill_in_machine(orb, machine: str, ps_lines: list[str]) -> None:
    """Cleanup after a failure, so the shared machine does not collect sleepers."""
    pids = [line.split()[0] for line in ps_lines]
    if pids:
        orb.orbctl("run", "-m", machine, "-u", "root", "kill", "-9", *pids, check=False)


def sleep_marker() -> str:
    """A sleep duration no other command uses: its ps line is the marker."""
    return f"{secrets.randbelow(900) + 100}.{secrets.randbelow(10**6):06d}"


def agent_dirs(orb, machine: str) -> set[str]:
    """Session agents' private directories in the machine (`owner path` lines)."""
    out = in_machine(orb, machine,
                     'for d in /tmp/pyinfra-orbstack.*; do [ -d "$d" ] && stat -c "%U %n" "$d"; done; true')
    return set(out.splitlines())


def write_deploy(directory: Path, body: str) -> None:
    (directory / "deploy.py").write_text("from pyinfra.operations import files, server\n" + body)


def pyinfra_args(machine: str) -> list[str]:
    return ["-y", f"@orbstack/{machine}", "deploy.py"]


@pytest.fixture()
def own_machine(orb):
    """A machine for this test alone, deleted afterwards: these tests fill, stop or delete it."""
    name = orb.create(f"fault-{uuid.uuid4().hex[:6]}")
    yield name
    orb.orbctl("delete", "-f", name, check=False)


@pytest.fixture(scope="session")
def big_file(tmp_path_factory) -> Iterator[Path]:
    """BIG_BYTES of random data (incompressible: a clever transport cannot shortcut it)."""
    path = tmp_path_factory.mktemp("big") / "big.bin"
    with open(path, "wb") as f:
        for _ in range(BIG_BYTES >> 22):
            f.write(os.urandom(4 << 20))
    yield path
    path.unlink()


# -- 1. _timeout and Ctrl-C stop the whole command group inside the machine

STUBBORN = "trap '' TERM; sleep {marker}"  # ignores SIGTERM, as does its sleep


ESCALATION = {
    "user": "",
    "sudo": ", _sudo=True",
    # su -c starts its command in a new session: out of the group a plain kill reaches.
    "su": ", _sudo=True, _su_user='fsu', _shell_executable='sh'",
}


@each_transport
@pytest.mark.parametrize("escalation", list(ESCALATION))
def test_timeout_kills_the_whole_command_group_in_the_machine(orb, tmp_path, transport, escalation):
    machine = orb.machine("faults")
    if escalation == "su":
        in_machine(orb, machine, "id fsu >/dev/null 2>&1 || useradd -m -s /bin/sh fsu")
    marker = sleep_marker()
    write_deploy(tmp_path, f"server.shell(name='stubborn', commands=[{STUBBORN.format(marker=marker)!r}], "
                           f"_timeout=3{ESCALATION[escalation]})\n")
    left_in_machine: list[str] = []
    with PyinfraRun(transport_env(orb, transport), tmp_path, machine, *pyinfra_args(machine)) as run:
        wait_until_running(orb, machine, marker, run)
        output = run.wait(timeout=60)
        assert run.returncode != 0, output
        assert "timed out" in output.lower(), f"pyinfra did not report a timeout:\n{output}"
        left_in_machine = still_running_after(orb, machine, marker, run)
        problems = [f"still running in {machine} {GONE_WITHIN:.0f} s after the timeout: {line}"
                    for line in left_in_machine]
        problems += host_leftover_problems(run)
    kill_in_machine(orb, machine, left_in_machine)
    check(problems)


@each_transport
def test_ctrl_c_kills_the_whole_command_group_in_the_machine(orb, tmp_path, transport):
    machine = orb.machine("faults")
    marker = sleep_marker()
    write_deploy(tmp_path, f"server.shell(name='stubborn', commands=[{STUBBORN.format(marker=marker)!r}])\n")
    left_in_machine: list[str] = []
    with PyinfraRun(transport_env(orb, transport), tmp_path, machine, *pyinfra_args(machine)) as run:
        wait_until_running(orb, machine, marker, run)
        os.killpg(run.proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        run.wait(timeout=20)  # (pyinfra's exit status after Ctrl-C is its own business: 0 in 3.10)
        left_in_machine = still_running_after(orb, machine, marker, run)
        problems = [f"still running in {machine} {GONE_WITHIN:.0f} s after Ctrl-C: {line}"
                    for line in left_in_machine]
        problems += host_leftover_problems(run)
    kill_in_machine(orb, machine, left_in_machine)
    check(problems)


# -- 2. Neither command text nor a sudo password is in the Mac's process list


class ArgvSampler:
    """Samples every process about 50 times a second, looking for secrets.

    On the host (the Mac's process list) it looks at argv: any hit is a leak. Inside
    machines it looks at argv and environment too, only to prove that the sampling
    overlapped the command (its `sh -c` carries the command text; the sudo password
    is in sudo's environment as PYINFRA_SUDO_PASSWORD).
    """

    def __init__(self, secrets_by_name: dict[str, str]):
        self.secrets = {name: value.encode() for name, value in secrets_by_name.items()}
        self.on_host: dict[tuple[int, int], tuple[Process, list[str]]] = {}
        self.in_machine: set[str] = set()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ArgvSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(0.02)

    def sample(self) -> None:
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                raw = Path(f"/proc/{name}/cmdline").read_bytes()
                on_host = os.readlink(f"/proc/{name}/ns/pid") == HOST_PIDNS
                if not on_host:
                    raw += b"\0" + Path(f"/proc/{name}/environ").read_bytes()
            except OSError:
                continue
            found = [secret for secret, value in self.secrets.items() if value in raw]
            if not found:
                continue
            if not on_host:
                self.in_machine.update(found)
            elif (p := read_process(int(name))) is not None:
                self.on_host.setdefault(p.key, (p, found))
        self.samples += 1


SECRET_PATHS = {
    # name: (transport, what the command needs first, extra operation arguments)
    "sessions": ("sessions", "", ""),
    "per-call": ("per-call", "", ""),
    # These two used to take the per-call path even with sessions on.
    "stdin-over-1MiB": ("sessions", "cat >/dev/null; ", ", _stdin='y' * (1024 * 1024 + 4096)"),
    "command-over-96KiB": ("sessions", "# " + "p" * (100 * 1024) + "\n", ""),
}


@pytest.mark.parametrize("path", list(SECRET_PATHS))
def test_command_text_and_sudo_password_stay_out_of_the_mac_process_list(orb, tmp_path, path):
    machine = orb.machine("faults")
    transport, prefix, extra_arguments = SECRET_PATHS[path]
    marker = f"cmd-secret-{secrets.token_hex(8)}"
    password = f"pw-secret-{secrets.token_hex(8)}"
    out = f"/tmp/faults-{secrets.token_hex(4)}"
    command = f"{prefix}echo {marker} > {out}; sleep 2"
    # The password is an operation argument, not `--data`: pyinfra's own argv
    # would show it, and that would be the user's doing, not ours.
    write_deploy(tmp_path, f"server.shell(name='secretive', commands=[{command!r}], _sudo=True, "
                           f"_sudo_password={password!r}{extra_arguments})\n")
    env = transport_env(orb, transport)

    with ArgvSampler({"the command text": marker, "the sudo password": password}) as sampler:
        # Control: a host process with both secrets in its argv is seen by the sampler.
        control = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)", marker, password])
        try:
            poll(lambda: control.pid in {pid for pid, _ in list(sampler.on_host)}, bool, timeout=5, interval=0.05)
        finally:
            control.kill()
            control.wait(timeout=5)
        control_keys = {key for key, (p, _) in list(sampler.on_host.items()) if control.pid in (p.pid, p.ppid)}
        assert control.pid in {pid for pid, _ in control_keys}, \
            "the sampler did not see a host process with the secrets in its argv"
        with PyinfraRun(env, tmp_path, machine, *pyinfra_args(machine)) as run:
            output = run.wait(timeout=120)
            problems = host_leftover_problems(run)
    assert run.returncode == 0, output
    assert in_machine(orb, machine, f"cat {out}; rm -f {out}") == f"{marker}\n", "the command did not run"
    assert sampler.in_machine == {"the command text", "the sudo password"}, (
        f"in {sampler.samples} samples the secrets were seen only as {sorted(sampler.in_machine)} inside the "
        f"machine, so the sampling may have missed the command")
    problems += [f"{' and '.join(found)} in the Mac's process list: {p.line()}"
                 for key, (p, found) in sampler.on_host.items() if key not in control_keys]
    check(problems)


# -- 3. kill -9 of the binary mid-command


@each_transport
def test_killed_binary_leaves_no_command_or_session_directory_in_the_machine(orb, tmp_path, transport):
    machine = orb.machine("faults")
    marker = sleep_marker()
    env = transport_env(orb, transport)
    write_deploy(tmp_path, f"server.shell(name='long', commands=['sleep {marker}'])\n")
    dirs_before = agent_dirs(orb, machine)
    left_in_machine: list[str] = []
    with PyinfraRun(env, tmp_path, machine, *pyinfra_args(machine)) as run:
        serve = run.serve()
        wait_until_running(orb, machine, marker, run)
        session_dirs = agent_dirs(orb, machine) - dirs_before
        if transport == "sessions":
            assert session_dirs, f"no session agent directory (/tmp/pyinfra-orbstack.*) in {machine} while " \
                                 "the command ran: is the session transport in use?"
        os.kill(serve.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        output = run.wait(timeout=30)
        assert run.returncode != 0, output
        assert run.ended - killed_at < 10, f"pyinfra took {run.ended - killed_at:.1f} s to fail"
        left_in_machine = still_running_after(orb, machine, marker, run)
        problems = [f"still running in {machine} {GONE_WITHIN:.0f} s after the binary was killed: {line}"
                    for line in left_in_machine]
        problems += host_leftover_problems(run)
    left_dirs = poll(lambda: session_dirs & agent_dirs(orb, machine), lambda left: not left,
                     max(0.0, run.ended + GONE_WITHIN - time.monotonic()))
    if left_dirs:  # at the latest, the next run against the machine cleans up
        run_pyinfra(env, "-y", f"@orbstack/{machine}", "exec", "--", "true", timeout=120)
        left_dirs = session_dirs & agent_dirs(orb, machine)
    problems += [f"session directory left in {machine} after the next run: {line}" for line in sorted(left_dirs)]
    kill_in_machine(orb, machine, left_in_machine)
    if left_dirs:
        in_machine(orb, machine, "rm -rf " + " ".join(line.split(" ", 1)[1] for line in left_dirs))
    check(problems)


# -- 3b. The same faults while output streams (batched command.output, protocol 2)

STREAMING = "trap '' TERM; while :; do seq 3000; sleep 0.02; done # {marker}"  # ~5 MB/s, ignores SIGTERM


@each_transport
@pytest.mark.parametrize("fault", ["timeout", "kill -9"])
def test_a_command_streaming_output_is_stopped_by_a_timeout_or_a_killed_binary(orb, tmp_path, transport, fault):
    machine = orb.machine("faults")
    marker = sleep_marker()
    timeout = ", _timeout=3" if fault == "timeout" else ""
    write_deploy(tmp_path, f"server.shell(name='streaming', commands=[{STREAMING.format(marker=marker)!r}]{timeout})\n")
    left_in_machine: list[str] = []
    with PyinfraRun(transport_env(orb, transport), tmp_path, machine, *pyinfra_args(machine)) as run:
        serve = run.serve()
        wait_until_running(orb, machine, marker, run)
        if fault == "kill -9":
            time.sleep(1)  # batches in flight, the binary possibly blocked writing one
            os.kill(serve.pid, signal.SIGKILL)
            killed_at = time.monotonic()
        output = run.wait(timeout=60)
        assert run.returncode != 0, output
        if fault == "timeout":
            assert "timed out" in output.lower(), f"pyinfra did not report a timeout:\n{output}"
        else:
            assert run.ended - killed_at < 10, f"pyinfra took {run.ended - killed_at:.1f} s to fail"
        left_in_machine = still_running_after(orb, machine, marker, run)
        problems = [f"still running in {machine} {GONE_WITHIN:.0f} s after the {fault}: {line}"
                    for line in left_in_machine]
        problems += host_leftover_problems(run)
    kill_in_machine(orb, machine, left_in_machine)
    check(problems)


# -- 4.-6. Faults mid-transfer: a killed binary, a stopped or deleted machine


def process_tree(root: int) -> list[int]:
    """root and its descendants, from the kernel's per-thread lists of children (far
    cheaper than a scan of /proc, so a transfer is not missed on a busy machine)."""
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        try:
            threads = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in threads:
            try:
                todo += [int(child) for child in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
            except OSError:
                pass
    return found


ATTEMPTS = 4  # a fault that lands after the transfer finished is tried again


class FaultMissed(Exception):
    """The transfer finished before the fault could land (a loaded box): not the
    fault under test, so the test tries again instead of judging this run."""


def wait_until_midway(run: PyinfraRun, is_transfer: Callable[[str], bool], total: int,
                      timeout: float = 60) -> int:
    """Waits until a process under pyinfra has the transferred file open in its first
    quarter (the rest leaves a fault time to land before the transfer could finish);
    returns the offset. Raises FaultMissed when pyinfra finished first.

    Read from the processes' file descriptors (`is_transfer` gets each one's target),
    so it holds whatever moves the bytes: orbctl, the binary, a session. pyinfra itself
    is left out: it reads the file first, to hash it.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not run.running:
            if run.returncode == 0:
                raise FaultMissed(run.output)
            raise AssertionError(f"pyinfra failed before the transfer was seen under way:\n{run.output}")
        for pid in process_tree(run.proc.pid)[1:]:
            try:
                fds = os.listdir(f"/proc/{pid}/fd")
            except OSError:
                continue
            for fd in fds:
                try:
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if is_transfer(target):
                    offset = fd_offset(pid, fd)
                    if offset is not None and 0 < offset < total // 4:
                        return offset
        time.sleep(0.001)
    raise AssertionError(f"no transfer under way within {timeout:.0f} s:\n{run.output}")


def reads_file(path: Path) -> Callable[[str], bool]:
    return lambda target: target == str(path)


def writes_into(directory: Path) -> Callable[[str], bool]:
    return lambda target: target.startswith(f"{directory}/")


def prepare_destination(orb, machine: str) -> None:
    """/srv/faults (persistent, unlike /tmp), owned by the machine's user, with an old file."""
    in_machine(orb, machine, f"mkdir -p /srv/faults && printf %s {shlex.quote(OLD_CONTENT)} "
                             f"> /srv/faults/dest.bin && chown -R {DEFAULT_USER} /srv/faults")


def destination_problems(orb, machine: str) -> list[str]:
    size = int(in_machine(orb, machine, "stat -c %s /srv/faults/dest.bin"))
    if size == len(OLD_CONTENT) and in_machine(orb, machine, "cat /srv/faults/dest.bin") == OLD_CONTENT:
        return []
    head = in_machine(orb, machine, "head -c 16 /srv/faults/dest.bin | od -An -tx1").strip()
    return [f"/srv/faults/dest.bin in {machine} was replaced: {size} bytes now, starting {head}"]


def leftovers_in_destination_dir(orb, machine: str) -> list[str]:
    listing = in_machine(orb, machine, "cd /srv/faults && for f in .* *; do [ -f \"$f\" ] && "
                                       "stat -c '%n %s bytes' \"$f\"; done; true")
    return [f"left in {machine}: /srv/faults/{line}" for line in listing.splitlines()
            if not line.startswith("dest.bin ")]


def local_leftovers(directory: Path, expected: set[str]) -> list[str]:
    """Files in directory other than expected, reported and then removed (they can be big)."""
    problems = []
    for path in sorted(directory.iterdir()):
        if path.name not in expected:
            problems.append(f"left on the Mac: {path} ({path.stat().st_size} bytes)")
            path.unlink()
    return problems


STOPPED = r"\bstop"
DELETED = r"delet|no longer exists|not found|no OrbStack machine"


def unclear_error(output: str, machine: str, what_happened: str) -> list[str]:
    """A clear error says, in one line, what happened (a regex) to the machine by name
    (beyond pyinfra's `[@orbstack/M]` prefix), and is not a traceback."""
    problems = []
    if "Traceback" in output:
        problems.append("pyinfra printed a traceback (see its output below)")
    lines = output.replace(f"@orbstack/{machine}", "").splitlines()
    if not any(machine in line and re.search(what_happened, line, re.I) for line in lines):
        problems.append(f"no line of pyinfra's output names {machine} and says what happened "
                        f"(/{what_happened}/): see its output below")
    return problems


def put_deploy(directory: Path, big_file: Path) -> None:
    write_deploy(directory, f"files.put(name='big put', src={str(big_file)!r}, dest='/srv/faults/dest.bin')\n")


def mac_tmp(tmp_path: Path) -> Path:
    """TMPDIR for the run: whatever the shim or the binary leaves in it is left on the Mac."""
    path = tmp_path / "mac-tmp"
    path.mkdir()
    return path


def test_killed_binary_mid_put_keeps_the_old_file(orb, tmp_path, own_machine, big_file):
    machine = own_machine
    prepare_destination(orb, machine)
    put_deploy(tmp_path, big_file)
    tmpdir = mac_tmp(tmp_path)
    for _ in range(ATTEMPTS):
        prepare_destination(orb, machine)
        with PyinfraRun(dict(orb.env, TMPDIR=str(tmpdir)), tmp_path, machine, *pyinfra_args(machine)) as run:
            serve = run.serve()
            try:
                wait_until_midway(run, reads_file(big_file), BIG_BYTES)
            except FaultMissed:
                continue
            os.kill(serve.pid, signal.SIGKILL)
            output = run.wait(timeout=60)
            problems = host_leftover_problems(run)
        if run.returncode != 0:
            break
    else:
        raise AssertionError("the kill never landed before the upload finished")
    time.sleep(3)  # whatever still writes, has written by now
    problems += destination_problems(orb, machine)
    run_pyinfra(orb.env, "-y", f"@orbstack/{machine}", "exec", "--", "true", timeout=120)
    problems += leftovers_in_destination_dir(orb, machine)
    problems += local_leftovers(tmpdir, set())
    check(problems)


def prepare_remote_big_file(orb, machine: str, big_file: Path) -> None:
    # The machine sees the Mac's files under /mnt/mac, as OrbStack's do.
    in_machine(orb, machine, f"mkdir -p /srv/faults && cp /mnt/mac{big_file} /srv/faults/big.bin && "
                             "chmod 644 /srv/faults/big.bin")


def get_deploy(directory: Path) -> Path:
    """A files.get of the big file over an existing local file; returns the local directory."""
    got = directory / "got"
    got.mkdir()
    (got / "big.bin").write_text(OLD_CONTENT)
    write_deploy(directory, "files.get(name='big get', src='/srv/faults/big.bin', dest='got/big.bin')\n")
    return got


def reset_local_destination(got: Path) -> None:
    """The local side of a get as before the run: only the old big.bin."""
    for leftover in got.iterdir():
        leftover.unlink()
    (got / "big.bin").write_text(OLD_CONTENT)


def local_destination_problems(got: Path) -> list[str]:
    dest = got / "big.bin"
    if not dest.exists():
        return []
    with open(dest, "rb") as f:
        if f.read(len(OLD_CONTENT) + 1) == OLD_CONTENT.encode():
            return []
    return [f"{dest} was replaced: {dest.stat().st_size} bytes now"]


def test_killed_binary_mid_get_leaves_no_partial_file(orb, tmp_path, own_machine, big_file):
    machine = own_machine
    prepare_remote_big_file(orb, machine, big_file)
    got = get_deploy(tmp_path)
    tmpdir = mac_tmp(tmp_path)
    for _ in range(ATTEMPTS):
        reset_local_destination(got)
        with PyinfraRun(dict(orb.env, TMPDIR=str(tmpdir)), tmp_path, machine, *pyinfra_args(machine)) as run:
            serve = run.serve()
            try:
                wait_until_midway(run, writes_into(got), BIG_BYTES)
            except FaultMissed:
                continue
            os.kill(serve.pid, signal.SIGKILL)
            output = run.wait(timeout=60)
            problems = host_leftover_problems(run)
        if run.returncode != 0:
            break
    else:
        raise AssertionError("the kill never landed before the download finished")
    time.sleep(1)  # whatever still writes, has written by now
    problems += local_leftovers(got, {"big.bin"}) + local_leftovers(tmpdir, set())
    problems += local_destination_problems(got)
    check(problems)


def test_machine_stopped_mid_put_keeps_the_old_file(orb, tmp_path, own_machine, big_file):
    machine = own_machine
    prepare_destination(orb, machine)
    put_deploy(tmp_path, big_file)
    tmpdir = mac_tmp(tmp_path)
    for _ in range(ATTEMPTS):
        with PyinfraRun(dict(orb.env, TMPDIR=str(tmpdir)), tmp_path, machine, *pyinfra_args(machine)) as run:
            try:
                wait_until_midway(run, reads_file(big_file), BIG_BYTES)
            except FaultMissed:
                prepare_destination(orb, machine)
                continue
            orb.orbctl("stop", machine)
            output = run.wait(timeout=60)
            problems = unclear_error(output, machine, STOPPED) + host_leftover_problems(run)
        orb.orbctl("start", machine)
        if run.returncode != 0:
            break
        # The upload finished before the stop landed (a loaded box): not the
        # fault under test. Put the old content back and try again.
        prepare_destination(orb, machine)
    else:
        raise AssertionError(f"the stop never landed before the upload finished:\n{output}")
    problems += destination_problems(orb, machine)
    run_pyinfra(orb.env, "-y", f"@orbstack/{machine}", "exec", "--", "true", timeout=120)
    problems += leftovers_in_destination_dir(orb, machine)
    problems += local_leftovers(tmpdir, set())
    check(problems)


def test_machine_deleted_mid_put_leaves_nothing_on_the_mac(orb, tmp_path, own_machine, big_file):
    machine = own_machine
    put_deploy(tmp_path, big_file)
    tmpdir = mac_tmp(tmp_path)
    try:
        for _ in range(ATTEMPTS):
            prepare_destination(orb, machine)
            with PyinfraRun(dict(orb.env, TMPDIR=str(tmpdir)), tmp_path, machine, *pyinfra_args(machine)) as run:
                try:
                    wait_until_midway(run, reads_file(big_file), BIG_BYTES)
                except FaultMissed:
                    continue
                orb.orbctl("delete", "-f", machine)
                output = run.wait(timeout=60)
                problems = unclear_error(output, machine, DELETED) + host_leftover_problems(run)
            if run.returncode != 0:
                break
            # The upload finished before the delete landed (a loaded box): not
            # the fault under test. Try again in a fresh machine.
            machine = orb.create(f"fault-{uuid.uuid4().hex[:6]}")
        else:
            raise AssertionError(f"the delete never landed before the upload finished:\n{output}")
    finally:
        orb.orbctl("delete", "-f", machine, check=False)
    problems += local_leftovers(tmpdir, set())
    check(problems)


def test_machine_deleted_mid_get_leaves_nothing_on_the_mac(orb, tmp_path, own_machine, big_file):
    machine = own_machine
    got = get_deploy(tmp_path)
    tmpdir = mac_tmp(tmp_path)
    try:
        for _ in range(ATTEMPTS):
            prepare_remote_big_file(orb, machine, big_file)
            reset_local_destination(got)
            with PyinfraRun(dict(orb.env, TMPDIR=str(tmpdir)), tmp_path, machine, *pyinfra_args(machine)) as run:
                try:
                    wait_until_midway(run, writes_into(got), BIG_BYTES)
                except FaultMissed:
                    continue
                orb.orbctl("delete", "-f", machine)
                output = run.wait(timeout=60)
                problems = unclear_error(output, machine, DELETED) + host_leftover_problems(run)
            if run.returncode != 0:
                break
            # The download finished before the delete landed: not the fault
            # under test. Try again in a fresh machine.
            machine = orb.create(f"fault-{uuid.uuid4().hex[:6]}")
        else:
            raise AssertionError(f"the delete never landed before the download finished:\n{output}")
    finally:
        orb.orbctl("delete", "-f", machine, check=False)
    problems += local_leftovers(got, {"big.bin"}) + local_leftovers(tmpdir, set())
    problems += local_destination_problems(got)
    check(problems)
