"""Two machines, created on first connect if missing: `front` and `back`, which serves
HTTP on port 80.

EXAMPLE_PREFIX (optional, default none) goes in front of every machine name, so a copy
of this example can run next to machines you already have (the tests use it).
"""

import os

prefix = os.environ.get("EXAMPLE_PREFIX", "")

front = [(f"@orbstack/{prefix}front", {"orbstack_image": "debian:bookworm", "alias": "www.internal"})]
back = [(f"@orbstack/{prefix}back", {"orbstack_image": "debian:bookworm", "alias": "api.internal"})]
