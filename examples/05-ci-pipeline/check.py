"""The pipeline's tests, with the facts, from inside the machine: port 80 open and the
page answering 200. Changes nothing; fails saying what is wrong."""

from pyinfra import host, logger
from pyinfra.api.exceptions import PyinfraError
from pyinfra_orbstack.facts.linux import Http, TcpPort

port = host.get_fact(TcpPort, target="localhost", port=80)
page = host.get_fact(Http, url="http://localhost/")
if not (port["open"] and page["ok"]):
    raise PyinfraError(f"{host.name}: port 80 open {port['open']}, http://localhost/ {page['status']} {page['error']}")
logger.info(f"{host.name}: port 80 open, http://localhost/ {page['status']}")
