"""The machine's resources in a deploy, with the orbstack.Resources fact (the same probe
the exporter runs): prints them, and fails when `/` is over 90 % full, before a deploy
would fill it. `pyinfra -y inventory.py resources.py`; changes nothing."""

from pyinfra import host, logger
from pyinfra.api.exceptions import PyinfraError
from pyinfra_orbstack.facts.resources import Resources

used = host.get_fact(Resources)
disk, memory = used["disk"], used["memory"]
logger.info(f"{host.name}: load {used['load'][0]}, memory {memory['used'] // 2**20} of "
            f"{memory['total'] // 2**20} MiB, / {disk['used'] * 100 // disk['total']} % used, "
            f"{used['processes']} processes")
if disk["used"] > 0.9 * disk["total"]:
    raise PyinfraError(f"{host.name}: / is {disk['used'] * 100 // disk['total']} % full")
