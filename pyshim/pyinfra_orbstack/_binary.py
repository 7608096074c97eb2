"""Finding the `pyinfra-orbstack` Go binary, and the console script that runs it."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

BINARY_NAME = "pyinfra-orbstack"
BINARY_ENV_VAR = "PYINFRA_ORBSTACK_BINARY"

_PACKAGE_DIR = Path(__file__).resolve().parent


class BinaryNotFoundError(FileNotFoundError):
    """No usable binary; the message lists where we looked and how to fix it."""


def candidate_paths() -> list[Path]:
    """Where the binary may be, in the order we try them."""
    return [
        # Installed from a wheel: the binary ships inside the package.
        _PACKAGE_DIR / "bin" / BINARY_NAME,
        # Editable install from a checkout (`pip install -e pyshim` after `make build`).
        _PACKAGE_DIR.parent.parent / "bin" / BINARY_NAME,
    ]


def find_binary() -> str:
    """The path of the binary to run, or BinaryNotFoundError."""
    override = os.environ.get(BINARY_ENV_VAR)
    if override:
        if not os.path.isfile(override):
            raise BinaryNotFoundError(
                f"{BINARY_ENV_VAR} is set to {override!r}, which is not a file: "
                f"unset it or point it at a built binary (`make build` writes bin/{BINARY_NAME})",
            )
        return override

    for path in candidate_paths():
        if path.is_file():
            _ensure_executable(path)
            return str(path)

    searched = ", ".join(str(p) for p in candidate_paths())
    raise BinaryNotFoundError(
        f"the {BINARY_NAME} binary was not found (looked in {searched}): reinstall with "
        f"`pip install --force-reinstall pyinfra-orbstack`, or in a checkout run `make build`, "
        f"or set {BINARY_ENV_VAR} to its path",
    )


def _ensure_executable(path: Path) -> None:
    # Some installers (and zip-based wheel tools) drop the exec bit.
    mode = path.stat().st_mode
    if not mode & stat.S_IXUSR:
        try:
            path.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        except OSError:
            pass


def main() -> None:
    """Console script `pyinfra-orbstack`: hand over to the Go binary."""
    try:
        binary = find_binary()
    except BinaryNotFoundError as e:
        sys.stderr.write(f"pyinfra-orbstack: {e}\n")
        raise SystemExit(127) from None
    os.execv(binary, [binary, *sys.argv[1:]])
