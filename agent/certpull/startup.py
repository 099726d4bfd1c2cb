"""`certpull run` up to its loop: the daemon lock, logging, signal handlers, and an early READY=1.

systemd starts httpd (ordered after certpull) once certpull sends READY=1. When every certificate's
files are already in place (an installed host restarting or rebooting), nothing certpull does
before its loop changes what httpd would start on, so READY=1 goes out here, checked by reading
the live directories and compat links only, before botocore and cryptography are imported (about
three quarters of the start-up's CPU). Otherwise (a fresh host, a half-staged version, a compat
link still to make) the loop sends it as before, after recovery and, on a fresh host, the first
install. Signal handlers are installed first, so a SIGTERM during the imports is a clean stop.
"""

from __future__ import annotations

import logging
import os

from certpull.config import Config
from certpull.errors import CertpullError
from certpull.live_view import LiveView
from certpull.logs import setup_logging
from certpull.notify import Notifier
from certpull.state import StateFile
from certpull.triggers import Mailbox, install_signal_handlers
from certpull.wiring_local import compat_factory

log = logging.getLogger("certpull")


def files_in_place(config: Config) -> bool:
    """Every certificate has an active version whose links are intact, and every compat link
    points at its live file. Read-only; a problem of any kind answers False (the loop recovers)."""
    make_compat = compat_factory(config)
    try:
        for cert in config.certs:
            live = LiveView(config.live_path(cert.name))
            if live.current() is None or live.verify_links():
                return False
            if make_compat(cert).unlinked():
                return False
    except CertpullError:
        return False
    return bool(config.certs)


def run_daemon(config: Config, verbose: bool = False) -> int:
    """The daemon lock (a second `run` is refused), logging, signal handlers, READY=1 when the
    files are in place, then the loop (wiring.py's, imported here) until SIGTERM."""
    setup_logging("DEBUG" if verbose else config.agent.log_level.upper())
    # Before anything else (state.json's daemon record included): one `run` per state_dir.
    with StateFile(config.agent.state_dir).daemon_lock(os.getpid()):
        mailbox = Mailbox()
        install_signal_handlers(mailbox)
        notifier = Notifier()
        early = notifier.enabled and files_in_place(config)
        if early:
            notifier.ready()  # STATUS= follows from the loop, as after any READY=1
            log.info("READY=1: every certificate's files are in place")
        # Imported after READY=1: botocore and cryptography come with it.
        from certpull.wiring import build_daemon  # noqa: PLC0415

        loop = build_daemon(config, notifier=notifier, mailbox=mailbox, ready_sent=early)
        return loop.run()
