"""Network configuration: every machine knows every other one by a service alias in
/etc/hosts (`api.internal` is `back`, `www.internal` is `front`), and `back` serves HTTP.

The addresses come from the DnsLookup fact: what this machine resolves NAME.orb.local
to, which is what OrbStack routes for it.
"""

from pyinfra import host, inventory
from pyinfra.operations import apt, files, sysvinit
from pyinfra_orbstack.facts.linux import DnsLookup

for other in inventory:
    machine = other.name.removeprefix("@orbstack/")
    looked_up = host.get_fact(DnsLookup, hostname=f"{machine}.orb.local")
    if not looked_up["answers"]:
        raise ValueError(f"{host.name} cannot resolve {machine}.orb.local: {looked_up['error']}")
    address, alias = looked_up["answers"][0], other.data.alias
    files.line(
        name=f"/etc/hosts: {alias} is {machine}",
        path="/etc/hosts",
        line=rf"^\S+\s+{alias}$",
        replace=f"{address} {alias}",
        _sudo=True,
    )

if "back" in host.groups:
    apt.packages(
        name="A web server on back",
        packages=["nginx"],
        update=True,
        cache_time=3600,
        _sudo=True,
    )
    files.put(
        name="A health page",
        src="files/health",
        dest="/var/www/html/health",
        mode="644",
        _sudo=True,
    )
    sysvinit.service(
        name="nginx runs",
        service="nginx",
        running=True,
        _sudo=True,
    )
