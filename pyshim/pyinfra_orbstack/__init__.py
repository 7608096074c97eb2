"""pyinfra connector, facts and operations for OrbStack Linux machines.

The `@orbstack` connector lives in `pyinfra_orbstack.connector`; it is found by
pyinfra through the `pyinfra.connectors` entry point.
"""

from ._version import __version__

__all__ = ["__version__"]
