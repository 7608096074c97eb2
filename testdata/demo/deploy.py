"""The demo deploy: a tiny web-ish setup on two OrbStack machines, and on the machines
of the `web` group (inventory.py) the README's first deploy: nginx from the distro's
archive, serving a page.

Every operation is ordinary pyinfra; nothing here knows it runs on OrbStack (or on the
simulator, whose machines reach the package registries through its proxy:
docs/simulator.md, "Package access"): that is the point of a connector. A second run
changes nothing.
"""

from io import StringIO

from pyinfra import host
from pyinfra.operations import apt, files, server, sysvinit

machine = host.data.get("orbstack_machine", host.name)

server.user(
    name="Create the app user",
    user="app",
    home="/home/app",
    shell="/bin/sh",
    _sudo=True,
)

files.directory(
    name="Create the app directory",
    path="/srv/app",
    user="app",
    group="app",
    mode="755",
    _sudo=True,
)

files.template(
    name="Render the app config",
    src="templates/app.conf.j2",
    dest="/srv/app/app.conf",
    machine=machine,
    mode="644",
    _sudo=True,
)

files.put(
    name="Upload a banner (from memory)",
    src=StringIO(f"Welcome to {machine}, deployed by pyinfra over @orbstack\n"),
    dest="/srv/app/banner.txt",
    _sudo=True,
)

files.line(
    name="Point motd at the banner",
    path="/etc/motd",
    line="See /srv/app/banner.txt",
    _sudo=True,
)

if "web" in host.groups:
    apt.packages(
        name="Install nginx",
        packages=["nginx"],
        update=True,
        cache_time=3600,  # without it, apt-get update runs (a change) on every deploy
        _sudo=True,
    )

    files.template(
        name="Publish the home page",
        src="templates/index.html.j2",
        dest="/var/www/html/index.html",
        machine=machine,
        mode="644",
        _sudo=True,
    )

    # Debian starts nginx when it installs it; this keeps it running after a
    # machine restart (OrbStack machines run systemd, the simulator's do not:
    # the init script works on both).
    sysvinit.service(
        name="Keep nginx running",
        service="nginx",
        running=True,
        _sudo=True,
    )
