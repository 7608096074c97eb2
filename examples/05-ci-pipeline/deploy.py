"""What the pipeline deploys: a page served by nginx (your deploy goes here)."""

from pyinfra.operations import apt, files, sysvinit

apt.packages(
    name="nginx",
    packages=["nginx"],
    update=True,
    cache_time=3600,
    _sudo=True,
)

files.put(
    name="The page under test",
    src="files/index.html",
    dest="/var/www/html/index.html",
    mode="644",
    _sudo=True,
)

sysvinit.service(
    name="nginx runs",
    service="nginx",
    running=True,
    _sudo=True,
)
