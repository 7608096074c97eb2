#!/usr/bin/env bash
# A CI job on a throwaway OrbStack machine: create it with the lifecycle CLI, deploy,
# deploy again (the second run must change nothing), test, and delete the machine
# whatever happened. Needs pyinfra, pyinfra-orbstack and OrbStack's orbctl (or the
# test simulator's) on PATH. .github/workflows/example-ci-pipeline.yml runs it.
set -euo pipefail
cd "$(dirname "$0")"

# One machine per run and attempt, so reruns and parallel jobs never share one.
machine="${EXAMPLE_PREFIX:-}ci-${GITHUB_RUN_ID:-$$}-${GITHUB_RUN_ATTEMPT:-1}"
trap 'pyinfra-orbstack machine delete --missing-ok "$machine"' EXIT

pyinfra-orbstack machine create debian:bookworm "$machine"

pyinfra -y "@orbstack/$machine" deploy.py

out=$(pyinfra -y "@orbstack/$machine" deploy.py 2>&1) || { echo "$out"; exit 1; }
# pyinfra's results table: Operation, Hosts, Success, Error, No Change; Success counts changes.
changed=$(echo "$out" | awk '/Grand total/ {print $4}')
if [ "$changed" != "-" ]; then
    echo "$out"
    echo "ci.sh: the second deploy changed something (Success: $changed)" >&2
    exit 1
fi
echo "ci.sh: second deploy: no changes"

pyinfra -y "@orbstack/$machine" check.py
echo "ci.sh: passed on $machine"
