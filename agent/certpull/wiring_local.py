"""The composition root's local half: the adapters of this host's files and commands.

The command runner, SELinux relabelling, live directories (with owners and modes) and compat
links, built from a Config. Split from wiring.py because it imports neither botocore nor
cryptography: `certpull run` checks the installed files with it before READY=1 (startup.py), and
wiring.py builds the pass from the same factories.
"""

from __future__ import annotations

import os
import shutil
from typing import TYPE_CHECKING, Callable, Optional

from certpull.compat import CompatLinks
from certpull.config import AgentConfig, CertConfig, Config
from certpull.errors import CommandError, StoreError
from certpull.fileops import FileOps, resolve_group, resolve_owner
from certpull.layout import KEY_FILE
from certpull.proc import CommandRunner
from certpull.store import LiveDir

if TYPE_CHECKING:
    from certpull.agent import CompatFactory, LiveDirFactory


def command_runner(agent: AgentConfig) -> CommandRunner:
    return CommandRunner(default_timeout_s=agent.command_timeout_s)


def selinux_restorer(runner: CommandRunner) -> Optional[Callable[[str], None]]:
    """`restorecon -R` on staged dirs where SELinux is on, so httpd may read what it is given."""
    if not os.path.exists("/sys/fs/selinux/enforce") or shutil.which("restorecon") is None:
        return None

    def restore(path: str) -> None:
        try:
            runner.run(["restorecon", "-R", path])
        except CommandError as exc:
            raise StoreError(f"cannot restore SELinux labels on {path}: {exc}") from None

    return restore


def live_dir_factory(
    config: Config,
    label_restorer: Optional[Callable[[str], None]],
    fs: Optional[FileOps] = None,
) -> LiveDirFactory:
    """LiveDirs for the configured certificates; ``fs`` replaces the system calls (fault tests)."""

    def make(cert: CertConfig) -> LiveDir:
        return LiveDir(
            config.live_path(cert.name),
            file_modes={KEY_FILE: cert.key_mode},
            default_mode=cert.cert_mode,
            keep_versions=cert.keep_versions,
            uid=resolve_owner(cert.owner),
            gid=resolve_group(cert.group),
            label_restorer=label_restorer,
            fs=fs,
        )

    return make


def compat_factory(config: Config, fs: Optional[FileOps] = None) -> CompatFactory:
    """Each certificate's compat links (none: a no-op)."""

    def make(cert: CertConfig) -> CompatLinks:
        return CompatLinks(
            config.live_path(cert.name), dict(cert.compat_links), fs, private={KEY_FILE}
        )

    return make
