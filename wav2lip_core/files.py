"""The one way to write a file that others read: whole or not at all. The core's, and the
add-on's too (one of the files it loads by path: protocol.ADDON_FILES).

Standard library only. Used by every writer of a small file another process may read at the same
time (JOBS reports, the model and face caches' entries and indexes, a batch job's fetched
output); the video writer (media.encode) streams into its own temp file and renames it the same
way."""

from __future__ import annotations

import os
import tempfile
from typing import BinaryIO, Callable, Union

Writer = Callable[[BinaryIO], None]


def umask() -> int:
    """The process's umask (reading it means setting it: set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path: Union[str, os.PathLike], data: Union[bytes, Writer], *, private: bool = False) -> None:
    """`data` (bytes, or a function writing into the open file) into `path` through a temp file
    in the same folder and a rename: a reader never sees half a file, and a failure leaves the
    old file (or none). The file gets the user's normal permissions (0o666 less the umask), as a
    plain open() would give it, unless `private` (mkstemp's 0600)."""
    folder, name = os.path.split(os.fspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder or ".", prefix=f".{name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
        if not private:
            os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
