# Rewritten from the git tag (.ci/version) when wheels are built; see docs/releasing.md.
__version__ = "0.0.0.dev0"
