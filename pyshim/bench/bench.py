#!/usr/bin/env python3
"""make bench: the connector against baselines measured in the same run.

Every scenario is a real `pyinfra` run (a deploy file or `exec`), timed from outside.
Baselines, all in the same run and against the same simulator machines:
  * @local: pyinfra running the same deploy on this machine (what output handling and
    transfers cost without any connector in between);
  * the floor: bare `orbctl run -m M true` calls from a shell loop (what any connector
    must pay per command);
  * the prior art: elazar/pyinfra-orbstack 0.11.0 from PyPI, in its own venv (both
    packages register the `orbstack` connector, so they cannot share one);
  * with --before REV: this project at an earlier commit (its binary and shim built in
    .cache/bench-before-REV), for before/after tables;
  * for a remote Mac (scenarios remote, scp): a fake Mac (pyshim/tests/remote_macs.py:
    an sshd on 127.0.0.1 with its own simulator state, the same --latency), against
    the same deploy on this Mac, and `scp` of the same file to that Mac.

--latency (default: $ORBSIM_LATENCY, else 20ms, the modelled cost of one real orbctl
call into the OrbStack VM) is added to every orbctl invocation. Results are medians;
wall times on a shared 2-core machine are noisy, so compare the ratios, which hold
across runs, not the absolute numbers. Peak RSS is each process's own high-water mark:
the pyinfra process (Python) and, separately, the pyinfra-orbstack binary.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / "bin"
OURS_VENV = ROOT / ".venv"
CACHE = ROOT / ".cache"
PRIOR_VENV = CACHE / "bench-prior-venv"
PRIOR_SPEC = "pyinfra-orbstack==0.11.0"
MACHINES = [f"bench-{i}" for i in range(1, 11)]

# Runs pyinfra's CLI in this very process and records the process's own peak RSS
# (KiB) at exit, so that the figure is Python's and not the largest child's.
PYINFRA_RSS = """\
import atexit, os, resource, sys
def _report():
    with open(os.environ["BENCH_PY_RSS"], "a") as f:
        f.write("%d\\n" % resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
atexit.register(_report)
from pyinfra_cli.main import main
sys.argv[0] = "pyinfra"
sys.exit(main())
"""

# Stands in for the pyinfra-orbstack binary: runs the real one (same stdio) and
# records its peak RSS (KiB) when it exits.
BINARY_RSS = """\
import os, signal, subprocess, sys
proc = subprocess.Popen([os.environ["BENCH_REAL_BINARY"], *sys.argv[1:]])
for sig in (signal.SIGINT, signal.SIGTERM):
    signal.signal(sig, lambda s, f: proc.send_signal(s))
_, status, usage = os.wait4(proc.pid, 0)
with open(os.environ["BENCH_BIN_RSS"], "a") as f:
    f.write("%d\\n" % usage.ru_maxrss)
sys.exit(os.waitstatus_to_exitcode(status))
"""


class StepFailed(Exception):
    pass


@dataclass
class Side:
    """One thing measured: a pyinfra venv, and the binary its shim uses (ours only)."""

    label: str
    venv: Path
    binary: Path | None = None
    env: dict[str, str] = field(default_factory=dict)  # extra environment


@dataclass
class Measure:
    seconds: float
    py_mib: float = 0.0
    bin_mib: float = 0.0
    runs: list[float] = field(default_factory=list)


def max_kib(path: Path) -> float:
    try:
        values = [int(v) for v in path.read_text().split()]
    except FileNotFoundError:
        return 0.0
    path.unlink()
    return max(values, default=0) / 1024


class Bench:
    def __init__(self, work: Path, env: dict[str, str], repeat: int) -> None:
        self.work, self.env, self.repeat = work, env, repeat
        (work / "pyinfra_rss.py").write_text(PYINFRA_RSS)
        wrapper = work / "binary_rss"
        wrapper.write_text(f"#!{sys.executable}\n" + BINARY_RSS)
        wrapper.chmod(0o755)

    def pyinfra_once(self, side: Side, args: list[str]) -> Measure:
        env = dict(self.env, BENCH_PY_RSS=str(self.work / "py.rss"), BENCH_BIN_RSS=str(self.work / "bin.rss"),
                   **side.env)
        if side.binary is not None:
            env.update(BENCH_REAL_BINARY=str(side.binary), PYINFRA_ORBSTACK_BINARY=str(self.work / "binary_rss"))
        argv = [str(side.venv / "bin" / "python"), str(self.work / "pyinfra_rss.py"), *args]
        start = time.perf_counter()
        proc = subprocess.run(argv, env=env, cwd=self.work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            tail = proc.stdout.decode(errors="replace").strip().splitlines()[-3:]
            raise StepFailed(f"exit {proc.returncode}: {' | '.join(tail)}")
        return Measure(elapsed, max_kib(self.work / "py.rss"), max_kib(self.work / "bin.rss"))

    def median(self, fn, repeat: int | None = None) -> Measure:
        runs = [fn() for _ in range(repeat or self.repeat)]
        return Measure(statistics.median(r.seconds for r in runs),
                       max(r.py_mib for r in runs), max(r.bin_mib for r in runs), [r.seconds for r in runs])

    def shell_loop(self, script: str) -> Measure:
        def once() -> Measure:
            start = time.perf_counter()
            subprocess.run(["sh", "-c", script], env=self.env, check=True, capture_output=True)
            return Measure(time.perf_counter() - start)
        return self.median(once)


def ensure_prior_venv() -> Path | None:
    py = PRIOR_VENV / "bin" / "python"
    if (PRIOR_VENV / ".installed").exists():
        return PRIOR_VENV
    subprocess.run([sys.executable, "-m", "venv", str(PRIOR_VENV)], check=True)
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", PRIOR_SPEC, "pyinfra>=3.10,<4"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        print(f"prior art unavailable ({PRIOR_SPEC}): {r.stderr.strip()[-300:]}")
        return None
    (PRIOR_VENV / ".installed").touch()
    return PRIOR_VENV


def ensure_before(rev: str) -> Side:
    """This project at REV: its binary and a venv with its shim, built once per commit."""
    sha = subprocess.run(["git", "rev-parse", "--short", rev], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.strip()
    tree = CACHE / f"bench-before-{sha}"
    if not (tree / ".installed").exists():
        shutil.rmtree(tree, ignore_errors=True)
        subprocess.run(["git", "worktree", "prune"], cwd=ROOT, check=True)
        subprocess.run(["git", "worktree", "add", "--detach", "-f", str(tree), sha], cwd=ROOT, check=True,
                       capture_output=True)
        subprocess.run(["go", "build", "-o", "bin/pyinfra-orbstack", "./cmd/pyinfra-orbstack"], cwd=tree, check=True)
        subprocess.run([sys.executable, "-m", "venv", ".venv"], cwd=tree, check=True)
        subprocess.run([str(tree / ".venv/bin/python"), "-m", "pip", "install", "-q", "gevent>=24", "-e", "pyshim"],
                       cwd=tree, check=True)
        (tree / ".installed").touch()
    return Side(f"before ({sha})", tree / ".venv", tree / "bin" / "pyinfra-orbstack")


def ops_deploy(n: int) -> str:
    return ("from pyinfra.operations import server\n"
            f"for i in range({n}):\n"
            "    server.shell(name=f'op {i}', commands=[f'echo step {i}'])\n")


DEPLOY5 = '''
from pyinfra.operations import server, files
for i in range(20):
    server.shell(name=f"cmd {i}", commands=[f"echo step {i} && test -d /tmp"])
files.put(name="small file", src="small.txt", dest="/tmp/bench-small.txt")
'''

LINES = "from pyinfra.operations import server\nserver.shell(name='lines', commands=['seq {n}'])\n"

# ~BYTES of output in 100-byte lines.
BULK = ("from pyinfra.operations import server\n"
        "server.shell(name='bulk', commands=[\"yes {line} | head -c {size}\"])\n")

BIG_PUT = ("from pyinfra.operations import files\n"
           "files.put(name='big file', src='big.bin', dest='{dest}', force=True)\n")


def start_remote_mac(work: Path, env: dict[str, str], latency: str):
    """A fake remote Mac with one machine: (the Macs, our Side reaching it, its host name)."""
    sys.path.insert(0, str(ROOT / "pyshim" / "tests"))
    import remote_macs as harness  # the tests' fake Macs: sshd on 127.0.0.1, own ORBSIM_HOME

    macs = harness.FakeMacs(BIN, "bench-", work)
    try:
        mac = macs.start("bench-mac", session_env={"ORBSIM_LATENCY": latency})
        mac.orbctl("create", "debian", "bench-r1")
    except BaseException:
        macs.stop()
        raise
    remote = Side("ours, remote Mac", OURS_VENV, BIN / "pyinfra-orbstack",
                  env={harness.SSH_CONFIG_VARIABLE: str(macs.ssh_config)})
    return macs, remote, f"@orbstack/{mac.alias}:bench-r1"


@dataclass
class Row:
    title: str
    goal: str
    baseline: str
    base: Measure | None
    ours: Measure
    before: Measure | None = None
    note: str = ""
    invert: bool = False  # the ratio shown is base/ours (how much slower the baseline is)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3, help="runs per measurement (the median is shown)")
    ap.add_argument("--latency", default=os.environ.get("ORBSIM_LATENCY", "20ms"),
                    help="added to every orbctl call (default: $ORBSIM_LATENCY or 20ms, the modelled Mac cost)")
    ap.add_argument("--lines", type=int, default=300000, help="lines printed by the output scenario")
    ap.add_argument("--bulk-mb", type=int, default=200, help="MB printed by the bulk output scenario")
    ap.add_argument("--big-mb", type=int, default=512, help="MiB uploaded by the files.put scenario")
    ap.add_argument("--before", metavar="REV", help="also measure this project at commit REV")
    ap.add_argument("--only", help="comma-separated scenarios: floor,deploy5,exec,ops (with metrics on/off),"
                                   "fanout,lines,bulk,put,remote,scp")
    ap.add_argument("--remote-mb", type=int, default=256, help="MiB uploaded by the scp scenario")
    args = ap.parse_args()
    only = set(args.only.split(",")) if args.only else None

    def wanted(name: str) -> bool:
        return only is None or name in only

    if os.geteuid() != 0:
        raise SystemExit("make bench needs root: the simulator's machines use namespaces and overlayfs")
    work = Path(tempfile.mkdtemp(prefix="orbstack-bench-"))
    env = dict(os.environ)
    env.update(
        PATH=f"{BIN}:{env.get('PATH', '')}",
        ORBSIM_HOME=str(work / "orbsim"),
        ORBSIM_LATENCY=args.latency,
        PYINFRA_ORBSTACK_BINARY=str(BIN / "pyinfra-orbstack"),
        PYINFRA_ORBSTACK_ORBCTL=str(BIN / "orbctl"),
    )
    orbctl = str(BIN / "orbctl")
    bench = Bench(work, env, args.repeat)
    ours = Side("ours", OURS_VENV, BIN / "pyinfra-orbstack")
    local = Side("@local", OURS_VENV)
    prior_venv = ensure_prior_venv()
    prior = Side("prior", prior_venv) if prior_venv else None
    before = ensure_before(args.before) if args.before else None
    rows: list[Row] = []
    macs = None

    def compare(side: Side | None, args_: list[str], repeat: int | None = None) -> Measure | None:
        if side is None:
            return None
        try:
            return bench.median(lambda: bench.pyinfra_once(side, args_), repeat)
        except StepFailed as e:
            if side is ours:
                raise SystemExit(f"a benchmark failed for our connector: {' '.join(args_)}: {e}")
            print(f"  {side.label} failed {' '.join(args_)}: {e}")
            return None

    try:
        n_machines = 10 if wanted("fanout") else 5
        for m in MACHINES[:n_machines]:
            subprocess.run([orbctl, "create", "debian", m], env=env, check=True, capture_output=True)
        one = f"@orbstack/{MACHINES[0]}"
        five = ",".join(f"@orbstack/{m}" for m in MACHINES[:5])

        def files(**contents: str) -> None:
            for name, text in contents.items():
                (work / name).write_text(text)

        if wanted("floor"):
            floor = bench.shell_loop(f"for i in $(seq 20); do orbctl run -m {MACHINES[0]} true; done")
            rows.append(Row("floor: 20 sequential `orbctl run true`", "", "", None, floor,
                            note=f"{floor.seconds / 20 * 1000:.0f} ms per orbctl call"))
        if wanted("lines"):
            files(**{"lines.py": LINES.format(n=args.lines)})
            cmd = ["-y", "lines.py"]
            rows.append(Row(f"one command printing {args.lines} lines (seq)", "<= 1.3x @local", "@local",
                            compare(local, ["-y", "@local", *cmd[1:]]), compare(ours, [one, *cmd]),
                            compare(before, [one, *cmd])))
        if wanted("bulk"):
            size = args.bulk_mb * 1000 * 1000
            files(**{"bulk.py": BULK.format(line="x" * 99, size=size)})
            cmd = ["-y", "bulk.py"]
            rows.append(Row(f"one command printing {args.bulk_mb} MB (100-byte lines)",
                            "<= 1.5x @local, Python RSS <= 1.1x", "@local",
                            compare(local, ["-y", "@local", "bulk.py"], 1), compare(ours, [one, *cmd], 1),
                            compare(before, [one, *cmd], 1), note="one run each"))
        if wanted("ops"):
            files(**{"ops200.py": ops_deploy(200)})
            base = compare(prior, ["-y", one, "ops200.py"])
            mine = compare(ours, ["-y", one, "ops200.py"])
            rows.append(Row("200 one-line ops, one machine", "prior >= 6x ours", "prior", base, mine,
                            compare(before, ["-y", one, "ops200.py"]), invert=True))
            rows.append(Row("200 one-line ops on @local (reference)", "", "@local", None,
                            compare(local, ["-y", "@local", "ops200.py"])))
            metrics = Side("ours, metrics on", OURS_VENV, BIN / "pyinfra-orbstack",
                           env={"PYINFRA_ORBSTACK_METRICS": str(work / "metrics.json")})
            # Off and on alternate, so that a change of load on a shared box
            # falls on both alike (2% is below what sequential medians resolve).
            off_runs, on_runs = [], []
            for _ in range(max(args.repeat, 5)):
                off_runs.append(bench.pyinfra_once(ours, ["-y", one, "ops200.py"]))
                on_runs.append(bench.pyinfra_once(metrics, ["-y", one, "ops200.py"]))
            off, on = (Measure(statistics.median(r.seconds for r in runs), max(r.py_mib for r in runs),
                               max(r.bin_mib for r in runs)) for runs in (off_runs, on_runs))
            rows.append(Row("200 ops with deploy metrics on vs off, alternating", "< 1.02x", "off", off, on,
                            note=f"{len(on_runs)} pairs"))
        if wanted("fanout"):
            files(**{"ops20.py": ops_deploy(20)})
            ten = ",".join(f"@orbstack/{m}" for m in MACHINES[:10])
            single = compare(ours, ["-y", one, "ops20.py"])
            rows.append(Row("20 ops on 10 machines vs on 1 machine", "<= 1.8x", "1 machine", single,
                            compare(ours, ["-y", ten, "ops20.py"]), compare(before, ["-y", ten, "ops20.py"])))
        if wanted("deploy5"):
            files(**{"deploy5.py": DEPLOY5, "small.txt": "hello\n"})
            rows.append(Row("5 machines x (20 shell ops + 1 put)", "", "prior",
                            compare(prior, ["-y", five, "deploy5.py"]), compare(ours, ["-y", five, "deploy5.py"]),
                            compare(before, ["-y", five, "deploy5.py"]), invert=True))
        if wanted("exec"):
            rows.append(Row("exec -- hostname over 5 machines", "", "prior",
                            compare(prior, [five, "exec", "--", "hostname"]),
                            compare(ours, [five, "exec", "--", "hostname"]),
                            compare(before, [five, "exec", "--", "hostname"]), invert=True))
        if wanted("put"):
            with open(work / "big.bin", "wb") as f:
                for _ in range(args.big_mb):
                    f.write(os.urandom(1 << 20))
            files(**{"put-machine.py": BIG_PUT.format(dest="/tmp/bench-big.bin"),
                     "put-local.py": BIG_PUT.format(dest=str(work / "local-dest.bin"))})
            rows.append(Row(f"files.put of {args.big_mb} MiB (force), 1 machine", "", "@local",
                            compare(local, ["-y", "@local", "put-local.py"]),
                            compare(ours, ["-y", one, "put-machine.py"]),
                            compare(before, ["-y", one, "put-machine.py"])))

        if wanted("remote") or wanted("scp"):
            macs, remote, remote_host = start_remote_mac(work, env, args.latency)
        if wanted("remote"):
            files(**{"ops20.py": ops_deploy(20)})
            # Alternated, so that a change of load falls on both alike.
            here_runs, there_runs = [], []
            for _ in range(max(args.repeat, 3)):
                here_runs.append(bench.pyinfra_once(ours, ["-y", one, "ops20.py"]))
                there_runs.append(bench.pyinfra_once(remote, ["-y", remote_host, "ops20.py"]))
            here, there = (Measure(statistics.median(r.seconds for r in runs), max(r.py_mib for r in runs),
                                   max(r.bin_mib for r in runs)) for runs in (here_runs, there_runs))
            rows.append(Row("20 ops, machine on a remote Mac vs on this Mac", "", "this Mac", here, there,
                            note=f"{len(here_runs)} pairs, alternating; sshd on 127.0.0.1"))
        if wanted("scp"):
            assert macs is not None
            big = work / "remote-big.bin"
            with open(big, "wb") as f:
                for _ in range(args.remote_mb):
                    f.write(os.urandom(1 << 20))
            files(**{"put-remote.py": BIG_PUT.replace("big.bin", big.name).format(dest="/tmp/bench-remote.bin"),
                     "put-remote-tiny.py": BIG_PUT.replace("big.bin", "small.txt").format(dest="/tmp/bench-tiny"),
                     "small.txt": "hello\n"})
            mac = macs.list[0]
            scp = bench.shell_loop(f"scp -q -F {macs.ssh_config} {big} {mac.alias}:{mac.dir}/scp-dest.bin")
            whole = compare(remote, ["-y", remote_host, "put-remote.py"])
            tiny = compare(remote, ["-y", remote_host, "put-remote-tiny.py"])
            assert whole is not None and tiny is not None
            # The transfer's own time: the run with the big file less the same run with a
            # 6-byte one (pyinfra's start, connect, ssh handshake, facts).
            net = Measure(max(whole.seconds - tiny.seconds, 1e-3), whole.py_mib, whole.bin_mib)
            rows.append(Row(f"files.put of {args.remote_mb} MiB to a remote Mac's machine vs scp", "<= 1.43x (>= 0.7x scp's throughput)",
                            "scp", scp, net,
                            note=f"ours {args.remote_mb / net.seconds:.0f} MiB/s net of a 6-byte put's run "
                                 f"({whole.seconds:.2f}s - {tiny.seconds:.2f}s), scp {args.remote_mb / scp.seconds:.0f} MiB/s"))

        print(f"\nORBSIM_LATENCY={args.latency}, median of {args.repeat} unless noted, {os.cpu_count()}-core machine")
        print("ratio = ours / baseline (lower is better), or baseline / ours where the goal says so\n")
        head = f"{'scenario':<50} {'baseline':>16} {'ours':>8} {'ratio':>7} {'goal':<36} {'RSS py base/ours':>17} {'RSS bin':>8}"
        if before:
            head += f" {before.label:>20}"
        print(head)
        for row in rows:
            base = f"{row.baseline} {row.base.seconds:.2f}s" if row.base else ("" if not row.baseline else "n/a")
            ratio = ""
            if row.base:
                r = row.base.seconds / row.ours.seconds if row.invert else row.ours.seconds / row.base.seconds
                ratio = f"{r:.2f}x"
            rss = f"{row.base.py_mib:.0f}/{row.ours.py_mib:.0f}MB" if row.base and row.base.py_mib else (
                f"{row.ours.py_mib:.0f}MB" if row.ours.py_mib else "")
            binrss = f"{row.ours.bin_mib:.0f}MB" if row.ours.bin_mib else ""
            line = f"{row.title:<50} {base:>16} {row.ours.seconds:>7.2f}s {ratio:>7} {row.goal:<36} {rss:>17} {binrss:>8}"
            if before:
                line += f" {row.before.seconds:>7.2f}s {row.before.py_mib:>4.0f}/{row.before.bin_mib:.0f}MB" if row.before else "        n/a"
            if row.note:
                line += f"  ({row.note})"
            print(line)
    finally:
        if macs is not None:
            macs.stop()
        subprocess.run([orbctl, "stop", "-a"], env=env, capture_output=True)
        subprocess.run([orbctl, "delete", "-f", "-a"], env=env, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
