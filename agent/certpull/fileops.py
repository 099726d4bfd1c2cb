"""Every system call the store makes, in one object, and the small helpers built on them.

`FileOps` is the layer tests replace to make any one call fail part-way (certbot's habit of
making `os.unlink` fail mid-swap, done without patching). The helpers take a FileOps as their
first argument, so store.py, compat.py and state.py share them and every call goes through it.

Paths certpull writes as root are opened once and used through directory descriptors (`Dir`:
openat, renameat, symlinkat, ... with O_NOFOLLOW), so a path component swapped for a symlink
after it was checked redirects nothing. `open_trusted_dir` walks a configured path from `/` one
component at a time and refuses a directory someone else could write:

- every directory on the way must be owned by root (or by the user certpull runs as) and not
  writable by every user, unless it is sticky like /tmp (others cannot move or replace what
  root owns there); group-writable directories are the operator's choice and are allowed;
- a symbolic link on the way is followed only when root (or certpull's user) owns it: it sits in
  a directory already checked, so only its owner can repoint it;
- the final directory must not be writable by every user, sticky or not.
"""

from __future__ import annotations

import errno
import fcntl
import grp
import os
import pwd
import stat
from contextlib import contextmanager, suppress
from typing import Iterator, List, Optional, Tuple

from certpull.errors import StoreError

MAX_SYMLINK_HOPS = 40
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class FileOps:
    """The system calls of the store; subclass and override one to inject a fault.

    ``dir_fd`` makes a path relative to an open directory (the *at() calls); without it a path
    is resolved as usual.
    """

    def open(self, path: str, flags: int, mode: int = 0o777, dir_fd: Optional[int] = None) -> int:
        return os.open(path, flags, mode, dir_fd=dir_fd)

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

    def fstat(self, fd: int) -> os.stat_result:
        return os.fstat(fd)

    def ftruncate(self, fd: int, length: int) -> None:
        os.ftruncate(fd, length)

    def flock(self, fd: int, operation: int) -> None:
        fcntl.flock(fd, operation)

    def mkdir(self, path: str, mode: int, dir_fd: Optional[int] = None) -> None:
        os.mkdir(path, mode, dir_fd=dir_fd)

    def rename(self, src: str, dst: str, dir_fd: Optional[int] = None) -> None:
        os.rename(src, dst, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)

    def symlink(self, target: str, path: str, dir_fd: Optional[int] = None) -> None:
        os.symlink(target, path, dir_fd=dir_fd)

    def link(self, src: str, dst: str, dir_fd: Optional[int] = None) -> None:
        os.link(src, dst, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)

    def readlink(self, path: str, dir_fd: Optional[int] = None) -> str:
        return os.readlink(path, dir_fd=dir_fd)

    def unlink(self, path: str, dir_fd: Optional[int] = None) -> None:
        os.unlink(path, dir_fd=dir_fd)

    def rmdir(self, path: str, dir_fd: Optional[int] = None) -> None:
        os.rmdir(path, dir_fd=dir_fd)

    def lstat(self, path: str, dir_fd: Optional[int] = None) -> os.stat_result:
        return os.stat(path, dir_fd=dir_fd, follow_symlinks=False)

    def listdir(self, fd: int) -> List[str]:
        return os.listdir(fd)

    def rmtree(self, name: str, dir_fd: int) -> None:
        """Remove ``name`` (below ``dir_fd``) and everything in it, never following a link."""
        _rmtree_at(name, dir_fd)


def _rmtree_at(name: str, dir_fd: int) -> None:
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=dir_fd)
        return
    fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    try:
        for entry in os.listdir(fd):
            _rmtree_at(entry, fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=dir_fd)


def reason(exc: OSError) -> str:
    return os.strerror(exc.errno) if exc.errno else str(exc)


@contextmanager
def io_errors(what: str, path: str) -> Iterator[None]:
    """Turn an OSError into a one-line StoreError naming the path and the errno text."""
    try:
        yield
    except OSError as exc:
        raise StoreError(f"cannot {what} {path}: {reason(exc)}") from exc


# --- an open directory ---------------------------------------------------------------------


