"""Debian root file systems for the host tier: built once with debootstrap, cached as tarballs.

A rootfs is keyed by a hash of everything that decides its contents (release, mirror, package list,
the recipe below), so a second run on the same machine skips debootstrap and only unpacks the
tarball. The cache lives outside the checkout (``$CERTPULL_HOST_CACHE``, default
/var/cache/certpull-host/), and concurrent runs wait for each other on a lock file.

Steps of ``cached_rootfs`` (``build`` does 2-5):
  1. Return the tarball if it exists for this key.
  2. debootstrap --variant=minbase --include=PACKAGES RELEASE DIR MIRROR (DIR on the cache's file
     system, so the final rename is atomic).
  3. The recipe: mod_ssl on, no default site and no Listen (each container writes its own
     127.0.0.1 port), an empty machine-id (every boot of a copy is a fresh host), no .deb files.
  4. tar | zstd into a temporary file next to the final one.
  5. rename() it into place; remove DIR.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

CACHE_DIR = Path(os.environ.get("CERTPULL_HOST_CACHE", "/var/cache/certpull-host"))
DEBOOTSTRAP_TIMEOUT_S = 1200.0
# Bump when the recipe (step 3) changes: it is part of the cache key.
RECIPE_VERSION = 1

COMMON_PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "apache2",  # apache2-bin carries mod_ssl on Debian
    "procps",  # /bin/kill for the unit's ExecReload=, ps for debugging
    "rpm",  # the package is installed and upgraded with rpm, scriptlets included
    "python3",
    "python3-systemd",  # the RPM's Recommends: journal fields and sd_notify through libsystemd
)


@dataclass(frozen=True)
class Release:
    """A Debian release the tier boots, and why."""

    name: str
    packages: Tuple[str, ...]
    why: str


RELEASES = {
    "bookworm": Release(
        "bookworm",
        COMMON_PACKAGES,
        "systemd 252, Amazon Linux 2023's: the unit's sandbox, watchdog and notify as on AL2023",
    ),
    "bullseye": Release(
        "bullseye",
        COMMON_PACKAGES,
        "Python 3.9, AL2023's /usr/bin/python3: the RPM's payload runs unchanged",
    ),
}


class PrerequisiteMissing(RuntimeError):
    """The machine lacks something the tier needs; the message is one line saying what."""


def mirror() -> str:
    """The Debian mirror this machine's apt uses (/etc/apt/sources.list and sources.list.d)."""
    override = os.environ.get("CERTPULL_HOST_MIRROR")
    if override:
        return override
    files = [Path("/etc/apt/sources.list")]
    parts = Path("/etc/apt/sources.list.d")
    if parts.is_dir():
        files += sorted(parts.iterdir())
    for path in files:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for uri in _debian_uris(text):
            return uri
    raise PrerequisiteMissing(
        "no Debian mirror in /etc/apt/sources.list* (set CERTPULL_HOST_MIRROR=http://.../debian)"
    )


def _debian_uris(text: str) -> Iterator[str]:
    """URIs of the main archive (".../debian", not debian-security) in one-line or deb822 files."""
    for raw in text.splitlines():
        line = raw.strip()
        one_line = re.match(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s", line)
        deb822 = re.match(r"^URIs:\s*(.+)$", line)
        candidates = one_line.group(1).split() if one_line else []
        candidates += deb822.group(1).split() if deb822 else []
        for uri in candidates:
            if uri.rstrip("/").endswith("/debian"):
                yield uri.rstrip("/")


def cache_key(release: Release, mirror_url: str) -> str:
    text = json.dumps(
        {
            "release": release.name,
            "mirror": mirror_url,
            "packages": sorted(release.packages),
            "recipe": RECIPE_VERSION,
        },
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def tarball_path(release: Release, mirror_url: str) -> Path:
    return CACHE_DIR / f"{release.name}-{cache_key(release, mirror_url)}.tar.zst"


def require_tools(tools: Sequence[str]) -> None:
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        raise PrerequisiteMissing(
            f"missing {', '.join(missing)} (scripts/setup.sh installs systemd-container, "
            "debootstrap, zstd)"
        )


@contextlib.contextmanager
def locked(name: str) -> Iterator[None]:
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def cached_rootfs(name: str, log: Optional[List[str]] = None) -> Path:
    """The tarball of release ``name``, built now if this machine has none yet."""
    release = RELEASES[name]
    mirror_url = mirror()
    final = tarball_path(release, mirror_url)
    if final.exists():  # (1)
        return final
    require_tools(["debootstrap", "zstd", "tar"])
    with locked(release.name):
        if final.exists():  # another run built it while we waited
            return final
        started = time.monotonic()
        build(release, mirror_url, final)
        if log is not None:
            log.append(f"debootstrap {release.name}: {time.monotonic() - started:.0f} s")
    return final


def build(release: Release, mirror_url: str, final: Path) -> None:
    work = CACHE_DIR / f".build-{release.name}-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    try:
        result = subprocess.run(  # (2)
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(release.packages)}",
                release.name,
                str(work),
                mirror_url,
            ],
            capture_output=True,
            text=True,
            timeout=DEBOOTSTRAP_TIMEOUT_S,
            check=False,
        )
        if result.returncode != 0:
            tail = (result.stdout + result.stderr).strip().splitlines()[-3:]
            raise PrerequisiteMissing(
                f"debootstrap {release.name} from {mirror_url} failed: {' | '.join(tail)}"
            )
        _recipe(work)  # (3)
        partial = final.with_name(final.name + f".{os.getpid()}.partial")
        with open(partial, "wb") as out:  # (4)
            tar = subprocess.Popen(
                ["tar", "-C", str(work), "--numeric-owner", "--xattrs", "-cf", "-", "."],
                stdout=subprocess.PIPE,
            )
            zstd = subprocess.run(
                ["zstd", "-q", "-T0", "-3"], stdin=tar.stdout, stdout=out, check=False
            )
            assert tar.stdout is not None
            tar.stdout.close()
            if tar.wait() != 0 or zstd.returncode != 0:
                partial.unlink(missing_ok=True)
                raise PrerequisiteMissing(f"packing the {release.name} rootfs failed")
        os.replace(partial, final)  # (5)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _recipe(root: Path) -> None:
    def chroot(*argv: str) -> None:
        subprocess.run(["chroot", str(root), *argv], check=True, capture_output=True, timeout=120)

    chroot("a2enmod", "-q", "ssl")
    chroot("a2dissite", "-q", "000-default")
    (root / "etc/apache2/ports.conf").write_text(
        "# Written per container by tests/host (Listen 127.0.0.1:PORT): the host's network is shared.\n"
    )
    (root / "etc/machine-id").write_text("")
    for deb in (root / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()


def unpack(tarball: Path, dest: Path) -> None:
    """Unpack a cached rootfs into ``dest`` (created; must not exist)."""
    dest.mkdir(parents=True)
    zstd = subprocess.Popen(["zstd", "-q", "-d", "-c", str(tarball)], stdout=subprocess.PIPE)
    tar = subprocess.run(
        ["tar", "-C", str(dest), "--numeric-owner", "--xattrs", "-xf", "-"],
        stdin=zstd.stdout,
        check=False,
        capture_output=True,
    )
    assert zstd.stdout is not None
    zstd.stdout.close()
    if zstd.wait() != 0 or tar.returncode != 0:
        raise PrerequisiteMissing(f"cannot unpack {tarball}: {tar.stderr.decode()[-200:]}")
