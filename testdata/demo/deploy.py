"""The demo deploy: a tiny web-ish setup on two OrbStack machines.

Every operation is ordinary pyinfra; nothing here knows it runs on OrbStack (or on the
simulator): that is the point of a connector.
"""

from io import StringIO

from pyinfra import host
from pyinfra.operations import files, server

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

server.shell(
    name="Show who and where we are (sudo, as app)",
    commands=["id -un && hostname && cat /srv/app/banner.txt"],
    _sudo=True,
    _sudo_user="app",
    _chdir="/srv/app",
)
