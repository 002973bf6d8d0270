"""Writing an output file the user named, and nothing else.

The content goes to a private temporary file in the target's directory (created with
O_EXCL, so a planted file or symlink is never opened) and is renamed over the target only
when complete. The target is never an existing file unless the caller says `replace`, never
a directory, device or FIFO, and never one of the `protected` files (the live store).
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from .errors import StoreError


class OutputFileError(StoreError):
    """An output file that cannot or must not be written; the message is one line."""


def _reason(exc: OSError) -> str:
    return exc.strerror or errno.errorcode.get(exc.errno or 0, type(exc).__name__)


def _same_file(a: Path, b: Path) -> bool:
    try:
        if os.path.samefile(a, b):
            return True
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def check_output_path(path: Path, *, replace: bool = False, protected: Sequence[Path] = ()) -> None:
    """Raise OutputFileError when `path` must not be written (see the module docstring)."""
    for keep in protected:
        if _same_file(path, keep):
            raise OutputFileError(f"{path}: is the task store itself; choose another --out")
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise OutputFileError(f"{path}: cannot write: {_reason(exc)}") from None
    if stat.S_ISLNK(info.st_mode):
        if not replace:
            raise OutputFileError(f"{path}: exists (a symbolic link); pass --force to replace the link")
        return
    if stat.S_ISDIR(info.st_mode):
        raise OutputFileError(f"{path}: is a directory")
    if not stat.S_ISREG(info.st_mode):
        raise OutputFileError(f"{path}: is not a regular file")
    if not replace:
        raise OutputFileError(f"{path}: exists; pass --force to replace it")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _link_new(tmp: Path, target: Path) -> None:
    """Give the finished temporary file the target's name only if that name is still free
    (a hard link fails on an existing name), else fall back to a rename."""
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise OutputFileError(f"{target}: exists; pass --force to replace it") from None
    except OSError:  # a file system without hard links
        os.replace(tmp, target)
        return
    tmp.unlink()


@contextmanager
def output_file(path: str | os.PathLike[str], *, replace: bool = False, protected: Sequence[Path] = (),
                binary: bool = False) -> Iterator[IO]:
    """Open `path` for writing through a temporary file; the target appears only whole.

    On any exception (a write error, a full disk, an interrupt) the temporary file is
    removed and the target is left as it was. OS errors come out as OutputFileError.
    """
    target = Path(path)
    check_output_path(target, replace=replace, protected=protected)
    directory = target.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{target.name[:32]}.", suffix=".t2t-tmp")
    except OSError as exc:
        raise OutputFileError(f"{target}: cannot write: {_reason(exc)}") from None
    tmp = Path(tmp_name)
    try:
        try:
            os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes it 0600; the result is an ordinary file
            handle = os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8", "newline": "\n"}))
        except BaseException:
            os.close(fd)
            raise
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        check_output_path(target, replace=replace, protected=protected)  # nothing appeared meanwhile
        if replace:
            os.replace(tmp, target)
        else:
            _link_new(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputFileError(f"{target}: cannot write: {_reason(exc)}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
