"""A first deploy: a user, a directory, files and templates, and nginx serving a page
that the Mac reaches at http://NAME.orb.local/.

Plain pyinfra: nothing here knows it runs on OrbStack. A second run changes nothing.
"""

from pyinfra import host
from pyinfra.operations import apt, files, server, sysvinit
from pyinfra.operations.util import any_changed

# The machine's name is its hostname, and OrbStack names it NAME.orb.local for the Mac
# and for the other machines.
machine = host.data.get("orbstack_machine") or host.name.removeprefix("@orbstack/")
orb_name = f"{machine}.orb.local"

server.user(
    name="A user that owns the site",
    user="site",
    home="/home/site",
    shell="/bin/bash",
    _sudo=True,
)

files.directory(
    name="The site's directory",
    path="/srv/hello",
    user="site",
    group="site",
    mode="755",
    _sudo=True,
)

files.put(
    name="A static file, copied as is",
    src="files/robots.txt",
    dest="/srv/hello/robots.txt",
    user="site",
    group="site",
    mode="644",
    _sudo=True,
)

files.template(
    name="The home page, rendered from a template",
    src="templates/index.html.j2",
    dest="/srv/hello/index.html",
    user="site",
    group="site",
    mode="644",
    machine=machine,
    orb_name=orb_name,
    _sudo=True,
)

apt.packages(
    name="nginx from Debian's archive",
    packages=["nginx"],
    update=True,
    cache_time=3600,  # without it, apt-get update runs (a change) on every deploy
    _sudo=True,
)

site = files.template(
    name="An nginx site for NAME.orb.local",
    src="templates/hello.conf.j2",
    dest="/etc/nginx/sites-available/hello",
    mode="644",
    orb_name=orb_name,
    _sudo=True,
)

enabled = files.link(
    name="Enable the site",
    path="/etc/nginx/sites-enabled/hello",
    target="/etc/nginx/sites-available/hello",
    _sudo=True,
)

default = files.link(
    name="Disable Debian's default site",
    path="/etc/nginx/sites-enabled/default",
    present=False,
    _sudo=True,
)

# The init script works with and without systemd (OrbStack machines run systemd; the
# simulator's do not).
sysvinit.service(
    name="nginx runs",
    service="nginx",
    running=True,
    _sudo=True,
)

sysvinit.service(
    name="Reload nginx after a configuration change",
    service="nginx",
    reloaded=True,
    _sudo=True,
    _if=any_changed(site, enabled, default),  # a list would mean "all of them"
)
