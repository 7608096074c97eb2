#!/usr/bin/env bash
# make demo: two simulator machines, a real pyinfra deploy against them, then a second
# run that must report no changes. Run from the repo root after `make build venv`.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
export PATH="$root/bin:$PATH"
export ORBSIM_HOME="${ORBSIM_HOME:-$root/.cache/demo-orbsim}"
export PYINFRA_ORBSTACK_BINARY="$root/bin/pyinfra-orbstack"
pyinfra="$root/.venv/bin/pyinfra"
say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

say "orbctl is the simulator: $(command -v orbctl) (state in $ORBSIM_HOME)"
pyinfra-orbstack doctor || true

for m in demo-web demo-db; do
  if orbctl info "$m" >/dev/null 2>&1; then
    say "machine $m exists; making sure it runs"
    orbctl start "$m"
  else
    say "orbctl create debian $m"
    orbctl create debian "$m"
  fi
done
orbctl list

cd "$root/testdata/demo"
say "pyinfra -y @orbstack/demo-web,@orbstack/demo-db deploy.py"
"$pyinfra" -y @orbstack/demo-web,@orbstack/demo-db deploy.py

say "second run: nothing should change"
out=$("$pyinfra" -y @orbstack/demo-web,@orbstack/demo-db deploy.py 2>&1) || { echo "$out"; exit 1; }
echo "$out" | sed -n '/Operation/,$p'
# Only the server.shell op (one per host) may count as a change on the second run.
changed=$(echo "$out" | awk '/Grand total/ {print $4}')
if [ "$changed" != "2" ]; then
  echo "second run changed more than the two server.shell commands (Success column: $changed)" >&2
  exit 1
fi
echo "second run: no changes besides the two server.shell commands"

say "pyinfra @orbstack exec -- hostname (every machine, in parallel)"
"$pyinfra" @orbstack exec -- hostname

say "a file written by the deploy, read back with orbctl"
orbctl run -m demo-web cat /srv/app/app.conf

say "done. Machines keep running; stop them with: ORBSIM_HOME=$ORBSIM_HOME bin/orbctl stop -a"
