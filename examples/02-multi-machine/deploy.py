"""The database and the apps, configured in one run: `pyinfra -y inventory.py deploy.py`.

Redis on `db`, listening on the machines' network; on each app machine the client, the
app's settings pointing at DB_HOST, and a check script the app's operators run.
"""

from inventory import DB_HOST, DB_PORT
from pyinfra import host
from pyinfra.operations import apt, files, sysvinit
from pyinfra.operations.util import any_changed

if "db" in host.groups:
    apt.packages(
        name="Redis",
        packages=["redis-server"],
        update=True,
        cache_time=3600,
        _sudo=True,
    )

    # Debian's Redis listens on localhost only. OrbStack's machine network is private
    # to the Mac, so listen on it; a real deploy would also set a password (requirepass).
    bind = files.line(
        name="Redis listens on the machines' network",
        path="/etc/redis/redis.conf",
        line=r"^bind .*",
        replace="bind 0.0.0.0 ::",
        _sudo=True,
    )
    protected = files.line(
        name="Redis accepts clients from the other machines",
        path="/etc/redis/redis.conf",
        line=r"^protected-mode .*",
        replace="protected-mode no",
        _sudo=True,
    )

    sysvinit.service(
        name="Redis runs",
        service="redis-server",
        running=True,
        _sudo=True,
    )
    sysvinit.service(
        name="Restart Redis after a configuration change",
        service="redis-server",
        restarted=True,
        _sudo=True,
        _if=any_changed(bind, protected),
    )

if "app" in host.groups:
    apt.packages(
        name="The Redis client",
        packages=["redis-tools"],
        update=True,
        cache_time=3600,
        _sudo=True,
    )

    files.template(
        name="The app's settings: where the database is",
        src="templates/app.env.j2",
        dest="/etc/app.env",
        mode="644",
        db_host=DB_HOST,
        db_port=DB_PORT,
        _sudo=True,
    )

    files.put(
        name="A script that asks the database for PONG",
        src="files/app-check",
        dest="/usr/local/bin/app-check",
        mode="755",
        _sudo=True,
    )
