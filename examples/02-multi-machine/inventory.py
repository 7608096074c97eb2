"""One database machine and two app machines, all reached over @orbstack.

EXAMPLE_PREFIX (optional, default none) goes in front of every machine name, so a copy
of this example can run next to machines you already have (the tests use it).
"""

import os

prefix = os.environ.get("EXAMPLE_PREFIX", "")

db = [f"@orbstack/{prefix}db"]
app = [f"@orbstack/{prefix}app1", f"@orbstack/{prefix}app2"]

# The apps find the database by its OrbStack name: the same from the Mac and from every
# machine, whatever address it gets.
DB_HOST = f"{prefix}db.orb.local"
DB_PORT = 6379
