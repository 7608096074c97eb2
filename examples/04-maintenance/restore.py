"""On the Mac (@local): replace the machine by its newest snapshot in BACKUP_DIR.
force=True replaces it on every run, so maintain.sh runs this only after a failed check."""

from inventory import BACKUP_DIR, MACHINE
from pyinfra_orbstack.operations import orbstack

orbstack.restore(
    name=f"{MACHINE} from its newest snapshot",
    machine=MACHINE,
    directory=BACKUP_DIR,
    force=True,
)
