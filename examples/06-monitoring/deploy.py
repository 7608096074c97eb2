"""Inside the machine: Prometheus's node exporter (Debian's package), which serves the
machine's own metrics at http://NAME.orb.local:9100/metrics for the scrape job in
prometheus.yml. What OrbStack sees of the machine comes from `pyinfra-orbstack monitor`
on the Mac, which needs nothing installed in the machine.
"""

from pyinfra.operations import apt, sysvinit

apt.packages(
    name="Prometheus node exporter",
    packages=["prometheus-node-exporter"],
    extra_install_args="--no-install-recommends",  # its recommends are 20-odd packages
    update=True,
    cache_time=3600,
    _sudo=True,
)

sysvinit.service(
    name="The node exporter runs",
    service="prometheus-node-exporter",
    running=True,
    _sudo=True,
)