class Dir:
    """An open directory: every call is relative to its descriptor and never follows a symlink
    in its last component. ``path`` is what messages call it."""

    def __init__(self, fs: FileOps, fd: int, path: str) -> None:
        self.fs = fs
        self.fd = fd
        self.path = path

    def __enter__(self) -> Dir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            self.fs.close(fd)

    def join(self, name: str) -> str:
        return os.path.join(self.path, name)

    def lstat(self, name: str) -> Optional[os.stat_result]:
        """``name``'s own status (a link is not followed); None when it does not exist."""
        try:
            return self.fs.lstat(name, dir_fd=self.fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ENOTDIR:
                return None
            raise StoreError(f"cannot inspect {self.join(name)}: {reason(exc)}") from exc

    def readlink(self, name: str) -> Optional[str]:
        """Where the symlink ``name`` points; None when there is no symlink there."""
        try:
            return self.fs.readlink(name, dir_fd=self.fd)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.EINVAL, errno.ENOTDIR):
                return None
            raise StoreError(f"cannot read link {self.join(name)}: {reason(exc)}") from exc

    def listdir(self) -> List[str]:
        with io_errors("list", self.path):
            return self.fs.listdir(self.fd)

    def open(self, name: str, flags: int, mode: int = 0o600) -> int:
        """An fd of ``name``; a symlink there is refused (ELOOP), not followed."""
        return self.fs.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=self.fd)

    def read_file(self, name: str, limit: Optional[int] = None) -> bytes:
        """The bytes of the regular file ``name``; a FIFO, device, directory or symlink there
        is an error, never a read that blocks or follows."""
        with io_errors("read", self.join(name)):
            fd = self.open(name, os.O_RDONLY | os.O_NONBLOCK)
            try:
                if not stat.S_ISREG(self.fs.fstat(fd).st_mode):
                    raise OSError(errno.EINVAL, "not a regular file")
                chunks: List[bytes] = []
                size = 0
                while True:
                    chunk = self.fs.read(fd, 1 << 16)
                    if not chunk:
                        return b"".join(chunks)
                    chunks.append(chunk)
                    size += len(chunk)
                    if limit is not None and size > limit:
                        raise OSError(errno.EFBIG, f"larger than {limit} bytes")
            finally:
                self.fs.close(fd)

    def subdir(self, name: str) -> Dir:
        """Open the directory ``name`` below this one; a symlink there is refused."""
        with io_errors("open directory", self.join(name)):
            fd = self.fs.open(name, _DIR_FLAGS, dir_fd=self.fd)
        return Dir(self.fs, fd, self.join(name))

    def mkdir(self, name: str, mode: int) -> None:
        with io_errors("create directory", self.join(name)):
            self.fs.mkdir(name, mode, dir_fd=self.fd)

    def symlink(self, target: str, name: str) -> None:
        with io_errors("create link", self.join(name)):
            self.fs.symlink(target, name, dir_fd=self.fd)

    def rename(self, src: str, dst: str, what: str = "rename") -> None:
        with io_errors(what, self.join(src) if what == "rename" else self.join(dst)):
            self.fs.rename(src, dst, dir_fd=self.fd)

    def link(self, src: str, dst: str) -> None:
        with io_errors("keep a backup of", self.join(src)):
            self.fs.link(src, dst, dir_fd=self.fd)

    def unlink_if_present(self, name: str) -> None:
        try:
            self.fs.unlink(name, dir_fd=self.fd)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StoreError(f"cannot remove {self.join(name)}: {reason(exc)}") from exc

    def rmtree(self, name: str) -> None:
        with io_errors("remove", self.join(name)):
            self.fs.rmtree(name, self.fd)

    def remove(self, name: str) -> None:
        """Remove ``name`` whatever it is (a directory with everything in it); fine if absent."""
        st = self.lstat(name)
        if st is None:
            return
        if stat.S_ISDIR(st.st_mode):
            self.rmtree(name)
        else:
            self.unlink_if_present(name)

    def fsync(self) -> None:
        with io_errors("sync directory", self.path):
            self.fs.fsync(self.fd)

    def fstat(self) -> os.stat_result:
        with io_errors("inspect", self.path):
            return self.fs.fstat(self.fd)


# --- trusted paths -------------------------------------------------------------------------


def trusted_owners() -> Tuple[int, ...]:
    return (0, os.geteuid())


def dir_problem(path: str, st: os.stat_result, final: bool) -> Optional[str]:
    """Why a directory on a path certpull writes as root is not safe; None when it is.

    The reason says how to fix it.
    """
    if not stat.S_ISDIR(st.st_mode):
        return f"{path} is not a directory"
    if st.st_uid not in trusted_owners():
        return (
            f"{path} is owned by uid {st.st_uid}, who could change what root writes there "
            f"(run `chown root {path}`, or choose a directory owned by root)"
        )
    mode = stat.S_IMODE(st.st_mode)
    if mode & stat.S_IWOTH and (final or not mode & stat.S_ISVTX):
        return (
            f"{path} is writable by every user (mode {mode:04o}), who could make root write "
            f"elsewhere (run `chmod o-w {path}`)"
        )
    return None


def _symlink_problem(path: str, st: os.stat_result) -> Optional[str]:
    if st.st_uid not in trusted_owners():
        return (
            f"{path} is a symbolic link owned by uid {st.st_uid}, who could repoint it "
            f"(replace it with root's own link or the real directory)"
        )
    return None


