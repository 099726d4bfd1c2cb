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
from typing import Mapping, Optional

from certpull.errors import StoreError
from certpull.fileops import Dir, FileOps, open_trusted_dir
from certpull.layout import validate_file_name

log = logging.getLogger(__name__)

BACKUP_SUFFIX = ".certpull-orig"
TMP_SUFFIX = ".certpull-tmp"


class CompatLinks:
    """The compat links of one certificate: path -> file name in ``live_path``."""

    def __init__(
        self, live_path: str, links: Mapping[str, str], fs: Optional[FileOps] = None
    ) -> None:
        for filename in links.values():
            validate_file_name(filename)
        self.live_path = os.path.abspath(live_path)
        self.links = {os.path.abspath(path): filename for path, filename in links.items()}
        self._fs = fs if fs is not None else FileOps()

    def __bool__(self) -> bool:
        return bool(self.links)

    def apply(self) -> None:
        """Make each path a symlink to ``<live_path>/<filename>``, atomically.

        1. The path's directory must exist (it is the distribution's, not ours to create), and
           it and every directory above it must pass `open_trusted_dir`'s checks; it is opened
           once and every step below is relative to it, so it cannot be swapped mid-way.
        2. Already a link to the live file: nothing to do.
        3. Create ``<path>.certpull-tmp`` -> the live file.
        4. A regular file at the path is kept once as ``<path>.certpull-orig`` (a hard link made
           before the swap, so the path never disappears); an existing backup is never replaced.
        5. Rename the temporary link over the path; fsync the directory.
        """
        for path, filename in self.links.items():
            parent_path, name = os.path.split(path)
            parent = open_trusted_dir(self._fs, parent_path)  # (1)
            if parent is None:
                raise StoreError(f"cannot link {path}: directory {parent_path} does not exist")
            with parent:
                self._apply_one(parent, name, os.path.join(self.live_path, filename))

    def _apply_one(self, parent: Dir, name: str, want: str) -> None:
        path = parent.join(name)
        if parent.readlink(name) == want:  # (2)
            return
        st = parent.lstat(name)
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise StoreError(f"cannot link {path}: it is a directory")
        tmp = name + TMP_SUFFIX
        parent.unlink_if_present(tmp)
        parent.symlink(want, tmp)  # (3)
        try:
            backup = name + BACKUP_SUFFIX
            if st is not None and stat.S_ISREG(st.st_mode) and parent.lstat(backup) is None:
                parent.link(name, backup)  # (4)
            parent.rename(tmp, name, what="replace")  # (5)
        except StoreError:
            try:
                parent.unlink_if_present(tmp)
            except StoreError as exc:
                log.warning("%s", exc)
            raise
        parent.fsync()
