"""The exception tree. Every error certpull raises on purpose is a CertpullError.

Messages are one line, safe to log and to show in `certpull status`: they never carry key material,
and they say what is wrong in words an operator can act on. The caller that knows which certificate
is being handled prefixes the name (``www: ...``); errors raised below that level do not repeat it.
"""

from __future__ import annotations

from typing import Optional, Sequence


class CertpullError(Exception):
    """Base class for every error certpull raises deliberately."""


class ConfigError(CertpullError):
    """The configuration is invalid; carries the file, line and key where known."""

    def __init__(
        self,
        message: str,
        path: Optional[str] = None,
        line: Optional[int] = None,
        key: Optional[str] = None,
    ) -> None:
        self.reason = message
        self.path = path
        self.line = line
        self.key = key
        where = path or ""
        if where and line is not None:
            where = f"{where}:{line}"
        prefix = f"{where}: " if where else ""
        key_part = f"{key}: " if key else ""
        super().__init__(f"{prefix}{key_part}{message}")


class SourceError(CertpullError):
    """Reading the secret failed. ``transient`` says whether retrying later can help."""

    def __init__(self, message: str, transient: bool, code: Optional[str] = None) -> None:
        self.transient = transient
        self.code = code
        super().__init__(message)


class BundleError(CertpullError):
    """The secret's content is not a certificate bundle that may be installed."""


class X509WorkerError(BundleError):
    """The X.509 worker process (x509_worker.py) could not start or did not answer: nothing is
    known about the bundle, so the install does not happen, and the next pass tries again."""


class StoreError(CertpullError):
    """Writing, activating or rolling back files on disk failed."""


class ReloadError(CertpullError):
    """httpd rejected the new files, did not survive the reload, or does not serve them."""


class CommandError(ReloadError):
    """A subprocess failed. Keeps argv, exit code and output so the log can say exactly what ran."""

    def __init__(
        self,
        argv: Sequence[str],
        returncode: Optional[int],
        stdout: str,
        stderr: str,
        reason: str = "",
    ) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        detail = _last_line(stderr) or _last_line(stdout)
        what = reason or (f"exited {returncode}" if returncode is not None else "could not run")
        message = f"`{' '.join(self.argv)}` {what}"
        if detail:
            message += f": {detail}"
        super().__init__(message)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""
