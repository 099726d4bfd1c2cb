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
from typing import Any, Callable, Iterator, List, Mapping, Optional

from certpull.errors import StoreError
from certpull.fileops import Dir, FileOps, io_errors, reason
from certpull.layout import (
    DATA_LINK,
    DATA_TMP,
    HOLD_NOTE,
    LINK_TMP,
    MANIFEST,
    NS_PER_S,
    STAGING_PREFIX,
    Manifest,
    encode_manifest,
    is_version_name,
    manifest_entry,
    validate_file_name,
    version_name,
    version_ns,
)
from certpull.live_view import MAX_FILE_BYTES, LiveView, with_mode

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
        self._last_ns = -1

    def publish(self, files: Mapping[str, bytes], label: str) -> PublishResult:
        """Make ``files`` the active set unless it already is. Steps: see the class docstring."""
        self._check_names(files)  # (1)
        with self._locked(create=True) as d:
            previous = self._current_or_none_in(d)
            if previous is not None and self._matches(d, previous, files):  # (2)
                return PublishResult(changed=False, version=previous, previous=previous)
            if previous is not None and self._version(d, previous) is None:
                previous = None  # ..data dangles: nothing to go back to
            version = self.stage(files, label)  # (3)
            try:
                self.activate(version)  # (4)
            except StoreError:
                if self._current_or_none_in(d) != version:  # (5)
                    self._remove_quietly(d, version)
                raise
            return PublishResult(changed=True, version=version, previous=previous)

    def stage(self, files: Mapping[str, bytes], label: str) -> str:
        """Write a complete, fsynced version dir that is not active yet; return its name."""
        names = self._check_names(files)
        with self._locked(create=True) as d:
            staging = STAGING_PREFIX + secrets.token_hex(8)
            final: Optional[str] = None
            d.mkdir(staging, self._dir_mode)
            try:
                with d.subdir(staging) as sdir:
                    with_mode(sdir, self._dir_mode)
                    manifest: Manifest = {}
                    for name in names:  # (3a)
                        data = bytes(files[name])
                        mode = self._mode_for(name)
                        self._create_file(sdir, name, data, mode, chown=True)
                        manifest[name] = manifest_entry(data, mode, self._uid, self._gid)
                    body = encode_manifest(manifest)
                    self._create_file(sdir, MANIFEST, body, 0o600, chown=False)  # (3b)
                    sdir.fsync()  # (3c)
                self._restore_labels(d.join(staging))  # (3d)
                version = self._new_version_name(d, label)  # (3e)
                d.rename(staging, version)
                final = version
                d.fsync()
            except Exception:
                self._rmtree_quietly(d, staging if final is None else final)
                raise
            return version

    def activate(self, version: str) -> Optional[str]:
        """Switch ``..data`` to ``version``; return the version active before. Then prune."""
        with self._locked(create=False) as d:
            if d is None:
                raise StoreError(f"cannot activate {self._join(version)}: {self.path} is missing")
            previous = self._switch(d, version)
            self._prune(d, version)  # (4e)
            return previous

    def rollback(self, discard_current: bool = True) -> str:
        """Re-activate the newest complete version older than the active one; return its name."""
        with self._locked(create=False) as d:
            active = None if d is None else self._current_or_none_in(d)
            older = [] if d is None or active is None else self._older_than(d, active)
            if d is None or active is None or not older:
                raise StoreError("no previous version to roll back to")
            target = older[-1]
            self._switch(d, target)
            if discard_current:
                self._remove_quietly(d, active)
            self._prune(d, target)
            return target

    def rollback_target(self) -> Optional[str]:
        """The version ``rollback`` would re-activate now; None when there is none."""
        with self._dir() as d:
            active = None if d is None else self._current_or_none_in(d)
            if d is None or active is None:
                return None
            older = self._older_than(d, active)
            return older[-1] if older else None

    def recover(self) -> List[str]:
        """Clean what a crash can leave behind; return the names removed. Idempotent.

        Removes ``..staging.*``, a stale ``..data_tmp`` / ``..link_tmp`` / ``..held.tmp`` (whatever
        they are, directories included) and version dirs that are
        incomplete; recreates missing user-visible links. Never touches the active version, nor
        a directory certpull did not make.
        """
        removed: List[str] = []
        with self._locked(create=False) as d:
            if d is None:
                return []
            for entry in sorted(d.listdir()):
                if entry.startswith(STAGING_PREFIX):
                    d.rmtree(entry)
                    removed.append(entry)
                elif entry in (DATA_TMP, LINK_TMP, HOLD_NOTE + ".tmp"):
                    d.remove(entry)
                    removed.append(entry)
            try:
                active = self._current_in(d)
            except StoreError as exc:
                active = None
                log.warning("%s; leaving version dirs alone", exc)
            else:
                vdir = None if active is None else self._version(d, active)
                if vdir is not None:
                    with vdir:
                        names = self._names_in(vdir)
                    self._point_links(d, names, missing_only=True)
                required = self._required_names(d)
                for version in self._version_dirs(d):
                    if version != active and not self._is_complete(d, version, required):
                        d.rmtree(version)
                        removed.append(version)
            if removed:
                d.fsync()
        return removed

    def repair(self) -> bool:
        """Restore the user-visible links of the active version; True if anything changed."""
        with self._locked(create=False) as d:
            if d is None:
                return False
            active = self._current_in(d)
            vdir = None if active is None else self._version(d, active)
            if vdir is None:
                return False
            with vdir:
                names = self._names_in(vdir)
            return self._point_links(d, names, missing_only=False)

    def _switch(self, d: Dir, version: str) -> Optional[str]:
        """Steps (4a)-(4d): swap ``..data`` and the links, or put the previous version back."""
        if not is_version_name(version):
            raise StoreError(f"{version!r} is not a version name")
        vdir = self._version(d, version)
        if vdir is None or not self._is_complete(d, version, frozenset()):
            if vdir is not None:
                vdir.close()
            raise StoreError(f"cannot activate {d.join(version)}: it is missing or incomplete")
        with vdir:
            names = self._names_in(vdir)
        previous = self._current_or_none_in(d)
        self._swap_data_link(d, version)  # (4a) (4b)
        try:
            d.fsync()  # (4c)
            self._point_links(d, names, missing_only=False)  # (4d)
        except StoreError:
            if previous is not None and previous != version:
                self._restore_quietly(d, previous)
            raise
        return previous

    def _swap_data_link(self, d: Dir, version: str) -> None:
        d.remove(DATA_TMP)
        d.symlink(version, DATA_TMP)  # (4a)
        st = d.lstat(DATA_LINK)
        if st is not None and stat.S_ISDIR(st.st_mode):
            self._displace(d, DATA_LINK)  # a restore that dereferenced the links?
        d.rename(DATA_TMP, DATA_LINK)  # (4b)

    def _displace(self, d: Dir, name: str) -> None:
        """A directory where certpull keeps a link is not ours to keep: move it where
        recover() cleans up (a ``..staging.`` name), so the link can take its place."""
        aside = f"{STAGING_PREFIX}displaced-{name.strip('.')}.{secrets.token_hex(4)}"
        log.warning("%s is a directory; moving it aside as %s", d.join(name), aside)
        d.rename(name, aside)

    def set_hold(self, version_id: Optional[str]) -> None:
        """Record (or clear, with None) the version the operator rolled back from, next to the
        versions (``..held``): state.json is a cache, and a hold must survive losing it."""
        with self._locked(create=False) as d:
            if d is None:
                return
            if version_id is None:
                d.unlink_if_present(HOLD_NOTE)
                return
            tmp = HOLD_NOTE + ".tmp"
            d.remove(tmp)
            self._create_file(d, tmp, version_id.encode() + b"\n", 0o644, chown=False)
            d.rename(tmp, HOLD_NOTE)
            d.fsync()

    def _restore_quietly(self, d: Dir, previous: str) -> None:
        try:
            vdir = self._version(d, previous)
            if vdir is None:
                return
            with vdir:
                names = self._names_in(vdir)
            self._swap_data_link(d, previous)
            d.fsync()
            self._point_links(d, names, missing_only=False)
        except StoreError as exc:
            log.warning("%s: could not switch back to %s: %s", self.path, previous, exc)

    def _point_links(self, d: Dir, names: List[str], *, missing_only: bool) -> bool:
        """Make ``<name> -> ..data/<name>`` for each name; drop links to names not in the set."""
        changed = False
        for name in names:
            want = f"{DATA_LINK}/{name}"
            if d.readlink(name) == want:
                continue
            st = d.lstat(name)
            if st is not None and missing_only:
                continue
            if st is not None and stat.S_ISDIR(st.st_mode):
                self._displace(d, name)  # someone's directory under the name of a live file
            d.remove(LINK_TMP)
            d.symlink(want, LINK_TMP)
            d.rename(LINK_TMP, name, what="replace")
            changed = True
        if not missing_only:
            for entry in d.listdir():
                target = d.readlink(entry)
                if entry.startswith("..") or entry in names or target is None:
                    continue
                if target.startswith(DATA_LINK + "/"):
                    d.unlink_if_present(entry)
                    changed = True
        if changed:
            d.fsync()
        return changed

    def _prune(self, d: Dir, active: str) -> None:
        """Step (4e): keep ``active`` and the newest ``keep_versions - 1`` complete others.

        A failure here does not undo the activation: it is logged and the next prune retries.
        """
        try:
            required = self._required_names(d)
            complete = {v for v in self._version_dirs(d) if self._is_complete(d, v, required)}
            others = [v for v in self._version_dirs(d) if v != active]
            keep = set([v for v in others if v in complete][-(self._keep_versions - 1) :])
            doomed = [v for v in others if v not in keep]
            for version in doomed:
                d.rmtree(version)
            if doomed:
                d.fsync()
        except StoreError as exc:
            log.warning("%s: pruning old versions failed: %s", self.path, exc)

    def _older_than(self, d: Dir, version: str) -> List[str]:
        ns = version_ns(version)
        required = self._required_names(d)
        return [
            v
            for v in self._version_dirs(d)
            if version_ns(v) < ns and self._is_complete(d, v, required)
        ]

    def _create_file(self, sdir: Dir, name: str, data: bytes, mode: int, *, chown: bool) -> None:
        """Create with the final mode and owner before the first byte; write all; fsync."""
        with io_errors("write", sdir.join(name)):
            fd = sdir.open(name, _CREATE_FLAGS, mode)
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

    def _new_version_name(self, d: Dir, label: str) -> str:
        """A name that sorts after every existing version, even if the clock stands or steps back."""
        ns = int(self._clock() * NS_PER_S)
        newest = max((version_ns(v) for v in self._version_dirs(d)), default=-1)
        ns = max(ns, newest + 1, self._last_ns + 1)  # the tie-breaking counter
        self._last_ns = ns
        return version_name(ns, label)

    def _mode_for(self, name: str) -> int:
        return self._file_modes.get(name, self._default_mode)

    def _matches(self, d: Dir, version: str, files: Mapping[str, bytes]) -> bool:
        """Step (2): same names, same bytes, and each file has the mode and owner we would give it."""
        vdir = self._version(d, version)
        if vdir is None:
            return False
        try:
            with vdir:
                manifest = self._read_manifest(vdir)
                if manifest is None or set(manifest) != set(files):
                    return False
                for name, data in files.items():
                    st = vdir.lstat(name)
                    if st is None or not self._owner_and_mode_ok(name, st):
                        return False
                    if vdir.read_file(name, MAX_FILE_BYTES) != bytes(data):
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
    def _locked(self, *, create: bool) -> Iterator[Any]:
        """Open the directory (created when asked) and hold an exclusive flock on it, re-entrant
        within this object; yields the open Dir, or None when it does not exist."""
        if self._held is not None:
            yield self._held
            return
        d = self._open(create, self._dir_mode)
        if d is None:
            yield None
            return
        try:
            with io_errors("lock", self.path):
                self._fs.flock(d.fd, fcntl.LOCK_EX)
            self._held = d
            try:
                yield d
            finally:
                self._held = None
        finally:
            d.close()

    def _check_names(self, files: Mapping[str, bytes]) -> List[str]:
        if not files:
            raise StoreError("refusing to publish an empty set of files")
        for name in files:
            validate_file_name(name)
        return sorted(files)

    def _join(self, *parts: str) -> str:
        return os.path.join(self.path, *parts)

    def _remove_quietly(self, d: Dir, version: str) -> None:
        self._rmtree_quietly(d, version)
        try:
            d.fsync()
        except StoreError as exc:
            log.warning("%s", exc)

    def _rmtree_quietly(self, d: Dir, name: str) -> None:
        """Best effort; whatever stays behind is a ``..staging.*`` or incomplete dir for recover()."""
        try:
            self._fs.rmtree(name, d.fd)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("cannot remove %s: %s (recover() will retry)", d.join(name), reason(exc))
