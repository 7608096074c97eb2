"""The upgrade, on the machine: the service's packages at their latest version, and the
service restarted when they changed.

pyinfra's `apt.packages(latest=True)` reinstalls on every run; asking apt first
(`apt-get --dry-run install --only-upgrade`, pyinfra's SimulateOperationWillChange
fact, against the package lists of the last `apt-get update`) keeps a second run quiet.
"""

from pyinfra import host
from pyinfra.facts.apt import SimulateOperationWillChange
from pyinfra.operations import apt, sysvinit

PACKAGES = ["nginx"]

apt.update(
    name="Package lists at most an hour old",
    cache_time=3600,
    _sudo=True,
)

pending = host.get_fact(SimulateOperationWillChange, command="install --only-upgrade " + " ".join(PACKAGES))
if pending is None or pending["upgraded"] > 0:  # None: apt could not tell, so try
    apt.packages(
        name="nginx at its latest version",
        packages=PACKAGES,
        latest=True,
        _sudo=True,
    )
    sysvinit.service(
        name="Restart nginx after the upgrade",
        service="nginx",
        restarted=True,
        _sudo=True,
    )
