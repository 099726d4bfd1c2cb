"""A read-only view of one live directory: which version is active, which versions are
complete, their files, and how the active set differs from what was installed (drift).

No writes and no locks: the drift checks use it as it is; store.LiveDir adds the writing side.
Every system call goes through FileOps, relative to directory descriptors (fileops.Dir): the live
directory is opened once per operation after `open_trusted_dir` checked the way to it, and only a
directory certpull made itself (owned by its user, writable by no one else) is used, as the
certificate's directory and as a version directory. A symlink in their place is never followed.
"""

from __future__ import annotations

import os
import stat
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

from certpull.errors import StoreError
from certpull.fileops import Dir, FileOps, UnsafePath, io_errors, open_trusted_dir
from certpull.layout import (
    DATA_LINK,
    HOLD_NOTE,
    MANIFEST,
    Manifest,
    decode_manifest,
    file_problems,
    is_version_name,
    validate_file_name,
    version_ns,
)

LIVE_ROOT_MODE = 0o755
MAX_FILE_BYTES = 1 << 20  # a certificate file larger than this is not ours


class BrokenDataLink(StoreError):
    """``..data`` exists but is not a link to a version (a file, a directory, a foreign target)."""


def own_dir_problem(path: str, st: os.stat_result) -> Optional[str]:
    """Why ``path`` is not a directory certpull made (owned by its user, writable by no one
    else); None when it is."""
    if stat.S_ISLNK(st.st_mode):
        return f"{path} is a symbolic link; certpull makes this directory itself (remove the link)"
    if not stat.S_ISDIR(st.st_mode):
        return f"{path} is not a directory"
    if st.st_uid != os.geteuid():
        return f"{path} is owned by uid {st.st_uid}: certpull did not make it (remove it)"
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o002:
        return f"{path} is writable by others (mode {mode:04o}): certpull did not make it"
    if mode & 0o020:
        return f"{path} is writable by its group (mode {mode:04o}): certpull did not make it"
    return None


