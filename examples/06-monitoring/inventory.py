"""The machine to watch, created on first connect if missing.

EXAMPLE_PREFIX (optional, default none) goes in front of the machine's name, so a copy
of this example can run next to machines you already have (the tests use it).
"""

import os

prefix = os.environ.get("EXAMPLE_PREFIX", "")

watched = [(f"@orbstack/{prefix}watched", {"orbstack_image": "debian:bookworm"})]
