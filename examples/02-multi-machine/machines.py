"""The machines, as state: run on the Mac (`pyinfra -y @local machines.py`).

A database machine and two app machines. A second run changes nothing; a stopped
machine is started, a missing one created.
"""

from inventory import app, db
from pyinfra_orbstack.operations import orbstack

for machine in (host.removeprefix("@orbstack/") for host in db + app):
    orbstack.machine(
        name=f"Machine {machine}",
        machine=machine,
        image="debian:bookworm",
    )
