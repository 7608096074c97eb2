"""The machine under maintenance, created on first connect if missing.

EXAMPLE_PREFIX (optional, default none) goes in front of the machine's name, so a copy
of this example can run next to machines you already have (the tests use it).
BACKUP_DIR (optional, default ~/orb-backups) is where the snapshots go, on the Mac.
"""

import os

prefix = os.environ.get("EXAMPLE_PREFIX", "")

app = [(f"@orbstack/{prefix}app", {"orbstack_image": "debian:bookworm"})]

MACHINE = f"{prefix}app"
BACKUP_DIR = os.path.expanduser(os.environ.get("BACKUP_DIR", "~/orb-backups"))
