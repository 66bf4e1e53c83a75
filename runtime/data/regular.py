"""Only a regular file is read as data: a FIFO holds open() until someone writes to it, and a
device such as /dev/zero never ends."""

from __future__ import annotations

import errno
import os
import stat


def check_regular(path: str | os.PathLike) -> None:
    """OSError (FileNotFoundError where nothing is there) unless `path` is a regular file,
    or a link to one."""
    mode = os.stat(path).st_mode
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, "a folder, not a file", str(path))
    if not stat.S_ISREG(mode):
        raise OSError(errno.EINVAL, "not a regular file (a FIFO, a device…)", str(path))
