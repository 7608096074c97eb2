"""What the network looks like from `front`, with the facts: `pyinfra -y inventory.py check.py`.
Changes nothing; fails when `front` cannot resolve or reach `api.internal`.
"""

from pyinfra import host, logger
from pyinfra.api.exceptions import PyinfraError
from pyinfra_orbstack.facts.linux import DnsLookup, Http, Ping, TcpPort
from pyinfra_orbstack.facts.network import Network

network = host.get_fact(Network)
logger.info(f"{host.name}: {network['orb_name']} at {', '.join(network['ipv4'])}, DNS {network['dns_servers']}")

if "front" in host.groups:
    alias = host.get_fact(DnsLookup, hostname="api.internal")
    ping = host.get_fact(Ping, target="api.internal")
    port = host.get_fact(TcpPort, target="api.internal", port=80)
    health = host.get_fact(Http, url="http://api.internal/health")
    logger.info(f"{host.name}: api.internal is {alias['answers']}, ping {ping['reachable']}, "
                f"port 80 open {port['open']}, /health {health['status']}")
    if not (alias["answers"] and port["open"] and health["ok"]):
        raise PyinfraError(f"{host.name} cannot reach http://api.internal/health: "
                           f"{alias['error'] or port['error'] or health['error'] or health['status']}")
