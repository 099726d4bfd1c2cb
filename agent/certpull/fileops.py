"""Every system call the store makes, in one object, and the small helpers built on them.

`FileOps` is the layer tests replace to make any one call fail part-way (certbot's habit of
making `os.unlink` fail mid-swap, done without patching). The helpers take a FileOps as their
first argument, so store.py and compat.py share them and every call goes through the layer.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
from contextlib import contextmanager
from typing import Iterator, List, Optional

from certpull.errors import StoreError


class FileOps:
    """The system calls of the store; subclass and override one to inject a fault."""

    def open(self, path: str, flags: int, mode: int = 0o777) -> int:
        return os.open(path, flags, mode)

    def close(self, fd: int) -> None:
        os.close(fd)

    def read(self, fd: int, size: int) -> bytes:
        return os.read(fd, size)

    def write(self, fd: int, data: bytes) -> int:
        return os.write(fd, data)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def fchmod(self, fd: int, mode: int) -> None:
        os.fchmod(fd, mode)

    def fchown(self, fd: int, uid: int, gid: int) -> None:
        os.fchown(fd, uid, gid)

    def flock(self, fd: int, operation: int) -> None:
        fcntl.flock(fd, operation)

    def mkdir(self, path: str, mode: int) -> None:
        os.mkdir(path, mode)

    def chmod(self, path: str, mode: int) -> None:
        os.chmod(path, mode)

    def rename(self, src: str, dst: str) -> None:
        os.rename(src, dst)

    def symlink(self, target: str, path: str) -> None:
        os.symlink(target, path)

    def link(self, src: str, dst: str) -> None:
        os.link(src, dst, follow_symlinks=False)

    def readlink(self, path: str) -> str:
        return os.readlink(path)

    def unlink(self, path: str) -> None:
        os.unlink(path)

    def lstat(self, path: str) -> os.stat_result:
        return os.lstat(path)

    def isdir(self, path: str) -> bool:
        """Whether ``path`` is a directory (following a symlink, as os.path.isdir does)."""
        return os.path.isdir(path)

    def listdir(self, path: str) -> List[str]:
        return os.listdir(path)

    def rmtree(self, path: str) -> None:
        shutil.rmtree(path)


def reason(exc: OSError) -> str:
    return os.strerror(exc.errno) if exc.errno else str(exc)


@contextmanager
def io_errors(what: str, path: str) -> Iterator[None]:
    """Turn an OSError into a one-line StoreError naming the path and the errno text."""
    try:
        yield
    except OSError as exc:
        raise StoreError(f"cannot {what} {path}: {reason(exc)}") from exc


def fsync_dir(fs: FileOps, path: str) -> None:
    with io_errors("sync directory", path):
        fd = fs.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fs.fsync(fd)
        finally:
            fs.close(fd)


def lstat_or_none(fs: FileOps, path: str) -> Optional[os.stat_result]:
    try:
        return fs.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ENOTDIR:
            return None
        raise StoreError(f"cannot inspect {path}: {reason(exc)}") from exc


def link_target(fs: FileOps, path: str) -> Optional[str]:
    """Where the symlink at ``path`` points; None when there is no symlink there."""
    try:
        return fs.readlink(path)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.EINVAL, errno.ENOTDIR):
            return None
        raise StoreError(f"cannot read link {path}: {reason(exc)}") from exc


def unlink_if_present(fs: FileOps, path: str) -> None:
    try:
        fs.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise StoreError(f"cannot remove {path}: {reason(exc)}") from exc
