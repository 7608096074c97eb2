#!/usr/bin/env bash
# make demo: examples/01-first-deploy run against simulator machines exactly as its
# README says (the inventory creates the machine, nginx comes from Debian's archive
# through the simulator's package proxy), a second run that must change nothing, then
# the page fetched from the host (the Mac side) and, by NAME.orb.local, from another
# machine. Run from the repo root after `make build venv`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
export PATH="$root/bin:$root/.venv/bin:$PATH"
export ORBSIM_HOME="${ORBSIM_HOME:-$root/.cache/demo-orbsim}"
export PYINFRA_ORBSTACK_BINARY="$root/bin/pyinfra-orbstack"
export EXAMPLE_PREFIX=demo-  # the example's machine is demo-hello
web=demo-hello client=demo-client
say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

say "orbctl is the simulator: $(command -v orbctl) (state in $ORBSIM_HOME)"
pyinfra-orbstack doctor || true

for m in "$web" "$client"; do
  if orbctl info "$m" >/dev/null 2>&1; then
    say "machine $m exists; making sure it runs"
    orbctl start "$m"
    # A machine started before the simulator had package access gets it at a start.
    orbctl run -m "$m" test -e /etc/apt/apt.conf.d/80orbsim-proxy || orbctl restart "$m"
  elif [ "$m" = "$client" ]; then
    say "orbctl create debian $m (a second machine, to fetch the page by name)"
    orbctl create debian "$m"
  fi
done

cd "$root/examples/01-first-deploy"
say "examples/01-first-deploy: pyinfra -y inventory.py deploy.py (creates $web on first connect)"
pyinfra -y inventory.py deploy.py

say "second run: nothing should change"
out=$(pyinfra -y inventory.py deploy.py 2>&1) || { echo "$out"; exit 1; }
echo "$out" | sed -n '/Operation/,$p'
# pyinfra's results table: Operation, Hosts, Success, Error, No Change; Success counts changes.
changed=$(echo "$out" | awk '/Grand total/ {print $4}')
if [ "$changed" != "-" ] && [ "$changed" != "0" ]; then
  echo "the second run changed something (Success column: $changed)" >&2
  exit 1
fi
echo "second run: no changes"
orbctl list

ip=$(orbctl info "$web" -f json | python -c 'import json, sys; print(json.load(sys.stdin)["ip4"])')
say "the page, from the Mac side (http://$web.orb.local/; this host does not resolve .orb.local, so by address: $ip)"
curl -fsS --noproxy '*' -m 10 --resolve "$web.orb.local:80:$ip" "http://$web.orb.local/"
say "the page, from the other machine (orbctl run -m $client curl http://$web.orb.local/)"
orbctl run -m "$client" curl -fsS -m 10 "http://$web.orb.local/"

say "pyinfra @orbstack exec -- hostname (every machine, in parallel)"
pyinfra @orbstack exec -- hostname

say "done. Machines keep running; stop them with: ORBSIM_HOME=$ORBSIM_HOME bin/orbctl stop -a"
