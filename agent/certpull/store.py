"""Publish a set of named files into one directory atomically: the ``..data`` scheme.

Why: httpd reads certificate, chain and key as separate files, and a reload that sees a new
certificate with the old key stops httpd. So the whole set must switch at once, survive a crash at
any instant, and keep earlier sets for rollback. This is Kubernetes' AtomicWriter layout, plus what
it lacks: fsync of files and directories, a per-version manifest (so half-written versions and
edited files can be told apart), an exclusive lock, and files created with their final mode.

Layout of the target directory (``<live_dir>/<name>/``)::

    cert.pem    -> ..data/cert.pem        user-visible links, one per file name
    ..data      -> ..2026_11_29_19_30_01.123456789_<label>
    ..2026_...  version directories: the active one and older ones kept for rollback
    ..staging.* a version being written; renamed to a version name only when complete

The module knows nothing about certificates: it stores named byte strings.
"""

from __future__ import annotations

import calendar
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import stat
import time
from contextlib import contextmanager
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional

from certpull.errors import StoreError

__all__ = ["FileOps", "LiveDir", "PublishResult", "sanitize_label", "validate_file_name"]

log = logging.getLogger(__name__)

DATA_LINK = "..data"
DATA_TMP = "..data_tmp"
LINK_TMP = "..link_tmp"
STAGING_PREFIX = "..staging."
MANIFEST = "..manifest"
COMPAT_BACKUP_SUFFIX = ".certpull-orig"
COMPAT_TMP_SUFFIX = ".certpull-tmp"
MAX_LABEL_LEN = 48
MAX_NAME_LEN = 255

_VERSION_RE = re.compile(r"^\.\.(\d{4}_\d{2}_\d{2}_\d{2}_\d{2}_\d{2})\.(\d{9})_([A-Za-z0-9_-]*)$")
_LABEL_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_STAMP_FORMAT = "%Y_%m_%d_%H_%M_%S"
_NS_PER_S = 1_000_000_000
_CREATE_FLAGS = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_NO_MODES: Mapping[str, int] = MappingProxyType({})


@dataclass(frozen=True)
class PublishResult:
    """What ``publish`` did. ``previous`` equals ``version`` when nothing changed."""

    changed: (
        bool  # False when the files were byte-identical to the active version (nothing touched)
    )
    version: str  # the active version dir name after the call
    previous: Optional[str]  # the version that was active before (None on first install)


class FileOps:
    """The system calls LiveDir makes, in one place so tests can make any one of them fail."""

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

    def listdir(self, path: str) -> List[str]:
        return os.listdir(path)

    def rmtree(self, path: str) -> None:
        shutil.rmtree(path)


def validate_file_name(name: str) -> None:
    """Refuse names that are not one plain path component or that collide with the store's own."""
    if not name:
        raise StoreError("invalid file name '': it is empty")
    if "/" in name or "\0" in name:
        raise StoreError(f"invalid file name {name!r}: it must be a single path component")
    if name.startswith(".."):
        raise StoreError(f"invalid file name {name!r}: names starting with '..' are reserved")
    if name == ".":
        raise StoreError("invalid file name '.'")
    if len(name.encode()) > MAX_NAME_LEN:
        raise StoreError(f"invalid file name {name[:40]!r}...: longer than {MAX_NAME_LEN} bytes")


def sanitize_label(label: str) -> str:
    """Keep ``[A-Za-z0-9_-]`` (others become ``_``) and at most MAX_LABEL_LEN characters."""
    return _LABEL_UNSAFE.sub("_", label)[:MAX_LABEL_LEN]


def is_version_name(name: str) -> bool:
    return _VERSION_RE.match(name) is not None


def _version_ns(name: str) -> int:
    """The creation timestamp, in nanoseconds since the epoch, encoded in a version name."""
    match = _VERSION_RE.match(name)
    if match is None:
        raise ValueError(name)
    seconds = calendar.timegm(time.strptime(match.group(1), _STAMP_FORMAT))
    return seconds * _NS_PER_S + int(match.group(2))


def _reason(exc: OSError) -> str:
    return os.strerror(exc.errno) if exc.errno else str(exc)


