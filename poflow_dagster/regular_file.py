"""Opening a file a user named (or dropped into the inbox) only if it is a regular file. Standard library only:
``poflow upload`` through the API uses it without importing the app."""

from __future__ import annotations

import errno
import io
import os
import stat
from pathlib import Path

from poflow_dagster.domain.errors import PoflowError


def open_regular(source: Path, *, follow_symlinks: bool = True) -> io.BufferedReader:
    """Open ``source`` for reading if it is a regular file (checked on the open descriptor, no race): a FIFO never
    hangs (``O_NONBLOCK`` until checked); with ``follow_symlinks=False`` a symlink is refused even if it was swapped
    in after the caller looked (``O_NOFOLLOW``). Errors: ``file_not_found``, ``not_a_regular_file``."""
    flags = os.O_RDONLY | os.O_NONBLOCK | (0 if follow_symlinks else os.O_NOFOLLOW)
    try:
        fd = os.open(source, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise PoflowError("not_a_regular_file", f"{source.name} is a symbolic link; it was not read") from None
        raise PoflowError("file_not_found", f"{source} is not a readable file") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise PoflowError("not_a_regular_file", f"{source.name} is not a regular file; it was not read")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")
