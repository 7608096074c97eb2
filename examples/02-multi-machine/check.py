"""Checks, with the network facts, that every app machine reaches the database's port:
`pyinfra -y inventory.py check.py`. Changes nothing; fails naming the machines that do not.
"""

from inventory import DB_HOST, DB_PORT
from pyinfra import host, logger
from pyinfra.api.exceptions import PyinfraError
from pyinfra_orbstack.facts.linux import DnsLookup, TcpPort

if "app" in host.groups:
    address = host.get_fact(DnsLookup, hostname=DB_HOST)
    port = host.get_fact(TcpPort, target=DB_HOST, port=DB_PORT)
    if not port["open"]:
        raise PyinfraError(f"{host.name} cannot reach {DB_HOST}:{DB_PORT} ({port['error'] or 'closed'})")
    logger.info(f"{host.name} reaches {DB_HOST}:{DB_PORT} ({', '.join(address['answers'])})")
