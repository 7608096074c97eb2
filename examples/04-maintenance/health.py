"""The health check, with the Http fact from inside the machine: fails when
http://localhost/health does not answer 2xx. Changes nothing."""

from pyinfra import host, logger
from pyinfra.api.exceptions import PyinfraError
from pyinfra_orbstack.facts.linux import Http

health = host.get_fact(Http, url="http://localhost/health")
if not health["ok"]:
    raise PyinfraError(f"{host.name} is unhealthy: http://localhost/health: {health['error'] or health['status']}")
logger.info(f"{host.name} is healthy: http://localhost/health {health['status']}")
