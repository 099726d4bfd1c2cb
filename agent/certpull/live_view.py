"""A read-only view of one live directory: which version is active, which versions are
complete, their files, and how the active set differs from what was installed (drift).

No writes and no locks: `certpull status`-like readers and the drift checks use it as it is;
store.LiveDir adds the writing side. Every system call goes through FileOps.
"""

from __future__ import annotations

import os
import stat
from typing import Any, Dict, List, Mapping, Optional

from certpull.errors import StoreError
from certpull.fileops import FileOps, io_errors, link_target, lstat_or_none, reason
from certpull.layout import (
    DATA_LINK,
    MANIFEST,
    Manifest,
    decode_manifest,
    file_problems,
    is_version_name,
    validate_file_name,
    version_ns,
)


class LiveView:
    """Reads ``<live_dir>/<name>``; see layout.py for what lives there."""

    def __init__(self, path: str, fs: Optional[FileOps] = None) -> None:
        self.path = os.path.abspath(path)
        self._fs = fs if fs is not None else FileOps()

    def __repr__(self) -> str:
        return f"LiveDir({self.path!r})"

    def current(self) -> Optional[str]:
        """The active version dir name, or None if nothing was ever activated."""
        link = self._join(DATA_LINK)
        try:
            target = self._fs.readlink(link)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"cannot read link {link}: {reason(exc)}") from exc
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

    def verify_links(self) -> List[str]:
        """Problems with the active set (missing/replaced links, edited files, modes); [] if intact."""
        if not self._fs.isdir(self.path):
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
            target = link_target(self._fs, self._join(entry))
            stray = not entry.startswith("..") and entry not in names
            if stray and target is not None and target.startswith(DATA_LINK + "/"):
                problems.append(f"{entry} points to {target}, which the active version lacks")
        return problems

    def _version_dirs(self) -> List[str]:
        """Every directory with a version name, complete or not, oldest first."""
        if not self._fs.isdir(self.path):
            return []
        names = [
            n
            for n in self._listdir(self.path)
            if is_version_name(n) and self._is_dir(self._join(n))
        ]
        return sorted(names, key=version_ns)

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
            st = lstat_or_none(self._fs, self._join(version, name))
            if st is None or not stat.S_ISREG(st.st_mode) or st.st_size != entry.get("size"):
                return False
        return True

    def _read_manifest(self, version: str) -> Optional[Manifest]:
        try:
            return decode_manifest(self._read_bytes(self._join(version, MANIFEST)))
        except StoreError:
            return None

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
        target = link_target(self._fs, link)
        if target == want:
            return []
        if target is not None:
            return [f"{name} points to {target}, expected {want}"]
        if lstat_or_none(self._fs, link) is not None:
            return [f"{name} is not a link to {want} (it was replaced by a file or directory)"]
        return [f"{name} is missing (expected a link to {want})"]

    def _file_problems(self, version: str, name: str, entry: Mapping[str, Any]) -> List[str]:
        path = self._join(version, name)
        st = lstat_or_none(self._fs, path)
        if st is None or not stat.S_ISREG(st.st_mode):
            return [f"{DATA_LINK}/{name} is missing or not a regular file"]
        try:
            data = self._read_bytes(path)
        except StoreError as exc:
            return [str(exc)]
        return file_problems(name, st, data, entry)

    def _read_bytes(self, path: str) -> bytes:
        with io_errors("read", path):
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
        with io_errors("list", path):
            return self._fs.listdir(path)

    def _is_dir(self, path: str) -> bool:
        st = lstat_or_none(self._fs, path)
        return st is not None and stat.S_ISDIR(st.st_mode)

    def _is_file(self, path: str) -> bool:
        st = lstat_or_none(self._fs, path)
        return st is not None and stat.S_ISREG(st.st_mode)
