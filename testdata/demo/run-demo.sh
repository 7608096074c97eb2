#!/usr/bin/env bash
# make demo: two simulator machines, a real pyinfra deploy against them (nginx from
# Debian's archive on one, through the simulator's package proxy), then a second run
# that must report no changes, and the page fetched from the host and from the other
# machine. Run from the repo root after `make build venv`.
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
    # A machine started before the simulator had package access gets it at a start.
    orbctl run -m "$m" test -e /etc/apt/apt.conf.d/80orbsim-proxy || orbctl restart "$m"
  else
    say "orbctl create debian $m"
    orbctl create debian "$m"
  fi
done
orbctl list

cd "$root/testdata/demo"
say "pyinfra -y inventory.py deploy.py (nginx from Debian's archive on demo-web)"
"$pyinfra" -y inventory.py deploy.py

say "second run: nothing should change"
out=$("$pyinfra" -y inventory.py deploy.py 2>&1) || { echo "$out"; exit 1; }
echo "$out" | sed -n '/Operation/,$p'
# pyinfra's results table: Operation, Hosts, Success, Error, No Change; Success counts changes.
changed=$(echo "$out" | awk '/Grand total/ {print $4}')
if [ "$changed" != "-" ] && [ "$changed" != "0" ]; then
  echo "the second run changed something (Success column: $changed)" >&2
  exit 1
fi
echo "second run: no changes"

ip=$(orbctl info demo-web -f json | "$root/.venv/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["ip4"])')
say "the page, from the Mac side (http://$ip/)"
curl -fsS --noproxy '*' -m 10 "http://$ip/"
say "the page, from the other machine (orbctl run -m demo-db curl http://demo-web.orb.local/)"
orbctl run -m demo-db curl -fsS -m 10 http://demo-web.orb.local/

say "pyinfra @orbstack exec -- hostname (every machine, in parallel)"
"$pyinfra" @orbstack exec -- hostname

say "a file written by the deploy, read back with orbctl"
orbctl run -m demo-web cat /srv/app/app.conf

say "done. Machines keep running; stop them with: ORBSIM_HOME=$ORBSIM_HOME bin/orbctl stop -a"
