"""What deploy metrics cost: the same deploy (N one-command operations on one
simulator machine) through the real pyinfra CLI, metrics off and on, alternating,
ROUNDS times each; prints the medians and the difference.

    PATH=$PWD/bin:$PATH PYINFRA_ORBSTACK_BINARY=$PWD/bin/pyinfra-orbstack \\
        .venv/bin/python pyshim/bench/metrics_overhead.py [N] [ROUNDS]

Uses its own ORBSIM_HOME and deletes its machine at the end.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

N = int(sys.argv[1]) if len(sys.argv) > 1 else 200
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 7
PYINFRA = Path(sys.executable).with_name("pyinfra")


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="metrics-bench-"))
    env = dict(os.environ, ORBSIM_HOME=str(work / "orbsim"))
    env.pop("PYINFRA_ORBSTACK_METRICS", None)
    subprocess.run(["orbctl", "create", "debian", "bench"], env=env, check=True, capture_output=True)
    (work / "deploy.py").write_text("from pyinfra.operations import server\n" + "".join(
        f"server.shell(name='op {i}', commands=['true'])\n" for i in range(N)))
    times: dict[str, list[float]] = {"off": [], "on": []}
    try:
        for _ in range(ROUNDS):
            for mode in ("off", "on"):
                run_env = dict(env, PYINFRA_ORBSTACK_METRICS=str(work / "m.json")) if mode == "on" else env
                start = time.perf_counter()
                subprocess.run([str(PYINFRA), "-y", "@orbstack/bench", "deploy.py"], env=run_env, cwd=work,
                               check=True, capture_output=True)
                times[mode].append(time.perf_counter() - start)
    finally:
        subprocess.run(["orbctl", "delete", "-f", "bench"], env=env, capture_output=True)
    off, on = statistics.median(times["off"]), statistics.median(times["on"])
    print(f"{N} operations, {ROUNDS} rounds each, alternating")
    print(f"metrics off: median {off:.3f} s  (runs: {', '.join(f'{t:.2f}' for t in times['off'])})")
    print(f"metrics on:  median {on:.3f} s  (runs: {', '.join(f'{t:.2f}' for t in times['on'])})")
    print(f"on vs off: {100 * (on - off) / off:+.2f}%")


if __name__ == "__main__":
    main()
