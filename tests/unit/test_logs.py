"""Logging: stderr lines with cert fields, journal fields, JOURNAL_STREAM detection, key guard."""

from __future__ import annotations

import io
import logging
import os
import socket
import struct
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from certpull.logs import JournalHandler, cert_fields, journal_stream_matches, setup_logging

ARN = "arn:aws:secretsmanager:us-east-1:111122223333:secret:www-tls-AbCdEf"
KEY_PEM = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----"


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    logger = logging.getLogger("certpull")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    logger.handlers[:] = saved[0]
    logger.setLevel(saved[1])
    logger.propagate = saved[2]


def test_plain_lines_carry_level_message_and_cert() -> None:
    out = io.StringIO()
    setup_logging("INFO", use_journal=False, stream=out)
    log = logging.getLogger("certpull.daemon")
    log.info("www: installed %s", "v2", extra=cert_fields("www", ARN, "v2"))
    log.warning("no cert here")
    log.debug("hidden at INFO")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].endswith(" INFO www: installed v2 [cert=www version=v2]")
    assert lines[1].endswith(" WARNING no cert here")


def test_setup_twice_does_not_duplicate_lines() -> None:
    out = io.StringIO()
    setup_logging("INFO", use_journal=False, stream=out)
    setup_logging("DEBUG", use_journal=False, stream=out)
    logging.getLogger("certpull").debug("once")
    assert out.getvalue().count("once") == 1


def test_sdk_loggers_stay_quiet_even_at_debug() -> None:
    out = io.StringIO()
    setup_logging("DEBUG", use_journal=False, stream=out)
    assert logging.getLogger("botocore").getEffectiveLevel() == logging.WARNING
    assert logging.getLogger("botocore.endpoint").isEnabledFor(logging.DEBUG) is False


@pytest.mark.parametrize(
    ("msg", "args"),
    [
        ("secret body: %s", (KEY_PEM,)),
        ("secret body: " + KEY_PEM.replace("PRIVATE KEY", "RSA PRIVATE KEY"), ()),
        ("%s", ("-----BEGIN EC PRIVATE KEY-----abc",)),
    ],
)
def test_private_key_text_never_reaches_the_output(msg: str, args: tuple) -> None:  # type: ignore[type-arg]
    out = io.StringIO()
    setup_logging("DEBUG", use_journal=False, stream=out)
    logging.getLogger("certpull.source").error(msg, *args)
    text = out.getvalue()
    assert "PRIVATE KEY" not in text
    assert "MIGHAgEA" not in text
    assert "withheld" in text


def test_journal_gets_structured_fields() -> None:
    sent: List[Dict[str, Any]] = []

    def sender(text: str, /, **fields: Any) -> None:  # like systemd.journal.send(MESSAGE, ...)
        sent.append({**fields, "MESSAGE": text})

    setup_logging("INFO", use_journal=True, journal_sender=sender)
    logging.getLogger("certpull.daemon").info(
        "www: installed v2", extra=cert_fields("www", ARN, "v2")
    )
    logging.getLogger("certpull.daemon").error("%s", KEY_PEM)
    assert len(sent) == 2
    first = sent[0]
    assert first["MESSAGE"] == "www: installed v2"
    assert first["CERT_NAME"] == "www"
    assert first["SECRET_ARN"] == ARN
    assert first["VERSION_ID"] == "v2"
    assert first["SYSLOG_IDENTIFIER"] == "certpull"
    assert first["PRIORITY"] == "6"
    assert "PRIVATE KEY" not in repr(sent[1])


def test_cert_fields_leaves_out_unknowns() -> None:
    assert cert_fields("www") == {"CERT_NAME": "www"}


def test_journal_stream_detection_compares_device_and_inode() -> None:
    with tempfile.TemporaryFile("w+") as f:
        st = os.fstat(f.fileno())
        assert journal_stream_matches(f, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
        assert not journal_stream_matches(f, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"})
        assert not journal_stream_matches(f, {"JOURNAL_STREAM": "junk"})
        assert not journal_stream_matches(f, {})
    assert not journal_stream_matches(io.StringIO(), {"JOURNAL_STREAM": "1:2"})  # no fileno


def test_detection_falls_back_to_the_stream_when_not_under_the_journal() -> None:
    out = io.StringIO()
    setup_logging("INFO", stream=out, environ={"JOURNAL_STREAM": "1:2"})
    logging.getLogger("certpull").info("to stderr")
    assert "to stderr" in out.getvalue()


def test_detection_picks_the_journal_when_stderr_is_the_journal_stream() -> None:
    sent: List[str] = []
    with tempfile.TemporaryFile("w+") as f:
        st = os.fstat(f.fileno())
        setup_logging(
            "INFO",
            stream=f,
            environ={"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"},
            journal_sender=lambda text, /, **fields: sent.append(text),
        )
        logging.getLogger("certpull").info("to the journal")
        f.seek(0)
        assert f.read() == ""
    assert sent == ["to the journal"]


def parse_journal_datagram(data: bytes) -> Dict[str, str]:
    """journald's side of the native protocol (systemd.journal-fields(7))."""
    fields = {}
    while data:
        line, _, rest = data.partition(b"\n")
        if b"=" in line:
            key, _, value = line.partition(b"=")
            data = rest
        else:  # KEY\n, 64-bit little-endian length, value, \n
            key = line
            (size,) = struct.unpack("<Q", rest[:8])
            value, data = rest[8 : 8 + size], rest[8 + size + 1 :]
        fields[key.decode()] = value.decode()
    return fields


def test_journal_entries_go_to_the_journal_socket_in_its_native_format(tmp_path: Path) -> None:
    path = str(tmp_path / "journal.socket")
    journald = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    journald.bind(path)
    journald.settimeout(5)
    handler = JournalHandler(socket_path=path)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("certpull.test-native")
    logger.addHandler(handler)
    try:
        logger.warning("www: two\nlines", extra=cert_fields("www", ARN, "v2"))
        logger.error("one line")
        first = parse_journal_datagram(journald.recv(65536))
        second = parse_journal_datagram(journald.recv(65536))
    finally:
        logger.removeHandler(handler)
        handler.close()
        journald.close()
    assert first["MESSAGE"] == "www: two\nlines"
    assert first["PRIORITY"] == "4"
    assert (first["CERT_NAME"], first["SECRET_ARN"], first["VERSION_ID"]) == ("www", ARN, "v2")
    assert first["SYSLOG_IDENTIFIER"] == "certpull"
    assert first["CODE_FILE"].endswith("test_logs.py") and first["CODE_LINE"].isdigit()
    assert second["MESSAGE"] == "one line" and second["PRIORITY"] == "3"
    assert "CERT_NAME" not in second


def test_the_daemon_logs_without_python3_systemd(real_subprocess: None) -> None:
    # The journal's native protocol needs no module of python3-systemd (2.1 MiB in the daemon).
    code = (
        "import sys; from certpull.logs import setup_logging; "
        "setup_logging('INFO', use_journal=True, journal_sender=lambda m, **f: None); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'systemd'))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"