class LiveView:
    """Reads ``<live_dir>/<name>``; see layout.py for what lives there."""

    def __init__(self, path: str, fs: Optional[FileOps] = None) -> None:
        self.path = os.path.abspath(path)
        self.parent, self.name = os.path.split(self.path)
        self._fs = fs if fs is not None else FileOps()
        self._held: Optional[Dir] = None  # the open directory while LiveDir holds its lock

    def __repr__(self) -> str:
        return f"LiveDir({self.path!r})"

    # --- opening --------------------------------------------------------------------------

    @contextmanager
    def _dir(self, create: bool = False, dir_mode: int = 0o755) -> Iterator[Optional[Dir]]:
        """The certificate's directory, opened safely; None when it does not exist (yet)."""
        if self._held is not None:
            yield self._held
            return
        opened = self._open(create, dir_mode)
        try:
            yield opened
        finally:
            if opened is not None:
                opened.close()

    def _open(self, create: bool, dir_mode: int) -> Optional[Dir]:
        parent = open_trusted_dir(
            self._fs, self.parent, create_mode=LIVE_ROOT_MODE if create else None
        )
        if parent is None:
            return None
        with parent:
            st = parent.lstat(self.name)
            if st is None:
                if not create:
                    return None
                parent.mkdir(self.name, dir_mode)
                created = parent.subdir(self.name)
                try:
                    with_mode(created, dir_mode)
                    parent.fsync()
                except BaseException:
                    created.close()
                    raise
                return created
            problem = own_dir_problem(self.path, st)
            if problem:
                raise UnsafePath(f"refusing {self.path}: {problem}")
            opened = parent.subdir(self.name)
        problem = own_dir_problem(self.path, opened.fstat())  # the one opened, not the one seen
        if problem:
            opened.close()
            raise UnsafePath(f"refusing {self.path}: {problem}")
        return opened

    def _version(self, d: Dir, version: str) -> Optional[Dir]:
        """A version directory certpull made, opened; None when missing or someone else's."""
        if not is_version_name(version):
            return None
        st = d.lstat(version)
        if st is None or own_dir_problem(d.join(version), st) is not None:
            return None
        try:
            opened = d.subdir(version)
        except StoreError:
            return None
        if own_dir_problem(opened.path, opened.fstat()) is not None:
            opened.close()
            return None
        return opened

    # --- the public read side -------------------------------------------------------------

    def current(self) -> Optional[str]:
        """The active version dir name, or None if nothing was ever activated."""
        with self._dir() as d:
            return None if d is None else self._current_in(d)

    def versions(self) -> List[str]:
        """Complete version dirs certpull made, oldest first (see ``_is_complete``)."""
        with self._dir() as d:
            if d is None:
                return []
            required = self._required_names(d)
            return [v for v in self._version_dirs(d) if self._is_complete(d, v, required)]

    def read(self, filename: str, version: Optional[str] = None) -> bytes:
        validate_file_name(filename)
        with self._dir() as opened:
            d, chosen = self._chosen(opened, version)
            with self._require_version(d, chosen) as vdir:
                return vdir.read_file(filename, MAX_FILE_BYTES)

    def read_all(self, version: Optional[str] = None) -> Dict[str, bytes]:
        """Every file of one version (the active one by default), resolved once so they match."""
        with self._dir() as opened:
            d, chosen = self._chosen(opened, version)
            with self._require_version(d, chosen) as vdir:
                names = self._names_in(vdir)
                return {name: vdir.read_file(name, MAX_FILE_BYTES) for name in names}

    def hold(self) -> Optional[str]:
        """The version id recorded as held after a rollback (``..held``), if any."""
        with self._dir() as d:
            if d is None or d.lstat(HOLD_NOTE) is None:
                return None
            try:
                text = d.read_file(HOLD_NOTE, 256).decode("ascii", "replace").strip()
            except StoreError:
                return None
        return text or None

    def verify_links(self) -> List[str]:
        """Problems with the active set (missing/replaced links, edited files, modes); [] if intact."""
        try:
            with self._dir() as d:
                if d is None:
                    return [f"{self.path} does not exist"]
                return self._link_set_problems(d)
        except StoreError as exc:
            return [str(exc)]

    # --- internals ------------------------------------------------------------------------

    def _current_in(self, d: Dir) -> Optional[str]:
        st = d.lstat(DATA_LINK)
        if st is None:
            return None
        link = d.join(DATA_LINK)
        if not stat.S_ISLNK(st.st_mode):
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a link"
            raise BrokenDataLink(f"{link} is {kind}, not a link to a version directory")
        target = d.readlink(DATA_LINK)
        if target is None or not is_version_name(target):
            raise BrokenDataLink(f"{link} points to {target!r}, which is not a version directory")
        return target

    def _current_or_none_in(self, d: Dir) -> Optional[str]:
        try:
            return self._current_in(d)
        except StoreError:
            return None

    def _chosen(self, d: Optional[Dir], version: Optional[str]) -> Tuple[Dir, str]:
        """The open directory and the version to read (the active one by default)."""
        if d is None:
            raise StoreError(f"nothing is installed in {self.path}")
        if version is None:
            active = self._current_in(d)
            if active is None:
                raise StoreError(f"nothing is installed in {self.path}")
            return d, active
        if not is_version_name(version):
            raise StoreError(f"{version!r} is not a version name")
        return d, version

    @contextmanager
    def _require_version(self, d: Dir, version: str) -> Iterator[Dir]:
        vdir = self._version(d, version)
        if vdir is None:
            raise StoreError(
                f"cannot read {d.join(version)}: No such file or directory"
                if d.lstat(version) is None
                else f"cannot read {d.join(version)}: certpull did not make it"
            )
        with vdir:
            yield vdir

    def _link_set_problems(self, d: Dir) -> List[str]:
        active = self._current_in(d)
        if active is None:
            return [f"{d.join(DATA_LINK)} is missing: nothing is installed"]
        vdir = self._version(d, active)
        if vdir is None:
            return [f"{DATA_LINK} points to {active}, which does not exist"]
        problems: List[str] = []
        with vdir:
            manifest = self._read_manifest(vdir)
            if manifest is None:
                problems.append(f"{active} has no readable manifest")
                names = self._names_in(vdir)
            else:
                names = sorted(manifest)
            for name in names:
                problems.extend(self._link_problems(d, name))
                if manifest is not None:
                    problems.extend(self._file_problems(vdir, name, manifest[name]))
        for entry in sorted(d.listdir()):
            target = d.readlink(entry)
            stray = not entry.startswith("..") and entry not in names
            if stray and target is not None and target.startswith(DATA_LINK + "/"):
                problems.append(f"{entry} points to {target}, which the active version lacks")
        return problems

    def _version_dirs(self, d: Dir) -> List[str]:
        """Every directory certpull made with a version name, complete or not, oldest first."""
        names = []
        for name in d.listdir():
            if not is_version_name(name):
                continue
            st = d.lstat(name)
            if st is not None and own_dir_problem(d.join(name), st) is None:
                names.append(name)
        return sorted(names, key=version_ns)

    def _required_names(self, d: Dir) -> frozenset[str]:
        """The file names of the active version: every other version must have them too."""
        active = self._current_or_none_in(d)
        vdir = None if active is None else self._version(d, active)
        if vdir is None:
            return frozenset()
        with vdir:
            return frozenset(self._names_in(vdir))

    def _is_complete(self, d: Dir, version: str, required: frozenset[str]) -> bool:
        """Made by certpull, a readable manifest, every file it lists present at its size, and
        the required names."""
        vdir = self._version(d, version)
        if vdir is None:
            return False
        with vdir:
            manifest = self._read_manifest(vdir)
            if manifest is None or not required <= set(manifest):
                return False
            for name, entry in manifest.items():
                st = vdir.lstat(name)
                if st is None or not stat.S_ISREG(st.st_mode) or st.st_size != entry.get("size"):
                    return False
        return True

    def _read_manifest(self, vdir: Dir) -> Optional[Manifest]:
        try:
            return decode_manifest(vdir.read_file(MANIFEST, MAX_FILE_BYTES))
        except StoreError:
            return None

    def _names_in(self, vdir: Dir) -> List[str]:
        """File names of a version: from its manifest, else the plain files it holds."""
        manifest = self._read_manifest(vdir)
        if manifest is not None:
            return sorted(manifest)
        names = []
        for name in vdir.listdir():
            st = vdir.lstat(name)
            if not name.startswith("..") and st is not None and stat.S_ISREG(st.st_mode):
                names.append(name)
        return sorted(names)

    def _link_problems(self, d: Dir, name: str) -> List[str]:
        want = f"{DATA_LINK}/{name}"
        target = d.readlink(name)
        if target == want:
            return []
        if target is not None:
            return [f"{name} points to {target}, expected {want}"]
        if d.lstat(name) is not None:
            return [f"{name} is not a link to {want} (it was replaced by a file or directory)"]
        return [f"{name} is missing (expected a link to {want})"]

    def _file_problems(self, vdir: Dir, name: str, entry: Mapping[str, Any]) -> List[str]:
        st = vdir.lstat(name)
        if st is None or not stat.S_ISREG(st.st_mode):
            return [f"{DATA_LINK}/{name} is missing or not a regular file"]
        try:
            data = vdir.read_file(name, MAX_FILE_BYTES)
        except StoreError as exc:
            return [str(exc)]
        return file_problems(name, st, data, entry)


def with_mode(d: Dir, mode: int) -> None:
    """Set an open directory's mode (the umask is not applied to an fchmod)."""
    with io_errors("set mode of", d.path):
        d.fs.fchmod(d.fd, mode)
