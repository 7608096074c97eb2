#!/usr/bin/env bash
# Snapshot, upgrade, health check; on a failed check, restore the snapshot, check again
# and exit 1 (the upgrade failed, the machine is back as it was before it).
set -euo pipefail
cd "$(dirname "$0")"

pyinfra -y @local snapshot.py
pyinfra -y inventory.py upgrade.py
if ! pyinfra -y inventory.py health.py; then
    echo "maintain.sh: the health check failed; restoring the snapshot" >&2
    pyinfra -y @local restore.py
    # The snapshot's configuration, made sure of: nothing to change on OrbStack, whose
    # machines start their services at boot; a machine without an init system (the
    # test simulator's) gets nginx started here.
    pyinfra -y inventory.py deploy.py
    pyinfra -y inventory.py health.py
    echo "maintain.sh: restored from the snapshot and healthy again; the upgrade did not stick" >&2
    exit 1
fi
echo "maintain.sh: upgraded and healthy"
