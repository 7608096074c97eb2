"""pyinfra operations for OrbStack: ``from pyinfra_orbstack.operations import orbstack``."""
