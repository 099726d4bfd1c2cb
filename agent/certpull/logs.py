"""Logging setup: the journal with structured fields under systemd, plain stderr otherwise.

Callers attach the certificate they are handling with ``extra=cert_fields(...)``; the journal
gets CERT_NAME / SECRET_ARN / VERSION_ID as fields (``journalctl CERT_NAME=www``), stderr gets
them appended to the line.

The journal is written with its native protocol (systemd.journal-fields(7), one datagram per
record to /run/systemd/journal/socket), not through python3-systemd, whose import costs the daemon
2.1 MiB for the same few lines.

Two guards keep key material out of logs: the AWS SDK's loggers stay at WARNING whatever the
agent's level (botocore logs whole response bodies, SecretString included, at DEBUG), and a
filter replaces any message that contains a PEM private key block.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import IO, TYPE_CHECKING, Any, Callable, Dict, Mapping, Optional, Union

if TYPE_CHECKING:
    import socket

LOGGER_NAME = "certpull"
FIELDS = ("CERT_NAME", "SECRET_ARN", "VERSION_ID")
_QUIET = ("botocore", "boto3", "urllib3", "s3transfer", "watchdog")
_PLAIN_FORMAT = "%(asctime)s %(levelname)s %(message)s"
_HANDLER_MARK = "_certpull_handler"
JOURNAL_SOCKET = "/run/systemd/journal/socket"
# syslog priorities, as python3-systemd's JournalHandler maps them
_PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))


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
    and its socket is there (or a ``journal_sender`` is given), else plain lines on ``stream``.
    ``journal_sender(message, **fields)`` replaces the datagram to the journal (tests).
    """
    stream = sys.stderr if stream is None else stream
    env = os.environ if environ is None else environ
    if use_journal is None:
        use_journal = journal_stream_matches(stream, env) and (
            journal_sender is not None or os.path.exists(JOURNAL_SOCKET)
        )
    handler: logging.Handler
    if use_journal:
        handler = JournalHandler(journal_sender)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
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


class JournalHandler(logging.Handler):
    """Each record as one journal entry: MESSAGE, PRIORITY, SYSLOG_IDENTIFIER, the code location,
    and the certificate's fields (CERT_NAME, SECRET_ARN, VERSION_ID) when the record has them."""

    def __init__(
        self,
        sender: Optional[Callable[..., Any]] = None,
        socket_path: str = JOURNAL_SOCKET,
    ) -> None:
        super().__init__()
        self._sender = sender or self._send
        self._socket_path = socket_path
        self._socket: Optional[socket.socket] = None
        self._socket_lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields = {
                "PRIORITY": str(_priority(record.levelno)),
                "SYSLOG_IDENTIFIER": "certpull",
                "LOGGER": record.name,
                "CODE_FILE": record.pathname,
                "CODE_LINE": str(record.lineno),
                "CODE_FUNC": record.funcName,
                "THREAD_NAME": record.threadName or "",
            }
            for name in FIELDS:
                value = getattr(record, name, None)
                if value:
                    fields[name] = str(value)
            self._sender(self.format(record), **fields)
        except Exception:  # a log line must never take the agent down
            self.handleError(record)

    def _send(self, message: str, **fields: str) -> None:
        import socket  # noqa: PLC0415 - not on `certpull status`'s path

        data = journal_datagram({"MESSAGE": message, **fields})
        with self._socket_lock:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._socket.sendto(data, self._socket_path)

    def close(self) -> None:
        with self._socket_lock:
            if self._socket is not None:
                self._socket.close()
                self._socket = None
        super().close()


def journal_datagram(fields: Mapping[str, str]) -> bytes:
    """journald's native format: ``KEY=value\n``, or for a value with a newline ``KEY\n``, its
    length as 64-bit little endian, the value and ``\n``."""
    import struct  # noqa: PLC0415 - not on `certpull status`'s path

    parts = []
    for key, text in fields.items():
        value = text.encode("utf-8", "replace")
        if b"\n" in value:
            parts.append(key.encode() + b"\n" + struct.pack("<Q", len(value)) + value + b"\n")
        else:
            parts.append(key.encode() + b"=" + value + b"\n")
    return b"".join(parts)


def _priority(levelno: int) -> int:
    for level, priority in _PRIORITIES:
        if levelno >= level:
            return priority
    return 7
