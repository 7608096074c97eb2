"""The Mac side of file transfers: a local path for the binary to read or write.

File bytes never travel in JSON: the binary reads and writes local files by path
(docs/protocol.md, `file.put`/`file.get`). A path from pyinfra is used as is; an
in-memory file (`StringIO`, `BytesIO`) is spooled through a private (0700)
directory of this host, one file per transfer, removed afterwards.
"""

from __future__ import annotations

import os
import secrets
import shutil
import stat
import tempfile
from io import IOBase
from types import TracebackType
from typing import IO, Any

import gevent
from pyinfra import logger
from pyinfra.api.util import get_file_io

# Spooling IO objects to disk in chunks, yielding to other greenlets in between.
SPOOL_CHUNK_BYTES = 1 << 20

# What pyinfra hands a connector to read from or write into (BaseConnector's
# signature says IOBase; pyinfra's get_file_io, which opens it, says IO).
FileOrIO = str | IOBase | IO[Any]


class SpoolDir:
    """A host's private local directory for spooled files, made on first use."""

    def __init__(self) -> None:
        self.path: str | None = None

    def get(self) -> str:
        if self.path is None:
            self.path = tempfile.mkdtemp(prefix="pyinfra-orbstack-")  # mode 0700
        return self.path

    def remove(self) -> None:
        if self.path:
            shutil.rmtree(self.path, ignore_errors=True)
            self.path = None


class LocalSource:
    """A local path the binary can read: the file itself, or an IO object spooled to disk."""

    def __init__(self, spool: SpoolDir, filename_or_io: FileOrIO) -> None:
        self.spool = spool
        self.filename_or_io = filename_or_io
        self.spooled: str | None = None

    def __enter__(self) -> str:
        if isinstance(self.filename_or_io, str):
            return os.path.abspath(self.filename_or_io)
        fd, self.spooled = tempfile.mkstemp(dir=self.spool.get())
        source_io = get_file_io(self.filename_or_io)  # type: ignore[arg-type]
        with os.fdopen(fd, "wb") as spool, source_io as source:
            while True:
                chunk = source.read(SPOOL_CHUNK_BYTES)
                if not chunk:
                    break
                spool.write(chunk.encode() if isinstance(chunk, str) else chunk)
                gevent.sleep(0)
        return self.spooled

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.spooled:
            _remove_quietly(self.spooled)


class LocalDestination:
    """A local path the binary writes to; copied into the IO object afterwards."""

    def __init__(self, spool: SpoolDir, filename_or_io: FileOrIO) -> None:
        self.spool = spool
        self.filename_or_io = filename_or_io
        self.spooled: str | None = None
        self.path: str | None = None
        self.mode = 0

    def __enter__(self) -> str:
        if isinstance(self.filename_or_io, str):
            self.path = os.path.abspath(self.filename_or_io)
            self.mode = local_file_mode(self.path)
            return self.path
        self.spooled = os.path.join(self.spool.get(), secrets.token_hex(8))
        return self.spooled

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.path:
            if exc_type is None:
                # The binary renames a private (0600) file into place; give the
                # result the mode pyinfra's other connectors' open("wb") gives it.
                os.chmod(self.path, self.mode)
            return
        if not self.spooled:
            return
        try:
            if exc_type is None:
                target_io = get_file_io(self.filename_or_io, "wb")  # type: ignore[arg-type]
                with open(self.spooled, "rb") as spool, target_io as target:
                    while True:
                        chunk = spool.read(SPOOL_CHUNK_BYTES)
                        if not chunk:
                            break
                        target.write(chunk)
                        gevent.sleep(0)
        finally:
            _remove_quietly(self.spooled)


def local_file_mode(path: str) -> int:
    """An existing file's mode, or the one a new file gets (0666 less the umask)."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        umask = os.umask(0o022)  # reading the umask means setting it; put it back at once
        os.umask(umask)
        return 0o666 & ~umask


def remove_download_parts(local_path: str, pid: int) -> None:
    """Remove what a binary that died mid-`file.get` left next to local_path.

    It writes `.NAME.pyinfra-orbstack-PID-RANDOM.part` (docs/protocol.md,
    `file.get`); the PID makes sure no other download's part, and no file of
    the user's, is touched.
    """
    directory, name = os.path.split(local_path)
    prefix, suffix = f".{name}.pyinfra-orbstack-{pid}-", ".part"
    try:
        entries = os.listdir(directory or ".")
    except OSError:
        return
    for entry in entries:
        if entry.startswith(prefix) and entry.endswith(suffix):
            try:
                os.remove(os.path.join(directory, entry))
            except OSError as e:
                logger.warning(f"could not remove the partial download {entry}: {e}")


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass
