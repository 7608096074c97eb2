#!/usr/bin/env python3
"""make bench: the connector against a baseline measured in the same run.

Baselines, all against the same simulator machines in the same run:
  * the floor: bare `orbctl run -m M true` calls from a shell loop (what any connector
    must pay per command);
  * the prior art: elazar/pyinfra-orbstack 0.11.0 from PyPI, in its own venv (both
    packages register the `orbstack` connector, so they cannot share one).

ORBSIM_LATENCY (default 20ms) adds a fixed cost to every orbctl invocation, to model the
real orbctl's round trip into the OrbStack VM. Results are ratios of medians; wall times
on a shared 2-core machine are noisy, so compare ratios, not absolute numbers.
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / "bin"
OURS_VENV = ROOT / ".venv"
PRIOR_VENV = ROOT / ".cache" / "bench-prior-venv"
PRIOR_SPEC = "pyinfra-orbstack==0.11.0"
MACHINES = [f"bench-{i}" for i in range(1, 6)]


class StepFailed(Exception):
    pass


def run_measured(argv, env, cwd=None):
    """Run argv; return (seconds, peak RSS in MiB of the largest process in its tree)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.stdout.read()
    _, status, rusage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        tail = out.decode(errors="replace").strip().splitlines()[-3:]
        raise StepFailed(f"exit {code}: {' | '.join(tail)}")
    return elapsed, rusage.ru_maxrss / 1024


def median_of(n, fn):
    times, rss = [], []
    for _ in range(n):
        t, r = fn()
        times.append(t)
        rss.append(r)
    return statistics.median(times), max(rss)


def ensure_prior_venv():
    py = PRIOR_VENV / "bin" / "python"
    if (PRIOR_VENV / ".installed").exists():
        return py
    subprocess.run([sys.executable, "-m", "venv", str(PRIOR_VENV)], check=True)
    r = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", PRIOR_SPEC, "pyinfra>=3.10,<4"],
        capture_output=True, text=True,
    )
    if r.returncode != 0:
        print(f"prior art unavailable ({PRIOR_SPEC}): {r.stderr.strip()[-300:]}")
        return None
    (PRIOR_VENV / ".installed").touch()
    return py


DEPLOY = '''
from pyinfra.operations import server, files
for i in range(20):
    server.shell(name=f"cmd {i}", commands=[f"echo step {i} && test -d /tmp"])
files.put(name="small file", src="small.txt", dest="/tmp/bench-small.txt")
'''

BIG_PUT = '''
from pyinfra.operations import files
files.put(name="big file", src="big.bin", dest="/tmp/bench-big.bin")
'''


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--big-mb", type=int, default=100)
    ap.add_argument("--latency", default=os.environ.get("ORBSIM_LATENCY", "20ms"))
    args = ap.parse_args()

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
    try:
        for m in MACHINES:
            subprocess.run([orbctl, "create", "debian", m], env=env, check=True)
        (work / "deploy.py").write_text(DEPLOY)
        (work / "big.py").write_text(BIG_PUT)
        (work / "small.txt").write_text("hello\n")
        with open(work / "big.bin", "wb") as f:
            for _ in range(args.big_mb):
                f.write(os.urandom(1 << 20))

        n_cmds = 20
        floor = median_of(args.repeat, lambda: run_measured(
            ["sh", "-c", f'for i in $(seq {n_cmds}); do orbctl run -m {MACHINES[0]} true; done'], env))

        inventory = ",".join(f"@orbstack/{m}" for m in MACHINES)
        prior_py = ensure_prior_venv()
        venvs = [("ours", OURS_VENV / "bin" / "pyinfra")]
        if prior_py:
            venvs.append(("prior", PRIOR_VENV / "bin" / "pyinfra"))

        scenarios = {
            "deploy": lambda py: run_measured([str(py), "-y", inventory, "deploy.py"], env, cwd=work),
            "exec": lambda py: run_measured([str(py), inventory, "exec", "--", "hostname"], env, cwd=work),
            "big": lambda py: big_put(py),
        }

        def big_put(py):
            # Each repetition must upload again, not find the file unchanged.
            subprocess.run([orbctl, "run", "-m", MACHINES[0], "rm", "-f", "/tmp/bench-big.bin"], env=env)
            return run_measured([str(py), "-y", f"@orbstack/{MACHINES[0]}", "big.py"], env, cwd=work)

        results, failures = {}, {}
        for label, pyinfra in venvs:
            for key, scenario in scenarios.items():
                try:
                    results[(label, key)] = median_of(args.repeat, lambda: scenario(pyinfra))
                except StepFailed as e:
                    if label == "ours":
                        raise SystemExit(f"benchmark scenario {key!r} failed for our connector: {e}")
                    failures[(label, key)] = str(e)

        print(f"\nORBSIM_LATENCY={args.latency}, median of {args.repeat}, 2-core shared machine\n")
        print(f"{'scenario':<52} {'ours':>9} {'prior':>9} {'prior/ours':>10} {'RSS ours':>9} {'RSS prior':>9}")
        print(f"{'floor: 20 sequential `orbctl run true`':<52} {floor[0]:>8.2f}s {'':>9} {'':>10} {'':>9}")
        for key, title in [("deploy", "deploy: 5 machines x (20 shell ops + 1 put)"),
                           ("exec", "exec -- hostname over 5 machines"),
                           ("big", f"files.put of {args.big_mb} MB, 1 machine")]:
            ours = results[("ours", key)]
            prior = results.get(("prior", key))
            if prior:
                print(f"{title:<52} {ours[0]:>8.2f}s {prior[0]:>8.2f}s {prior[0] / ours[0]:>9.2f}x"
                      f" {ours[1]:>7.0f}MB {prior[1]:>7.0f}MB")
            else:
                status = "FAILED" if ("prior", key) in failures else "n/a"
                print(f"{title:<52} {ours[0]:>8.2f}s {status:>9} {'':>10} {ours[1]:>7.0f}MB")
        for (label, key), why in failures.items():
            print(f"  {label} failed {key}: {why}")
        per_cmd_floor = floor[0] / n_cmds
        ours_deploy = results[("ours", "deploy")][0]
        print(f"\nfloor per orbctl call: {per_cmd_floor * 1000:.0f} ms; ours, deploy per host-op "
              f"(5 hosts in parallel): {ours_deploy / 21 * 1000:.0f} ms per op-step")
    finally:
        subprocess.run([orbctl, "stop", "-a"], env=env, capture_output=True)
        subprocess.run([orbctl, "delete", "-f", "-a"], env=env, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