class UnsafePath(StoreError):
    """A directory on the way is not one certpull may trust; the message says how to fix it."""


def open_trusted_dir(
    fs: FileOps,
    path: str,
    *,
    create_mode: Optional[int] = None,
    parents_mode: int = 0o755,
) -> Optional[Dir]:
    """Open the directory ``path`` after checking every directory from `/` to it (see the
    module docstring); None when it does not exist and ``create_mode`` is None.

    1. Split the absolute path into components; start at an fd of `/`.
    2. For each component: lstat it below the current fd.
       a. missing: create it (``parents_mode``, or ``create_mode`` for the last one) if asked,
          else return None;
       b. a symbolic link: it must be a trusted owner's; read it and walk its target instead
          (absolute targets restart at `/`), at most MAX_SYMLINK_HOPS links;
       c. a directory: open it with O_NOFOLLOW (a swap since the lstat fails, not follows),
          and check the opened directory itself (fstat): owner and mode.
    3. Return the last directory, opened.
    """
    if not path.startswith("/"):
        raise ValueError(f"{path!r} is not absolute")
    pending = [p for p in path.split("/") if p and p != "."]  # (1)
    current = _open_root(fs)
    try:
        found = _walk(fs, path, current, pending, create_mode, parents_mode)
    except BaseException:
        current.close()
        raise
    if found is None:
        current.close()
    return found


def _open_root(fs: FileOps) -> Dir:
    with io_errors("open", "/"):
        return Dir(fs, fs.open("/", _DIR_FLAGS), "/")


def _walk(
    fs: FileOps,
    path: str,
    start: Dir,
    pending: List[str],
    create_mode: Optional[int],
    parents_mode: int,
) -> Optional[Dir]:
    """Steps (2)-(3) of open_trusted_dir; ``start`` is consumed (returned, or closed)."""
    current = start
    hops = 0
    _check_dir(current, final=not pending)
    while pending:  # (2)
        name = pending.pop(0)
        if name == "..":
            raise UnsafePath(f"refusing {path}: '..' in the path")
        st = current.lstat(name)
        where = current.join(name)
        if st is None:  # (2a)
            if create_mode is None:
                return None
            mode = create_mode if not pending else parents_mode
            current.mkdir(name, mode)
            nxt = current.subdir(name)
            with io_errors("set mode of", where):
                fs.fchmod(nxt.fd, mode)
            with suppress(StoreError):
                current.fsync()
        elif stat.S_ISLNK(st.st_mode):  # (2b)
            problem = _symlink_problem(where, st)
            if problem:
                raise UnsafePath(f"refusing {path}: {problem}")
            hops += 1
            if hops > MAX_SYMLINK_HOPS:
                raise UnsafePath(f"refusing {path}: too many symbolic links")
            target = current.readlink(name) or ""
            pending[:0] = [p for p in target.split("/") if p and p != "."]
            if target.startswith("/"):
                current.close()
                current = _open_root(fs)
            continue
        else:  # (2c)
            nxt = current.subdir(name)
        current.close()
        current = nxt
        _check_dir(current, final=not pending)
    return current  # (3)


def _check_dir(d: Dir, final: bool) -> None:
    problem = dir_problem(d.path, d.fstat(), final)
    if problem:
        raise UnsafePath(f"refusing {d.path if final else 'a path through ' + d.path}: {problem}")


def path_problem(path: str, fs: Optional[FileOps] = None) -> Optional[str]:
    """Why certpull would refuse ``path`` as a directory to write in; None when it would not.

    Read-only (check-config): the part of the path that exists is checked; what is missing
    would be created by certpull itself.
    """
    try:
        found = open_trusted_dir(fs or FileOps(), path)
    except StoreError as exc:
        return str(exc)
    if found is not None:
        found.close()
    return None


def resolve_owner(owner: Optional[str]) -> Optional[int]:
    """The uid of a user name or number; StoreError when no such user exists on this host."""
    if owner is None:
        return None
    try:
        return int(owner) if owner.isdigit() else pwd.getpwnam(owner).pw_uid
    except KeyError:
        raise StoreError(f"owner {owner!r} does not exist on this host") from None


def resolve_group(group: Optional[str]) -> Optional[int]:
    """The gid of a group name or number; StoreError when no such group exists on this host."""
    if group is None:
        return None
    try:
        return int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
    except KeyError:
        raise StoreError(f"group {group!r} does not exist on this host") from None


def read_regular_file(path: str, limit: int = 1 << 20) -> bytes:
    """The bytes of the regular file at ``path`` (symlinks followed, as a reader like httpd
    would); OSError for anything else: a FIFO there must not block the reader."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, f"{path} is not a regular file")
        chunks: List[bytes] = []
        size = 0
        while True:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise OSError(errno.EFBIG, f"{path} is larger than {limit} bytes")
    finally:
        os.close(fd)
