"""Logging setup: the journal with structured fields under systemd, plain stderr otherwise.

Callers attach the certificate they are handling with ``extra=cert_fields(...)``; the journal
gets CERT_NAME / SECRET_ARN / VERSION_ID as fields (``journalctl CERT_NAME=www``), stderr gets
them appended to the line.

Two guards keep key material out of logs: the AWS SDK's loggers stay at WARNING whatever the
agent's level (botocore logs whole response bodies, SecretString included, at DEBUG), and a
filter replaces any message that contains a PEM private key block.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import IO, Any, Callable, Dict, Mapping, Optional, Union

LOGGER_NAME = "certpull"
FIELDS = ("CERT_NAME", "SECRET_ARN", "VERSION_ID")
_QUIET = ("botocore", "boto3", "urllib3", "s3transfer", "watchdog")
_PLAIN_FORMAT = "%(asctime)s %(levelname)s %(message)s"
_HANDLER_MARK = "_certpull_handler"


def cert_fields(
    name: str, secret_arn: Optional[str] = None, version_id: Optional[str] = None
) -> Dict[str, str]:
    """The ``extra=`` mapping for a log call about one certificate."""
    fields = {"CERT_NAME": name}
    if secret_arn:
        fields["SECRET_ARN"] = secret_arn
    if version_id:
        fields["VERSION_ID"] = version_id
    return fields


def journal_stream_matches(stream: IO[str], environ: Mapping[str, str]) -> bool:
    """True when ``stream`` is the journal's stdout/stderr socket (systemd.exec(5) JOURNAL_STREAM)."""
    value = environ.get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    try:
        st = os.fstat(stream.fileno())
        return (int(dev), int(ino)) == (st.st_dev, st.st_ino)
    except (ValueError, OSError, AttributeError):
        return False


class KeyMaterialFilter(logging.Filter):
    """Last line of defence: a record whose text holds a private key is replaced, not emitted."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # a broken format string is the formatter's problem, not ours
            return True
        if "PRIVATE KEY-----" in text:
            record.msg = "[log message withheld: it contained private key material]"
            record.args = None
        return True


class PlainFormatter(logging.Formatter):
    """``time LEVEL message [cert=www version=...]``: the cert fields when present."""

    def __init__(self) -> None:
        super().__init__(_PLAIN_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        parts = [
            f"{label}={getattr(record, field)}"
            for field, label in (("CERT_NAME", "cert"), ("VERSION_ID", "version"))
            if getattr(record, field, None)
        ]
        return f"{line} [{' '.join(parts)}]" if parts else line


def setup_logging(
    level: Union[int, str] = logging.INFO,
    use_journal: Optional[bool] = None,
    stream: Optional[IO[str]] = None,
    environ: Optional[Mapping[str, str]] = None,
    journal_sender: Optional[Callable[..., Any]] = None,
) -> logging.Logger:
    """Configure the ``certpull`` logger once (calling again replaces its handler).

    ``use_journal=None`` detects: the journal when stderr is connected to it (JOURNAL_STREAM)
    and systemd-python is importable, else plain lines on ``stream`` (stderr).
    ``journal_sender`` replaces ``systemd.journal.send`` (tests).
    """
    stream = sys.stderr if stream is None else stream
    env = os.environ if environ is None else environ
    if use_journal is None:
        use_journal = journal_stream_matches(stream, env) and _journal_handler_class() is not None
    handler = _journal_handler(journal_sender) if use_journal else None
    if handler is None:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(PlainFormatter())
    setattr(handler, _HANDLER_MARK, True)
    handler.addFilter(KeyMaterialFilter())

    logger = logging.getLogger(LOGGER_NAME)
    for old in [h for h in logger.handlers if getattr(h, _HANDLER_MARK, False)]:
        logger.removeHandler(old)
        old.close()
    logger.addHandler(handler)
    logger.setLevel(level)
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    return logger


def _journal_handler_class() -> Optional[Any]:
    try:
        from systemd.journal import JournalHandler  # noqa: PLC0415 - optional dependency
    except ImportError:
        return None
    return JournalHandler


def _journal_handler(sender: Optional[Callable[..., Any]]) -> Optional[logging.Handler]:
    cls = _journal_handler_class()
    if cls is None:
        return None
    kwargs: Dict[str, Any] = {"SYSLOG_IDENTIFIER": "certpull"}
    if sender is not None:
        kwargs["sender_function"] = sender
    handler: logging.Handler = cls(**kwargs)
    handler.setFormatter(logging.Formatter("%(message)s"))
    return handler