@contextmanager
def _io(what: str, path: str) -> Iterator[None]:
    """Turn an OSError into a one-line StoreError naming the path and the errno text."""
    try:
        yield
    except OSError as exc:
        raise StoreError(f"cannot {what} {path}: {_reason(exc)}") from exc


class LiveDir:
    """One target directory of atomically switched file sets.

    Publish algorithm (``publish``; steps tagged ``# (n)`` in the code):

     1. Validate the file names (one path component, not starting with ``..``).
     2. Compare with the active version: same names, same bytes, and the configured modes and
        owners -> return ``changed=False`` without touching anything.
     3. Stage (``stage``) into ``..staging.<random>``:
        a. create each file with O_CREAT|O_EXCL|O_NOFOLLOW and its final mode, fchmod (defeats
           the umask) and fchown before the first byte is written; write; fsync;
        b. write the manifest (names, sizes, SHA-256, modes, owners) the same way, mode 0600;
        c. fsync the staging directory;
        d. run the label restorer (SELinux restorecon) on it;
        e. rename it to the timestamped version name; fsync the target directory.
     4. Activate (``activate``):
        a. symlink ``..data_tmp`` -> version;
        b. rename ``..data_tmp`` over ``..data`` -- the commit point;
        c. fsync the target directory;
        d. point each user-visible link at ``..data/<file>`` (tmp link + rename), remove links
           to files the version does not have, fsync; if (c) or (d) fail, put ``..data`` back to
           the previous version and fail;
        e. prune: keep the active version plus the newest ``keep_versions - 1`` complete others.
     5. A failure before (4b) leaves the old set active and untouched; the half-staged directory
        is removed, or left for ``recover()`` if even that fails. A version staged but not
        activated because activation failed is removed.

    Every mutating call holds an exclusive ``flock`` on the target directory, so the daemon and a
    ``certpull rollback`` from the shell cannot interleave. Not thread-safe within one process.
    """

    def __init__(
        self,
        path: str,
        *,
        file_modes: Mapping[str, int] = _NO_MODES,
        default_mode: int = 0o644,
        dir_mode: int = 0o755,
        keep_versions: int = 2,
        uid: Optional[int] = None,
        gid: Optional[int] = None,
        label_restorer: Optional[Callable[[str], None]] = None,
        clock: Callable[[], float] = time.time,
        fs: Optional[FileOps] = None,
    ) -> None:
        if keep_versions < 2:
            raise ValueError(f"keep_versions must be at least 2 (got {keep_versions})")
        for mode in (default_mode, dir_mode, *file_modes.values()):
            if not 0 <= mode <= 0o7777:
                raise ValueError(f"invalid file mode {mode:#o}")
        for name in file_modes:
            validate_file_name(name)
        self.path = os.path.abspath(path)
        self._file_modes = dict(file_modes)
        self._default_mode = default_mode
        self._dir_mode = dir_mode
        self._keep_versions = keep_versions
        self._uid = uid
        self._gid = gid
        self._label_restorer = label_restorer
        self._clock = clock
        self._fs = fs if fs is not None else FileOps()
        self._lock_depth = 0
        self._last_ns = -1

    def __repr__(self) -> str:
        return f"LiveDir({self.path!r})"

    # ---- reading -------------------------------------------------------------------------

    def current(self) -> Optional[str]:
        """The active version dir name, or None if nothing was ever activated."""
        link = self._join(DATA_LINK)
        try:
            target = self._fs.readlink(link)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"cannot read link {link}: {_reason(exc)}") from exc
        if not is_version_name(target):
            raise StoreError(f"{link} points to {target!r}, which is not a version directory")
        return target

    def versions(self) -> List[str]:
        """Complete version dirs, oldest first (see ``_is_complete``)."""
        required = self._required_names()
        return [v for v in self._version_dirs() if self._is_complete(v, required)]

    def read(self, filename: str, version: Optional[str] = None) -> bytes:
        validate_file_name(filename)
        chosen = version if version is not None else self._require_current()
        self._check_version_name(chosen)
        return self._read_bytes(self._join(chosen, filename))

    def read_all(self, version: Optional[str] = None) -> Dict[str, bytes]:
        """Every file of one version (the active one by default), resolved once so they match."""
        chosen = version if version is not None else self._require_current()
        self._check_version_name(chosen)
        return {name: self._read_bytes(self._join(chosen, name)) for name in self._names_of(chosen)}

    # ---- writing -------------------------------------------------------------------------

    def publish(self, files: Mapping[str, bytes], label: str) -> PublishResult:
        """Make ``files`` the active set unless it already is. Steps: see the class docstring."""
        self._check_names(files)  # (1)
        with self._locked(create=True):
            previous = self._current_or_none()
            if previous is not None and self._matches(previous, files):  # (2)
                return PublishResult(changed=False, version=previous, previous=previous)
            version = self.stage(files, label)  # (3)
            try:
                self.activate(version)  # (4)
            except StoreError:
                if self._current_or_none() != version:  # (5)
                    self._remove_quietly(version)
                raise
            return PublishResult(changed=True, version=version, previous=previous)

    def stage(self, files: Mapping[str, bytes], label: str) -> str:
        """Write a complete, fsynced version dir that is not active yet; return its name."""
        names = self._check_names(files)
        with self._locked(create=True):
            staging = self._join(STAGING_PREFIX + secrets.token_hex(8))
            final: Optional[str] = None
            with _io("create directory", staging):
                self._fs.mkdir(staging, self._dir_mode)
            try:
                with _io("set mode of", staging):
                    self._fs.chmod(staging, self._dir_mode)
                manifest: Dict[str, Dict[str, Any]] = {}
                for name in names:  # (3a)
                    data = bytes(files[name])
                    mode = self._mode_for(name)
                    self._create_file(os.path.join(staging, name), data, mode, chown=True)
                    manifest[name] = {
                        "size": len(data),
                        "sha256": hashlib.sha256(data).hexdigest(),
                        "mode": mode,
                        "uid": self._uid,
                        "gid": self._gid,
                    }
                body = json.dumps({"format": 1, "files": manifest}, sort_keys=True).encode()
                self._create_file(os.path.join(staging, MANIFEST), body, 0o600, chown=False)  # (3b)
                self._fsync_dir(staging)  # (3c)
                self._restore_labels(staging)  # (3d)
                version = self._new_version_name(label)  # (3e)
                with _io("rename", staging):
                    self._fs.rename(staging, self._join(version))
                final = self._join(version)
                self._fsync_dir(self.path)
            except Exception:
                self._rmtree_quietly(staging if final is None else final)
                raise
            return version

    def activate(self, version: str) -> Optional[str]:
        """Switch ``..data`` to ``version``; return the version active before. Then prune."""
        with self._locked(create=False):
            previous = self._switch(version)
            self._prune(version)  # (4e)
            return previous

    def rollback(self, discard_current: bool = True) -> str:
        """Re-activate the newest complete version older than the active one; return its name."""
        with self._locked(create=False):
            active = self._current_or_none()
            older = [] if active is None else self._older_than(active)
            if active is None or not older:
                raise StoreError("no previous version to roll back to")
            target = older[-1]
            self._switch(target)
            if discard_current:
                self._remove_quietly(active)
            self._prune(target)
            return target

    def recover(self) -> List[str]:
        """Clean what a crash can leave behind; return the names removed. Idempotent.

        Removes ``..staging.*``, a stale ``..data_tmp`` / ``..link_tmp`` and version dirs that are
        incomplete; recreates missing user-visible links. Never touches the active version.
        """
        if not os.path.isdir(self.path):
            return []
        removed: List[str] = []
        with self._locked(create=False):
            for entry in sorted(self._listdir(self.path)):
                full = self._join(entry)
                if entry.startswith(STAGING_PREFIX):
                    with _io("remove", full):
                        self._fs.rmtree(full)
                    removed.append(entry)
                elif entry in (DATA_TMP, LINK_TMP):
                    self._unlink_if_present(full)
                    removed.append(entry)
            try:
                active = self.current()
            except StoreError:
                active = None
                log.warning(
                    "%s: ..data is not a link to a version; leaving version dirs alone", self.path
                )
            else:
                if active is not None and self._is_dir(self._join(active)):
                    self._point_links(self._names_of(active), missing_only=True)
                required = self._required_names()
                for version in self._version_dirs():
                    if version != active and not self._is_complete(version, required):
                        with _io("remove", self._join(version)):
                            self._fs.rmtree(self._join(version))
                        removed.append(version)
            if removed:
                self._fsync_dir(self.path)
        return removed

    # ---- checking and repairing links ----------------------------------------------------

    def verify_links(self) -> List[str]:
        """Problems with the active set (missing/replaced links, edited files, modes); [] if intact."""
        if not os.path.isdir(self.path):
            return [f"{self.path} does not exist"]
        try:
            active = self.current()
        except StoreError as exc:
            return [str(exc)]
        if active is None:
            return [f"{self._join(DATA_LINK)} is missing: nothing is installed"]
        if not self._is_dir(self._join(active)):
            return [f"{DATA_LINK} points to {active}, which does not exist"]
        problems: List[str] = []
        manifest = self._read_manifest(active)
        if manifest is None:
            problems.append(f"{active} has no readable manifest")
            names = self._names_of(active)
        else:
            names = sorted(manifest)
        for name in names:
            problems.extend(self._link_problems(name))
            if manifest is not None:
                problems.extend(self._file_problems(active, name, manifest[name]))
        for entry in sorted(self._listdir(self.path)):
            target = self._link_target(self._join(entry))
            stray = not entry.startswith("..") and entry not in names
            if stray and target is not None and target.startswith(DATA_LINK + "/"):
                problems.append(f"{entry} points to {target}, which the active version lacks")
        return problems

    def repair(self) -> bool:
        """Restore the user-visible links of the active version; True if anything changed."""
        if not os.path.isdir(self.path):
            return False
        with self._locked(create=False):
            active = self.current()
            if active is None:
                return False
            return self._point_links(self._names_of(active), missing_only=False)

    def link_compat(self, links: Mapping[str, str]) -> None:
        """Make each path a symlink to ``<target dir>/<filename>``, atomically.

        A regular file found there is kept once as ``<path>.certpull-orig`` (a hard link made
        before the swap, so the path never disappears); an existing backup is never overwritten.
        """
        for given, filename in links.items():
            validate_file_name(filename)
            path = os.path.abspath(given)
            parent = os.path.dirname(path)
            if not os.path.isdir(parent):
                raise StoreError(f"cannot link {path}: directory {parent} does not exist")
            want = os.path.join(self.path, filename)
            if self._link_target(path) == want:
                continue
            st = self._lstat_or_none(path)
            if st is not None and stat.S_ISDIR(st.st_mode):
                raise StoreError(f"cannot link {path}: it is a directory")
            tmp = path + COMPAT_TMP_SUFFIX
            self._unlink_if_present(tmp)
            with _io("create link", tmp):
                self._fs.symlink(want, tmp)
            try:
                backup = path + COMPAT_BACKUP_SUFFIX
                if (
                    st is not None
                    and stat.S_ISREG(st.st_mode)
                    and self._lstat_or_none(backup) is None
                ):
                    with _io("keep a backup of", path):
                        self._fs.link(path, backup)
                with _io("replace", path):
                    self._fs.rename(tmp, path)
            except StoreError:
                self._unlink_quietly(tmp)
                raise
            self._fsync_dir(parent)

    # ---- internals: activation -----------------------------------------------------------

    def _switch(self, version: str) -> Optional[str]:
        """Steps (4a)-(4d): swap ``..data`` and the links, or put the previous version back."""
        with self._locked(create=False):
            self._check_version_name(version)
            if not self._is_complete(version, frozenset()):
                raise StoreError(
                    f"cannot activate {self._join(version)}: it is missing or incomplete"
                )
            previous = self._current_or_none()
            self._swap_data_link(version)  # (4a) (4b)
            try:
                self._fsync_dir(self.path)  # (4c)
                self._point_links(self._names_of(version), missing_only=False)  # (4d)
            except StoreError:
                if previous is not None and previous != version:
                    self._restore_quietly(previous)
                raise
            return previous

    def _swap_data_link(self, version: str) -> None:
        tmp = self._join(DATA_TMP)
        self._unlink_if_present(tmp)
        with _io("create link", tmp):
            self._fs.symlink(version, tmp)  # (4a)
        with _io("rename", tmp):
            self._fs.rename(tmp, self._join(DATA_LINK))  # (4b)

    def _restore_quietly(self, previous: str) -> None:
        try:
            self._swap_data_link(previous)
            self._fsync_dir(self.path)
            self._point_links(self._names_of(previous), missing_only=False)
        except StoreError as exc:
            log.warning("%s: could not switch back to %s: %s", self.path, previous, exc)

    def _point_links(self, names: List[str], *, missing_only: bool) -> bool:
        """Make ``<name> -> ..data/<name>`` for each name; drop links to names not in the set."""
        changed = False
        for name in names:
            link = self._join(name)
            want = f"{DATA_LINK}/{name}"
            if self._link_target(link) == want:
                continue
            st = self._lstat_or_none(link)
            if st is not None and missing_only:
                continue
            if st is not None and stat.S_ISDIR(st.st_mode):
                raise StoreError(f"{link} is a directory; expected a link to {want}")
            tmp = self._join(LINK_TMP)
            self._unlink_if_present(tmp)
            with _io("create link", tmp):
                self._fs.symlink(want, tmp)
            with _io("replace", link):
                self._fs.rename(tmp, link)
            changed = True
        if not missing_only:
            for entry in self._listdir(self.path):
                target = self._link_target(self._join(entry))
                if entry.startswith("..") or entry in names or target is None:
                    continue
                if target.startswith(DATA_LINK + "/"):
                    self._unlink_if_present(self._join(entry))
                    changed = True
        if changed:
            self._fsync_dir(self.path)
        return changed

    def _prune(self, active: str) -> None:
        """Step (4e): keep ``active`` and the newest ``keep_versions - 1`` complete others.

        A failure here does not undo the activation: it is logged and the next prune retries.
        """
        try:
            complete = set(self.versions())
            others = [v for v in self._version_dirs() if v != active]
            keep = set([v for v in others if v in complete][-(self._keep_versions - 1) :])
            doomed = [v for v in others if v not in keep]
            for version in doomed:
                with _io("remove", self._join(version)):
                    self._fs.rmtree(self._join(version))
            if doomed:
                self._fsync_dir(self.path)
        except StoreError as exc:
            log.warning("%s: pruning old versions failed: %s", self.path, exc)

    def _older_than(self, version: str) -> List[str]:
        ns = _version_ns(version)
        return [v for v in self.versions() if _version_ns(v) < ns]

    # ---- internals: staging --------------------------------------------------------------

    def _create_file(self, path: str, data: bytes, mode: int, *, chown: bool) -> None:
        """Create with the final mode and owner before the first byte; write all; fsync."""
        with _io("write", path):
            fd = self._fs.open(path, _CREATE_FLAGS, mode)
            try:
                self._fs.fchmod(fd, mode)
                if chown and (self._uid is not None or self._gid is not None):
                    uid = -1 if self._uid is None else self._uid
                    gid = -1 if self._gid is None else self._gid
                    self._fs.fchown(fd, uid, gid)
                view = memoryview(data)
                while view:
                    written = self._fs.write(fd, bytes(view[: 1 << 20]))
                    view = view[written:]
                self._fs.fsync(fd)
            finally:
                self._fs.close(fd)

    def _restore_labels(self, staging: str) -> None:
        if self._label_restorer is None:
            return
        try:
            self._label_restorer(staging)
        except Exception as exc:
            raise StoreError(f"cannot restore SELinux labels on {staging}: {exc}") from exc

    def _new_version_name(self, label: str) -> str:
        """A name that sorts after every existing version, even if the clock stands or steps back."""
        ns = int(self._clock() * _NS_PER_S)
        newest = max((_version_ns(v) for v in self._version_dirs()), default=-1)
        ns = max(ns, newest + 1, self._last_ns + 1)  # the tie-breaking counter
        self._last_ns = ns
        seconds, fraction = divmod(ns, _NS_PER_S)
        stamp = time.strftime(_STAMP_FORMAT, time.gmtime(seconds))
        return f"..{stamp}.{fraction:09d}_{sanitize_label(label)}"

    def _mode_for(self, name: str) -> int:
        return self._file_modes.get(name, self._default_mode)

    def _matches(self, version: str, files: Mapping[str, bytes]) -> bool:
        """Step (2): same names, same bytes, and each file has the mode and owner we would give it."""
        try:
            if set(self._names_of(version)) != set(files):
                return False
            for name, data in files.items():
                st = self._lstat_or_none(self._join(version, name))
                if st is None or not self._owner_and_mode_ok(name, st):
                    return False
                if self._read_bytes(self._join(version, name)) != bytes(data):
                    return False
        except StoreError:
            return False
        return True

    def _owner_and_mode_ok(self, name: str, st: os.stat_result) -> bool:
        return (
            stat.S_ISREG(st.st_mode)
            and stat.S_IMODE(st.st_mode) == self._mode_for(name)
            and (self._uid is None or st.st_uid == self._uid)
            and (self._gid is None or st.st_gid == self._gid)
        )

    # ---- internals: inspection -----------------------------------------------------------

    def _version_dirs(self) -> List[str]:
        """Every directory with a version name, complete or not, oldest first."""
        if not os.path.isdir(self.path):
            return []
        names = [
            n
            for n in self._listdir(self.path)
            if is_version_name(n) and self._is_dir(self._join(n))
        ]
        return sorted(names, key=_version_ns)

    def _required_names(self) -> frozenset[str]:
        """The file names of the active version: every other version must have them too."""
        active = self._current_or_none()
        if active is None or not self._is_dir(self._join(active)):
            return frozenset()
        return frozenset(self._names_of(active))

    def _is_complete(self, version: str, required: frozenset[str]) -> bool:
        """A readable manifest, every file it lists present at its size, and the required names."""
        manifest = self._read_manifest(version)
        if manifest is None or not required <= set(manifest):
            return False
        for name, entry in manifest.items():
            st = self._lstat_or_none(self._join(version, name))
            if st is None or not stat.S_ISREG(st.st_mode) or st.st_size != entry.get("size"):
                return False
        return True

    def _read_manifest(self, version: str) -> Optional[Dict[str, Dict[str, Any]]]:
        try:
            doc = json.loads(self._read_bytes(self._join(version, MANIFEST)))
            files = doc["files"]
        except (StoreError, ValueError, KeyError, TypeError):
            return None
        if not isinstance(files, dict) or not all(isinstance(v, dict) for v in files.values()):
            return None
        return files

    def _names_of(self, version: str) -> List[str]:
        """File names of a version: from its manifest, else the plain files it holds."""
        manifest = self._read_manifest(version)
        if manifest is not None:
            return sorted(manifest)
        vdir = self._join(version)
        return sorted(
            n
            for n in self._listdir(vdir)
            if not n.startswith("..") and self._is_file(os.path.join(vdir, n))
        )

    def _link_problems(self, name: str) -> List[str]:
        link = self._join(name)
        want = f"{DATA_LINK}/{name}"
        target = self._link_target(link)
        if target == want:
            return []
        if target is not None:
            return [f"{name} points to {target}, expected {want}"]
        if self._lstat_or_none(link) is not None:
            return [f"{name} is not a link to {want} (it was replaced by a file or directory)"]
        return [f"{name} is missing (expected a link to {want})"]

    def _file_problems(self, version: str, name: str, entry: Mapping[str, Any]) -> List[str]:
        path = self._join(version, name)
        st = self._lstat_or_none(path)
        if st is None or not stat.S_ISREG(st.st_mode):
            return [f"{DATA_LINK}/{name} is missing or not a regular file"]
        problems: List[str] = []
        try:
            digest = hashlib.sha256(self._read_bytes(path)).hexdigest()
        except StoreError as exc:
            return [str(exc)]
        if digest != entry.get("sha256"):
            problems.append(f"{DATA_LINK}/{name} was modified after it was installed")
        if stat.S_IMODE(st.st_mode) != entry.get("mode"):
            problems.append(
                f"{DATA_LINK}/{name} has mode {stat.S_IMODE(st.st_mode):04o}, expected {entry.get('mode', 0):04o}"
            )
        for what, actual in (("uid", st.st_uid), ("gid", st.st_gid)):
            expected = entry.get(what)
            if expected is not None and actual != expected:
                problems.append(f"{DATA_LINK}/{name} has {what} {actual}, expected {expected}")
        return problems

    # ---- internals: small helpers --------------------------------------------------------

    @contextmanager
    def _locked(self, *, create: bool) -> Iterator[None]:
        """Hold an exclusive flock on the target directory (re-entrant within this object)."""
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        if create:
            self._ensure_target_dir()
        elif not os.path.isdir(self.path):
            yield
            return
        with _io("lock", self.path):
            fd = self._fs.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            with _io("lock", self.path):
                self._fs.flock(fd, fcntl.LOCK_EX)
            self._lock_depth = 1
            try:
                yield
            finally:
                self._lock_depth = 0
        finally:
            self._fs.close(fd)

    def _ensure_target_dir(self) -> None:
        missing: List[str] = []
        path = self.path
        while not os.path.isdir(path):
            missing.append(path)
            parent = os.path.dirname(path)
            if parent == path:
                break
            path = parent
        for directory in reversed(missing):
            with _io("create directory", directory):
                self._fs.mkdir(directory, self._dir_mode)
                self._fs.chmod(directory, self._dir_mode)
            self._fsync_dir(os.path.dirname(directory))

    def _fsync_dir(self, path: str) -> None:
        with _io("sync directory", path):
            fd = self._fs.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                self._fs.fsync(fd)
            finally:
                self._fs.close(fd)

    def _read_bytes(self, path: str) -> bytes:
        with _io("read", path):
            fd = self._fs.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                chunks: List[bytes] = []
                while True:
                    chunk = self._fs.read(fd, 1 << 16)
                    if not chunk:
                        return b"".join(chunks)
                    chunks.append(chunk)
            finally:
                self._fs.close(fd)

    def _join(self, *parts: str) -> str:
        return os.path.join(self.path, *parts)

    def _check_names(self, files: Mapping[str, bytes]) -> List[str]:
        if not files:
            raise StoreError("refusing to publish an empty set of files")
        for name in files:
            validate_file_name(name)
        return sorted(files)

    def _check_version_name(self, version: str) -> None:
        if not is_version_name(version):
            raise StoreError(f"{version!r} is not a version name")

    def _require_current(self) -> str:
        active = self.current()
        if active is None:
            raise StoreError(f"nothing is installed in {self.path}")
        return active

    def _current_or_none(self) -> Optional[str]:
        try:
            return self.current()
        except StoreError:
            return None

    def _listdir(self, path: str) -> List[str]:
        with _io("list", path):
            return self._fs.listdir(path)

    def _lstat_or_none(self, path: str) -> Optional[os.stat_result]:
        try:
            return self._fs.lstat(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ENOTDIR:
                return None
            raise StoreError(f"cannot inspect {path}: {_reason(exc)}") from exc

    def _is_dir(self, path: str) -> bool:
        st = self._lstat_or_none(path)
        return st is not None and stat.S_ISDIR(st.st_mode)

    def _is_file(self, path: str) -> bool:
        st = self._lstat_or_none(path)
        return st is not None and stat.S_ISREG(st.st_mode)

    def _link_target(self, path: str) -> Optional[str]:
        try:
            return self._fs.readlink(path)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.EINVAL, errno.ENOTDIR):
                return None
            raise StoreError(f"cannot read link {path}: {_reason(exc)}") from exc

    def _unlink_if_present(self, path: str) -> None:
        try:
            self._fs.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StoreError(f"cannot remove {path}: {_reason(exc)}") from exc

    def _unlink_quietly(self, path: str) -> None:
        try:
            self._unlink_if_present(path)
        except StoreError as exc:
            log.warning("%s", exc)

    def _remove_quietly(self, version: str) -> None:
        self._rmtree_quietly(self._join(version))
        try:
            self._fsync_dir(self.path)
        except StoreError as exc:
            log.warning("%s", exc)

    def _rmtree_quietly(self, path: str) -> None:
        """Best effort; whatever stays behind is a ``..staging.*`` or incomplete dir for recover()."""
        try:
            self._fs.rmtree(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("cannot remove %s: %s (recover() will retry)", path, _reason(exc))
