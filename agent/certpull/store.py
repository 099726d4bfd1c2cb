"""Publish a set of named files into one directory atomically: the ``..data`` scheme.

Why: httpd reads certificate, chain and key as separate files, and a reload that sees a new
certificate with the old key stops httpd. So the whole set must switch at once, survive a crash at
any instant, and keep earlier sets for rollback. This is Kubernetes' AtomicWriter layout, plus what
it lacks: fsync of files and directories, a per-version manifest (so half-written versions and
edited files can be told apart), an exclusive lock, and files created with their final mode.

The layout of the target directory (``<live_dir>/<name>/``) is layout.py's; the read side
(active version, completeness, drift checks) is live_view.py's. The module knows nothing about
certificates: it stores named byte strings.
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import stat
import time
from contextlib import contextmanager
from dataclasses import dataclass
from types import MappingProxyType
from typing import Callable, Iterator, List, Mapping, Optional

from certpull.errors import StoreError
from certpull.fileops import (
    FileOps,
    fsync_dir,
    io_errors,
    link_target,
    lstat_or_none,
    reason,
    unlink_if_present,
)
from certpull.layout import (
    DATA_LINK,
    DATA_TMP,
    LINK_TMP,
    MANIFEST,
    NS_PER_S,
    STAGING_PREFIX,
    Manifest,
    encode_manifest,
    manifest_entry,
    validate_file_name,
    version_name,
    version_ns,
)
from certpull.live_view import LiveView

__all__ = ["LiveDir", "PublishResult"]

log = logging.getLogger(__name__)

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


class LiveDir(LiveView):
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
        super().__init__(path, fs)
        self._file_modes = dict(file_modes)
        self._default_mode = default_mode
        self._dir_mode = dir_mode
        self._keep_versions = keep_versions
        self._uid = uid
        self._gid = gid
        self._label_restorer = label_restorer
        self._clock = clock
        self._lock_depth = 0
        self._last_ns = -1

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
            with io_errors("create directory", staging):
                self._fs.mkdir(staging, self._dir_mode)
            try:
                with io_errors("set mode of", staging):
                    self._fs.chmod(staging, self._dir_mode)
                manifest: Manifest = {}
                for name in names:  # (3a)
                    data = bytes(files[name])
                    mode = self._mode_for(name)
                    self._create_file(os.path.join(staging, name), data, mode, chown=True)
                    manifest[name] = manifest_entry(data, mode, self._uid, self._gid)
                body = encode_manifest(manifest)
                self._create_file(os.path.join(staging, MANIFEST), body, 0o600, chown=False)  # (3b)
                fsync_dir(self._fs, staging)  # (3c)
                self._restore_labels(staging)  # (3d)
                version = self._new_version_name(label)  # (3e)
                with io_errors("rename", staging):
                    self._fs.rename(staging, self._join(version))
                final = self._join(version)
                fsync_dir(self._fs, self.path)
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
        if not self._fs.isdir(self.path):
            return []
        removed: List[str] = []
        with self._locked(create=False):
            for entry in sorted(self._listdir(self.path)):
                full = self._join(entry)
                if entry.startswith(STAGING_PREFIX):
                    with io_errors("remove", full):
                        self._fs.rmtree(full)
                    removed.append(entry)
                elif entry in (DATA_TMP, LINK_TMP):
                    unlink_if_present(self._fs, full)
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
                        with io_errors("remove", self._join(version)):
                            self._fs.rmtree(self._join(version))
                        removed.append(version)
            if removed:
                fsync_dir(self._fs, self.path)
        return removed

    def repair(self) -> bool:
        """Restore the user-visible links of the active version; True if anything changed."""
        if not self._fs.isdir(self.path):
            return False
        with self._locked(create=False):
            active = self.current()
            if active is None:
                return False
            return self._point_links(self._names_of(active), missing_only=False)

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
                fsync_dir(self._fs, self.path)  # (4c)
                self._point_links(self._names_of(version), missing_only=False)  # (4d)
            except StoreError:
                if previous is not None and previous != version:
                    self._restore_quietly(previous)
                raise
            return previous

    def _swap_data_link(self, version: str) -> None:
        tmp = self._join(DATA_TMP)
        unlink_if_present(self._fs, tmp)
        with io_errors("create link", tmp):
            self._fs.symlink(version, tmp)  # (4a)
        with io_errors("rename", tmp):
            self._fs.rename(tmp, self._join(DATA_LINK))  # (4b)

    def _restore_quietly(self, previous: str) -> None:
        try:
            self._swap_data_link(previous)
            fsync_dir(self._fs, self.path)
            self._point_links(self._names_of(previous), missing_only=False)
        except StoreError as exc:
            log.warning("%s: could not switch back to %s: %s", self.path, previous, exc)

    def _point_links(self, names: List[str], *, missing_only: bool) -> bool:
        """Make ``<name> -> ..data/<name>`` for each name; drop links to names not in the set."""
        changed = False
        for name in names:
            link = self._join(name)
            want = f"{DATA_LINK}/{name}"
            if link_target(self._fs, link) == want:
                continue
            st = lstat_or_none(self._fs, link)
            if st is not None and missing_only:
                continue
            if st is not None and stat.S_ISDIR(st.st_mode):
                raise StoreError(f"{link} is a directory; expected a link to {want}")
            tmp = self._join(LINK_TMP)
            unlink_if_present(self._fs, tmp)
            with io_errors("create link", tmp):
                self._fs.symlink(want, tmp)
            with io_errors("replace", link):
                self._fs.rename(tmp, link)
            changed = True
        if not missing_only:
            for entry in self._listdir(self.path):
                target = link_target(self._fs, self._join(entry))
                if entry.startswith("..") or entry in names or target is None:
                    continue
                if target.startswith(DATA_LINK + "/"):
                    unlink_if_present(self._fs, self._join(entry))
                    changed = True
        if changed:
            fsync_dir(self._fs, self.path)
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
                with io_errors("remove", self._join(version)):
                    self._fs.rmtree(self._join(version))
            if doomed:
                fsync_dir(self._fs, self.path)
        except StoreError as exc:
            log.warning("%s: pruning old versions failed: %s", self.path, exc)

    def _older_than(self, version: str) -> List[str]:
        ns = version_ns(version)
        return [v for v in self.versions() if version_ns(v) < ns]

    def _create_file(self, path: str, data: bytes, mode: int, *, chown: bool) -> None:
        """Create with the final mode and owner before the first byte; write all; fsync."""
        with io_errors("write", path):
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
        ns = int(self._clock() * NS_PER_S)
        newest = max((version_ns(v) for v in self._version_dirs()), default=-1)
        ns = max(ns, newest + 1, self._last_ns + 1)  # the tie-breaking counter
        self._last_ns = ns
        return version_name(ns, label)

    def _mode_for(self, name: str) -> int:
        return self._file_modes.get(name, self._default_mode)

    def _matches(self, version: str, files: Mapping[str, bytes]) -> bool:
        """Step (2): same names, same bytes, and each file has the mode and owner we would give it."""
        try:
            if set(self._names_of(version)) != set(files):
                return False
            for name, data in files.items():
                st = lstat_or_none(self._fs, self._join(version, name))
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
        elif not self._fs.isdir(self.path):
            yield
            return
        with io_errors("lock", self.path):
            fd = self._fs.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            with io_errors("lock", self.path):
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
        while not self._fs.isdir(path):
            missing.append(path)
            parent = os.path.dirname(path)
            if parent == path:
                break
            path = parent
        for directory in reversed(missing):
            with io_errors("create directory", directory):
                self._fs.mkdir(directory, self._dir_mode)
                self._fs.chmod(directory, self._dir_mode)
            fsync_dir(self._fs, os.path.dirname(directory))

    def _check_names(self, files: Mapping[str, bytes]) -> List[str]:
        if not files:
            raise StoreError("refusing to publish an empty set of files")
        for name in files:
            validate_file_name(name)
        return sorted(files)

    def _unlink_quietly(self, path: str) -> None:
        try:
            unlink_if_present(self._fs, path)
        except StoreError as exc:
            log.warning("%s", exc)

    def _remove_quietly(self, version: str) -> None:
        self._rmtree_quietly(self._join(version))
        try:
            fsync_dir(self._fs, self.path)
        except StoreError as exc:
            log.warning("%s", exc)

    def _rmtree_quietly(self, path: str) -> None:
        """Best effort; whatever stays behind is a ``..staging.*`` or incomplete dir for recover()."""
        try:
            self._fs.rmtree(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("cannot remove %s: %s (recover() will retry)", path, reason(exc))
