"""Compat links: existing paths that an unmodified ssl.conf names (Amazon Linux's
/etc/pki/tls/certs/localhost.crt, ...) made symlinks into a certificate's live directory.

They live outside the live directory, so they are not part of its atomic `..data` switch: each
link points at a stable live path (`<live>/cert.pem`), which itself follows `..data`, so a link is
made once and then follows every version. Making one is atomic too (a temporary link renamed over
the path), and a regular file found there is kept once as `<path>.certpull-orig`.
"""

from __future__ import annotations

import logging
import os
import stat
from typing import AbstractSet, List, Mapping, Optional

from certpull.errors import StoreError
from certpull.fileops import Dir, FileOps, io_errors, open_trusted_dir
from certpull.layout import validate_file_name

log = logging.getLogger(__name__)

BACKUP_SUFFIX = ".certpull-orig"
TMP_SUFFIX = ".certpull-tmp"


class CompatLinks:
    """The compat links of one certificate: path -> file name in ``live_path``."""

    def __init__(
        self,
        live_path: str,
        links: Mapping[str, str],
        fs: Optional[FileOps] = None,
        private: AbstractSet[str] = frozenset(),
    ) -> None:
        """``private``: live file names that hold a key; their backups are made 0600 first."""
        for filename in links.values():
            validate_file_name(filename)
        self.live_path = os.path.abspath(live_path)
        self.links = {os.path.abspath(path): filename for path, filename in links.items()}
        self.private = frozenset(private)
        self._fs = fs if fs is not None else FileOps()

    def __bool__(self) -> bool:
        return bool(self.links)

    def apply(self) -> bool:
        """Make each path a symlink to ``<live_path>/<filename>``, atomically; True if any changed.

        1. The path's directory must exist (it is the distribution's, not ours to create), and
           it and every directory above it must pass `open_trusted_dir`'s checks; it is opened
           once and every step below is relative to it, so it cannot be swapped mid-way.
        2. Already a link to the live file: nothing to do.
        3. Create ``<path>.certpull-tmp`` -> the live file.
        4. A regular file at the path is kept once as ``<path>.certpull-orig`` (a hard link made
           before the swap, so the path never disappears); an existing backup is never replaced.
           A key file found readable by others (the sample's Run Command document wrote them
           0644) is made 0600 first, through a descriptor opened without following links, so
           the backup does not keep the key readable.
        5. Rename the temporary link over the path; fsync the directory.
        """
        changed = False
        for path, filename in self.links.items():
            parent_path, name = os.path.split(path)
            parent = open_trusted_dir(self._fs, parent_path)  # (1)
            if parent is None:
                raise StoreError(f"cannot link {path}: directory {parent_path} does not exist")
            with parent:
                want = os.path.join(self.live_path, filename)
                changed |= self._apply_one(parent, name, want, filename in self.private)
        return changed

    def unlinked(self) -> List[str]:
        """The paths ``apply`` would change (not yet a link to their live file); read-only."""
        found = []
        for path, filename in self.links.items():
            parent_path, name = os.path.split(path)
            parent = open_trusted_dir(self._fs, parent_path)
            if parent is None:
                found.append(path)
                continue
            with parent:
                if parent.readlink(name) != os.path.join(self.live_path, filename):
                    found.append(path)
        return found

    def _apply_one(self, parent: Dir, name: str, want: str, private: bool) -> bool:
        path = parent.join(name)
        if parent.readlink(name) == want:  # (2)
            return False
        st = parent.lstat(name)
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise StoreError(f"cannot link {path}: it is a directory")
        tmp = name + TMP_SUFFIX
        parent.unlink_if_present(tmp)
        parent.symlink(want, tmp)  # (3)
        try:
            backup = name + BACKUP_SUFFIX
            if st is not None and stat.S_ISREG(st.st_mode) and parent.lstat(backup) is None:
                if private and stat.S_IMODE(st.st_mode) & 0o077:
                    self._restrict(parent, name)
                parent.link(name, backup)  # (4)
            parent.rename(tmp, name, what="replace")  # (5)
        except StoreError:
            try:
                parent.unlink_if_present(tmp)
            except StoreError as exc:
                log.warning("%s", exc)
            raise
        parent.fsync()
        return True

    @staticmethod
    def _restrict(parent: Dir, name: str) -> None:
        path = parent.join(name)
        with io_errors("restrict the mode of", path):
            fd = parent.open(name, os.O_RDONLY)
            try:
                parent.fs.fchmod(fd, 0o600)
            finally:
                parent.fs.close(fd)
        log.warning("%s was readable by other users; made it 0600 before keeping it", path)
