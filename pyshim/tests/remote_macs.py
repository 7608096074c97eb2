"""Remote Macs for the tests of issue 13: OrbStack on *other* Macs, reached over SSH.

A fake Mac (`FakeMac`) is, on this Linux box:

- one OpenSSH server, `/usr/sbin/sshd -D -e -f CONFIG` (sshd insists on an absolute
  path), listening on 127.0.0.1 at a free random port, with a throwaway ed25519 host
  key and user key and its own sshd_config in a temp dir (no system file is touched;
  only the privilege-separation directory /run/sshd is created if missing). Sessions
  log in as root (the simulator needs root) with the user key only.
- its own simulator state, `ORBSIM_HOME=<the Mac's home>`: machines of mac-a are not
  machines of mac-b, nor of the local `orb` fixture.
- the PATH of non-interactive sessions holds a per-Mac bin directory where a plain
  `pyinfra-orbstack`, `orbctl` and `orb` are this checkout's bin/ binaries, as a user
  puts them on a real Mac's PATH (docs/remote.md, "Testing remote Macs").

  How PATH and ORBSIM_HOME reach the sessions: sshd_config `SetEnv PATH=... ORBSIM_HOME=...`
  (OpenSSH >= 7.8 sets them in every session, over its own default PATH; checked at
  start). The bin directory's entries are wrapper scripts that export the Mac's
  ORBSIM_HOME and exec the real binary, so the Mac stays the same Mac even where a
  session's environment is rebuilt (sudo, `env -i`, a shell rc file): the wrappers
  make ORBSIM_HOME robust, SetEnv makes PATH. A Mac made with `binary=False` has no
  `pyinfra-orbstack` there (a Mac without `pip install pyinfra-orbstack`).

All fake Macs share one ssh_config (`FakeMacs.ssh_config`, the file that
`PYINFRA_ORBSTACK_SSH_CONFIG` names in `FakeMacs.env`): `Host mac-a`, HostName
127.0.0.1, its Port, User root, its IdentityFile, IdentitiesOnly, a known_hosts file
holding every fake Mac's host key, StrictHostKeyChecking yes, BatchMode yes. So
`ssh -F CONFIG mac-a CMD` is what a user's `ssh mac-a CMD` is.

Against a real OrbStack (conftest's target `orbstack`) the same tests use real Macs:
`RealMac`, one per ssh alias in PYINFRA_ORBSTACK_TEST_REMOTE_MACS="alias1 alias2",
reached with the user's own ssh config (or PYINFRA_ORBSTACK_SSH_CONFIG when set).
`remote_macs` (conftest) skips when that variable is unset.

API. The `remote_macs` fixture is a `FakeMacs` (simulator) or `RealMacs` (OrbStack):
`.list` (the Macs in order; at least two), `[alias]`, `.new_name(role)` (a machine
name of this session: cleanup deletes those), `.env` (os.environ with
PYINFRA_ORBSTACK_SSH_CONFIG, and PYINFRA_ORBSTACK_BINARY, to run pyinfra with),
`.ssh_config`; fake ones also `.known_hosts` and `.start(alias, binary=True)` (one more
fake Mac). Each Mac (both kinds): `.alias`, `.ssh(*remote_args, check=False)` (the
system ssh), `.orbctl(*args, check=True)` (the Mac's orbctl), `.pyinfra_ssh_data`
(host data for pyinfra's @ssh connector). Fake Macs only: `.port`, `.key` (user's
private key), `.home` (ORBSIM_HOME), `.env` (to run bin/orbctl here as that Mac's),
`.kill_sshd()`, `.restart_sshd()`.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

SSHD = "/usr/sbin/sshd"
SSH_CONFIG_VARIABLE = "PYINFRA_ORBSTACK_SSH_CONFIG"  # an `ssh -F` file the remote code reads
REAL_MACS_VARIABLE = "PYINFRA_ORBSTACK_TEST_REMOTE_MACS"  # "alias1 alias2": real Macs to test against
# What sshd gives a session on macOS; a fake Mac's bin directory comes first.
MACOS_SSHD_PATH = "/usr/bin:/bin:/usr/sbin:/sbin"
PRIVSEP_DIR = Path("/run/sshd")


def _run(args: list[str], timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kwargs)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children() -> dict[int, list[int]]:
    """pid -> its children, from /proc."""
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def _descendants(pid: int) -> list[int]:
    tree, found, todo = _children(), [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _is_sshd(pid: int) -> bool:
    """sshd itself, or (OpenSSH >= 9.8) its per-connection sshd-session / sshd-auth."""
    try:
        return os.path.basename(os.readlink(f"/proc/{pid}/exe")).startswith("sshd")
    except OSError:
        return False


def _start_time(pid: int) -> int | None:
    """A process's start time (to tell it from a later process with the same pid)."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _kill(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class FakeMac:
    """One fake Mac: an sshd on 127.0.0.1:`port` whose sessions see their own ORBSIM_HOME."""

    def __init__(self, macs: FakeMacs, alias: str, binary: bool = True,
                 session_env: dict[str, str] | None = None):
        self.macs = macs
        # More variables for every session (e.g. ORBSIM_LATENCY for make bench).
        self.session_env = dict(session_env or {})
        self.alias = alias
        self.dir = Path(tempfile.mkdtemp(prefix=f"{alias}-", dir=macs.dir))
        self.home = str(self.dir / "orbsim")  # the Mac's ORBSIM_HOME
        os.mkdir(self.home)
        self.key = str(self.dir / "id_ed25519")  # the user's private key
        self.host_key = str(self.dir / "ssh_host_ed25519_key")
        for path in (self.key, self.host_key):
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", alias, "-f", path]).check_returncode()
        (self.dir / "authorized_keys").write_text(Path(self.key + ".pub").read_text())
        self.bin = self.dir / "bin"  # first on the sessions' PATH
        self.bin.mkdir()
        for name in ("orbctl", "orb", *(["pyinfra-orbstack"] if binary else [])):
            wrapper = self.bin / name
            wrapper.write_text(f"#!/bin/sh\n# {alias}'s {name}: the checkout's, with {alias}'s simulator state\n"
                               f"ORBSIM_HOME={shlex.quote(self.home)}; export ORBSIM_HOME\n"
                               f'exec {shlex.quote(str(macs.bin / name))} "$@"\n')
            wrapper.chmod(0o755)
        self.path = f"{self.bin}:{MACOS_SSHD_PATH}"  # the sessions' PATH
        # Environment to run the checkout's bin/orbctl here, as this Mac's orbctl.
        self.env = dict(os.environ, ORBSIM_HOME=self.home)
        self.env.pop("PYINFRA_ORBSTACK_ORBCTL", None)
        self.port = 0
        self.sshd: subprocess.Popen | None = None
        self.orphans: list[tuple[int, int | None]] = []  # (pid, start time) of commands kill_sshd left
        self._start()

    # sshd

    def _write_config(self) -> None:
        (self.dir / "sshd_config").write_text(
            f"""\
# {self.alias}: a fake Mac for pyinfra-orbstack's tests (pyshim/tests/remote_macs.py)
Port {self.port}
ListenAddress 127.0.0.1
AddressFamily inet
HostKey {self.host_key}
PidFile {self.dir / "sshd.pid"}
AuthorizedKeysFile {self.dir / "authorized_keys"}
StrictModes no
UsePAM no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitUserEnvironment no
UseDNS no
PrintMotd no
PrintLastLog no
MaxStartups 100
MaxSessions 100
Subsystem sftp internal-sftp
# No AcceptEnv: the client's environment never reaches the Mac.
# Every session's PATH and ORBSIM_HOME (SetEnv overrides sshd's default PATH).
SetEnv PATH={self.path} ORBSIM_HOME={self.home}{"".join(f" {k}={v}" for k, v in self.session_env.items())}
""")

    def _start(self) -> None:
        PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        for _ in range(5):
            self.port = self.port or _free_port()
            self._write_config()
            log = open(self.dir / "sshd.log", "ab")  # noqa: SIM115 (sshd keeps it)
            self.sshd = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.dir / "sshd_config")],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
            log.close()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.sshd.poll() is None:
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                        if s.recv(64).startswith(b"SSH-"):
                            return
                except OSError:
                    time.sleep(0.05)
            self.sshd.kill()
            self.sshd.wait()
            self.port = 0  # the port was taken between _free_port and sshd's bind: another
        raise RuntimeError(f"{self.alias}: sshd did not start; see {self.dir / 'sshd.log'}:\n"
                           f"{(self.dir / 'sshd.log').read_text()[-2000:]}")

    def kill_sshd(self) -> None:
        """The Mac drops off the network: kill -9 every per-connection sshd, then the
        listening sshd. Clients see their connections reset and new ones refused until
        `restart_sshd()`. The commands those sessions ran are not killed (on a Mac that
        lost the network they would run on): they lose their connection (EOF on stdin,
        errors writing output), and `FakeMacs.stop()` kills any still running."""
        if self.sshd is None:
            return
        under = _descendants(self.sshd.pid)
        sessions = [p for p in under if _is_sshd(p)]
        self.orphans += [(p, _start_time(p)) for p in under if p not in sessions]
        _kill(sessions)
        time.sleep(0.1)  # the listener reaps them (this box's pid 1 may not)
        _kill([self.sshd.pid])
        self.sshd.wait()
        self.sshd = None

    def restart_sshd(self) -> None:
        """The Mac is back: a new sshd on the same port, with the same keys and config."""
        self.kill_sshd()
        self._start()

    def stop(self) -> None:
        """kill -9 the sshd, its sessions and whatever they run or ran."""
        if self.sshd is not None:
            self.orphans += [(p, _start_time(p)) for p in _descendants(self.sshd.pid)]
            self.kill_sshd()
        _kill([pid for pid, started in self.orphans if started is not None and _start_time(pid) == started])
        self.orphans = []

    # Using the Mac

    def ssh(self, *remote_args: str, check: bool = False, timeout: float = 120,
            input: str | None = None) -> subprocess.CompletedProcess:
        """The system `ssh -F SSH_CONFIG ALIAS REMOTE_ARGS...` (a remote shell joins the
        arguments, as ssh always does: quote them)."""
        result = _run(["ssh", "-F", str(self.macs.ssh_config), self.alias, *remote_args], timeout=timeout,
                      input=input if input is not None else "")
        if check and result.returncode != 0:
            raise AssertionError(f"ssh {self.alias} {' '.join(remote_args)} failed ({result.returncode}): "
                                 f"{result.stderr}")
        return result

    def orbctl(self, *args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess:
        """The checkout's bin/orbctl, run here with this Mac's ORBSIM_HOME (not over ssh:
        what the Mac's OrbStack says, whatever ssh does)."""
        result = _run([str(self.macs.bin / "orbctl"), *args], env=self.env, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"{self.alias}: orbctl {' '.join(args)} failed: {result.stderr}")
        return result

    @property
    def pyinfra_ssh_data(self) -> dict[str, object]:
        """Host data for pyinfra's @ssh connector (paramiko: it does not read the ssh_config)."""
        return {
            "ssh_hostname": "127.0.0.1",
            "ssh_port": self.port,
            "ssh_user": "root",
            "ssh_key": self.key,
            "ssh_known_hosts_file": str(self.macs.known_hosts),
            "ssh_strict_host_key_checking": "yes",
            "ssh_allow_agent": False,
            "ssh_look_for_keys": False,
        }

    def delete_all(self) -> None:
        """Every machine of this Mac deleted and stopped (its home is the tests' own)."""
        self.orbctl("delete", "-a", "-f", check=False, timeout=600)
        self.orbctl("stop", "-a", check=False, timeout=120)


class _Macs:
    """What both kinds of Mac sets offer: by alias, in order, and this session's names."""

    prefix: str
    macs: dict

    def __getitem__(self, alias: str):
        return self.macs[alias]

    @property
    def list(self) -> list:
        """The Macs in the order they were started (or named)."""
        return [*self.macs.values()]

    def new_name(self, role: str) -> str:
        return f"{self.prefix}{role}"


class FakeMacs(_Macs):
    """The fake Macs of a test session, with their one ssh_config and known_hosts."""

    def __init__(self, bin_dir: Path, prefix: str, workdir: Path | None = None):
        self.bin = Path(bin_dir)  # the checkout's bin/ (pyinfra-orbstack, orbctl, orb)
        self.prefix = prefix  # machine names of this session (conftest's _session_prefix)
        self.dir = Path(tempfile.mkdtemp(prefix="fake-macs-", dir=workdir))
        self.ssh_config = self.dir / "ssh_config"
        self.known_hosts = self.dir / "known_hosts"
        self.env = dict(os.environ, **{SSH_CONFIG_VARIABLE: str(self.ssh_config)})
        self.macs: dict[str, FakeMac] = {}

    def start(self, alias: str, binary: bool = True, session_env: dict[str, str] | None = None) -> FakeMac:
        """A new fake Mac `alias` (`binary=False`: no pyinfra-orbstack on its PATH;
        `session_env`: more variables every session of it sees)."""
        assert alias not in self.macs, alias
        mac = FakeMac(self, alias, binary=binary, session_env=session_env)
        self.macs[alias] = mac
        self._write_client_files()
        return mac

    def _write_client_files(self) -> None:
        hosts, config = [], []
        for mac in self.macs.values():
            public = Path(mac.host_key + ".pub").read_text().split()
            hosts.append(f"[127.0.0.1]:{mac.port} {public[0]} {public[1]}\n")
            config.append(f"Host {mac.alias}\n  HostName 127.0.0.1\n  Port {mac.port}\n  User root\n"
                          f"  IdentityFile {mac.key}\n  IdentitiesOnly yes\n"
                          f"  UserKnownHostsFile {self.known_hosts}\n  GlobalKnownHostsFile /dev/null\n"
                          f"  StrictHostKeyChecking yes\n  BatchMode yes\n  ConnectTimeout 10\n"
                          f"  LogLevel ERROR\n\n")
        self.known_hosts.write_text("".join(hosts))
        self.ssh_config.write_text("".join(config))

    def stop(self) -> None:
        """Deletes every machine of every fake Mac, stops their sshds; nothing is left running."""
        for mac in self.macs.values():
            mac.stop()
            mac.delete_all()
        shutil.rmtree(self.dir, ignore_errors=True)


class RealMac:
    """A real Mac with OrbStack, by its ssh alias (the user's ssh config, or the file
    PYINFRA_ORBSTACK_SSH_CONFIG names), with pyinfra-orbstack on the PATH of its
    non-interactive shells."""

    def __init__(self, alias: str, prefix: str):
        self.alias = alias
        self.prefix = prefix
        self.ssh_config = os.environ.get(SSH_CONFIG_VARIABLE) or None

    def ssh(self, *remote_args: str, check: bool = False, timeout: float = 120,
            input: str | None = None) -> subprocess.CompletedProcess:
        config = ["-F", self.ssh_config] if self.ssh_config else []
        result = _run(["ssh", *config, "-o", "BatchMode=yes", self.alias, *remote_args], timeout=timeout,
                      input=input if input is not None else "")
        if check and result.returncode != 0:
            raise AssertionError(f"ssh {self.alias} {' '.join(remote_args)} failed ({result.returncode}): "
                                 f"{result.stderr}")
        return result

    def orbctl(self, *args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess:
        """The Mac's own orbctl, over ssh."""
        result = self.ssh("orbctl", *map(shlex.quote, args), timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"{self.alias}: orbctl {' '.join(args)} failed: {result.stderr}")
        return result

    @property
    def pyinfra_ssh_data(self) -> dict[str, object]:
        """pyinfra's @ssh reads ~/.ssh/config for the alias itself."""
        return {"ssh_config_file": self.ssh_config} if self.ssh_config else {}

    def delete_all(self) -> None:
        """Deletes only this session's machines (named with its prefix)."""
        listed = self.orbctl("list", "-q", check=False).stdout.split()
        ours = [m for m in listed if m.startswith(self.prefix)]
        if ours:
            self.orbctl("delete", "-f", *ours, check=False, timeout=600)


class RealMacs(_Macs):
    """The real Macs named by PYINFRA_ORBSTACK_TEST_REMOTE_MACS."""

    def __init__(self, aliases: list[str], prefix: str):
        self.prefix = prefix
        self.macs = {alias: RealMac(alias, prefix) for alias in aliases}
        self.ssh_config = os.environ.get(SSH_CONFIG_VARIABLE) or None
        self.env = dict(os.environ)

    def stop(self) -> None:
        for mac in self.macs.values():
            mac.delete_all()
