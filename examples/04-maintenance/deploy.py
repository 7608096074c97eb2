"""The service being maintained: nginx with a health page. `pyinfra -y inventory.py deploy.py`."""

from pyinfra.operations import apt, files, sysvinit

apt.packages(
    name="nginx",
    packages=["nginx"],
    update=True,
    cache_time=3600,
    _sudo=True,
)

files.put(
    name="The health page the maintenance checks",
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
