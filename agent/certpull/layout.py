"""The on-disk layout of a live directory, as pure functions: reserved names, version names, and
the per-version manifest. store.py does the I/O; nothing here touches the disk.

    cert.pem    -> ..data/cert.pem        user-visible links, one per file name
    ..data      -> ..2026_11_29_19_30_01.123456789_<label>
    ..2026_...  version directories, each with a ..manifest (names, sizes, SHA-256, modes, owners)
    ..staging.* a version being written; renamed to a version name only when complete
    ..held      the version id an operator rolled back from, while it is held
"""

from __future__ import annotations

import calendar
import hashlib
import json
import os
import re
import stat
import time
from typing import Any, Dict, List, Mapping, Optional

from certpull.errors import StoreError

# The four files of every version; a user-visible link for each.
CERT_FILE = "cert.pem"
CHAIN_FILE = "chain.pem"
FULLCHAIN_FILE = "fullchain.pem"
KEY_FILE = "privkey.pem"

DATA_LINK = "..data"
DATA_TMP = "..data_tmp"
LINK_TMP = "..link_tmp"
STAGING_PREFIX = "..staging."
MANIFEST = "..manifest"
HOLD_NOTE = "..held"  # the version an operator rolled back from (store.LiveDir.set_hold)
MAX_LABEL_LEN = 48
MAX_NAME_LEN = 255
NS_PER_S = 1_000_000_000

_VERSION_RE = re.compile(r"^\.\.(\d{4}_\d{2}_\d{2}_\d{2}_\d{2}_\d{2})\.(\d{9})_([A-Za-z0-9_-]*)$")
_LABEL_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_STAMP_FORMAT = "%Y_%m_%d_%H_%M_%S"

Manifest = Dict[str, Dict[str, Any]]
"""file name -> {"size", "sha256", "mode", "uid", "gid"}"""


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


def version_ns(name: str) -> int:
    """The creation timestamp, in nanoseconds since the epoch, encoded in a version name."""
    match = _VERSION_RE.match(name)
    if match is None:
        raise ValueError(name)
    seconds = calendar.timegm(time.strptime(match.group(1), _STAMP_FORMAT))
    return seconds * NS_PER_S + int(match.group(2))


def version_label(name: str) -> str:
    """The label a version name carries (the secret's version id, sanitised); "" if none."""
    match = _VERSION_RE.match(name)
    return match.group(3) if match else ""


def version_name(ns: int, label: str) -> str:
    """``..<UTC stamp>.<nanoseconds>_<label>``: names sort by their time."""
    seconds, fraction = divmod(ns, NS_PER_S)
    stamp = time.strftime(_STAMP_FORMAT, time.gmtime(seconds))
    return f"..{stamp}.{fraction:09d}_{sanitize_label(label)}"


def manifest_entry(
    data: bytes, mode: int, uid: Optional[int], gid: Optional[int]
) -> Dict[str, Any]:
    return {
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "mode": mode,
        "uid": uid,
        "gid": gid,
    }


def encode_manifest(manifest: Manifest) -> bytes:
    return json.dumps({"format": 1, "files": manifest}, sort_keys=True).encode()


def decode_manifest(body: bytes) -> Optional[Manifest]:
    """The manifest's files, or None when the body is not a manifest (torn, foreign)."""
    try:
        files = json.loads(body)["files"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(files, dict) or not all(isinstance(v, dict) for v in files.values()):
        return None
    return files


def file_problems(
    name: str, st: os.stat_result, data: bytes, entry: Mapping[str, Any]
) -> List[str]:
    """How an installed file differs from its manifest entry (content, mode, owner); [] if not."""
    problems: List[str] = []
    if hashlib.sha256(data).hexdigest() != entry.get("sha256"):
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
