"""One machine, created on first connect if it is missing (orbstack_image).

EXAMPLE_PREFIX (optional, default none) goes in front of every machine name, so a copy
of this example can run next to machines you already have (the tests use it).
"""

import os

prefix = os.environ.get("EXAMPLE_PREFIX", "")

web = [(f"@orbstack/{prefix}hello", {"orbstack_image": "debian:bookworm"})]
