"""On the Mac (@local): an archive of the machine in BACKUP_DIR, at most a day old, the
newest 3 kept. A second run the same day changes nothing; `max_age=0` would take one on
every run (see docs/operations.md, orbstack.snapshot).
"""

from inventory import BACKUP_DIR, MACHINE
from pyinfra_orbstack.operations import orbstack

orbstack.snapshot(
    name=f"A recent snapshot of {MACHINE}",
    machine=MACHINE,
    directory=BACKUP_DIR,
    keep=3,
)
