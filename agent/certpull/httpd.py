"""httpd primitives: config test, graceful reload with a liveness check, and the served-leaf check.

install.py strings them together; this module only gives the steps. The sequence
they serve, after the new files are staged and activated on disk:

  1. ``Httpd.config_test()``: httpd parses the config with the new files. On failure: roll the
     files back, do not reload (httpd keeps serving the old certificate from memory).
  2. ``Httpd.graceful_reload()``: new connections get the new files; in-flight requests
     complete. It then watches the main process for ``alive_grace_s``: a key that does not match
     its certificate passes the config test but makes httpd exit during the graceful (AH02565).
     Given ``proven`` (fresh handshakes serve every new leaf), it returns as soon as that holds
     while the main process is alive, with a ``GraceWatch`` for the rest of the grace, which the
     caller checks later (the daemon between passes). On failure: roll the files back and START
     httpd again. A reload does not always do that:
     ``systemctl reload`` refuses an inactive unit, and ``httpd -k graceful`` only starts httpd
     when the pid file's process is really gone (an unreaped zombie still takes the signal).
  3. ``wait_until_served()``: fresh TLS handshakes to the ``verify`` target return the new leaf
     (a graceful takes ~40-80 ms median, ~1 s worst, to reach new handshakes). On failure: roll
     back and reload again.

Nothing here reads the certificate files: the caller passes the DER it expects to see.
"""

from __future__ import annotations

import hashlib
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from certpull.config_values import is_dns_name
from certpull.errors import CommandError, ReloadError
from certpull.httpd_pid import HttpdUnknown, PidFile, PidSource
from certpull.proc import CommandRunner

# How long graceful_reload watches the main process. Measured on Apache 2.4.71 (Debian, event MPM,
# 2-CPU VM under load, `bench/bench_reload.py --mismatch`, 430 runs): with a mismatched key the main
# process is gone 2-8 ms (median) after `-k graceful` returns, p90 ~20-40 ms, worst 1.01 s. The
# ~1 s outliers are consistent with the MPM acting on SIGUSR1 at its one-second maintenance tick;
# 2 s covers that tick plus a slow re-read of a large config.
DEFAULT_ALIVE_GRACE_S = 2.0
# How often liveness and served-leaf checks poll. A dying httpd is usually gone within tens of ms
# of the graceful command returning, and new handshakes see the new leaf ~40 ms (median, same
# bench) after the command starts, ~1 s at worst.
_POLL_INTERVAL_S = 0.05
# Upper bound for one TLS attempt inside wait_until_served, so one stuck connect cannot use up
# the whole budget; and the least one attempt gets (the re-check after the deadline too).
_MAX_ATTEMPT_TIMEOUT_S = 5.0
_MIN_ATTEMPT_TIMEOUT_S = 0.5

Fetch = Callable[["VerifyTarget", float], bytes]


class TargetUnreachable(ReloadError):
    """Nothing answers at the verify target: no proof either way about what httpd serves."""


class ConfigTestError(CommandError):
    """The config test failed; the message joins httpd's "where" line with its "why" line."""

    def __init__(self, cause: CommandError, summary: str) -> None:
        super().__init__(cause.argv, cause.returncode, cause.stdout, cause.stderr)
        self.args = (f"`{' '.join(cause.argv)}` exited {cause.returncode}: {summary}",)


_STOPPED = (
    "httpd stopped after the graceful reload; see its error log "
    "(AH02565 there means a private key that does not match its certificate)"
)


class GraceWatch:
    """The rest of a liveness grace that ``graceful_reload`` ended early (it had proof the new
    files are served): whoever holds it looks again with ``poll()`` until the window is over."""

    def __init__(
        self, is_running: Callable[[], bool], deadline: float, clock: Callable[[], float]
    ) -> None:
        self._is_running = is_running
        self.deadline = deadline
        self._clock = clock

    poll_interval_s = _POLL_INTERVAL_S  # how often the holder should look

    def remaining_s(self) -> float:
        return max(0.0, self.deadline - self._clock())

    def poll(self) -> Optional[bool]:
        """False: the main process is gone (the reload killed httpd after all); True: it lived
        through the window; None: alive, and the window is not over yet."""
        if not self._is_running():
            return False
        if self._clock() >= self.deadline:
            return True
        return None


class Httpd:
    """One httpd, driven through configured commands; its main process found by ``pid_source``
    (default: ``pid_file``, when given)."""

    def __init__(
        self,
        runner: CommandRunner,
        configtest_argv: Sequence[str],
        reload_argv: Sequence[str],
        pid_file: Optional[str],
        *,
        alive_grace_s: float = DEFAULT_ALIVE_GRACE_S,
        start_argv: Optional[Sequence[str]] = None,
        pid_source: Optional[PidSource] = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not configtest_argv or not reload_argv:
            raise ValueError("configtest_argv and reload_argv must not be empty")
        if alive_grace_s < 0:
            raise ValueError("alive_grace_s must not be negative")
        self._runner = runner
        self.configtest_argv = tuple(configtest_argv)
        self.reload_argv = tuple(reload_argv)
        self.pid_file = pid_file
        self._pid_source: Optional[PidSource] = (
            pid_source if pid_source is not None else PidFile(pid_file) if pid_file else None
        )
        self.alive_grace_s = alive_grace_s
        self.start_argv = tuple(start_argv) if start_argv else None
        self._clock = clock
        self._sleep = sleep

    def __repr__(self) -> str:
        return (
            f"Httpd(configtest={' '.join(self.configtest_argv)!r}, "
            f"reload={' '.join(self.reload_argv)!r}, pid_file={self.pid_file!r})"
        )

    def main_pid(self) -> Optional[int]:
        """The main httpd process id; None when it is not running or cannot be told (see
        httpd_pid.py: a pid file, systemd's MainPID of its unit, or httpd's own PidFile)."""
        if self._pid_source is None:
            return None
        try:
            return self._pid_source.main_pid()
        except HttpdUnknown:
            return None

    def is_running(self) -> bool:
        """Whether the main httpd process is alive (False when there is nothing to ask)."""
        return self.main_pid() is not None

    def known_stopped(self) -> bool:
        """True only when httpd is observably not running. Without a pid source, or when the
        source cannot tell (an unknown unit), nothing is observed, so this is False: the reload
        then runs and fails with its own message rather than being skipped quietly."""
        if self._pid_source is None:
            return False
        try:
            return self._pid_source.main_pid() is None
        except HttpdUnknown:
            return False

    def describe(self) -> str:
        """Where the main process is looked for, for messages."""
        return self._pid_source.describe() if self._pid_source else "no httpd_pid_file set"

    def config_test(self) -> None:
        """Run the config test; raise ReloadError (a CommandError) carrying httpd's own message.

        httpd reports a bad line in two lines ("AH00526: Syntax error on line 23 of FILE:" then
        the reason); the error keeps both, so the operator sees where and why.
        It catches syntax errors and unreadable or unparsable files, not a key that does not match
        its certificate: that is checked before anything is written, and by graceful_reload.
        """
        try:
            self._runner.run(self.configtest_argv)
        except CommandError as exc:
            summary = _located_error(exc.stderr) or _located_error(exc.stdout)
            if summary is None or exc.returncode is None:
                raise
            raise ConfigTestError(exc, summary) from exc

    def graceful_reload(self, proven: Optional[Callable[[], bool]] = None) -> Optional[GraceWatch]:
        """Ask httpd to reload gracefully, then make sure it survived.

        Steps:
          1. Run the reload command; a non-zero exit raises CommandError (a ReloadError).
          2. Without a pid source, stop here: liveness cannot be observed.
          3. Poll the main process for ``alive_grace_s``. Once it has been seen alive (before or
             after the command) and then disappears, raise at once. httpd that was not running may
             be started by the graceful (apache2 -k graceful does that) and writes its pid file a
             little later, so absence is only an error at the end of the window.
          4. With ``proven``: once the main process is alive and ``proven()`` is true, return a
             GraceWatch for the rest of the window instead of waiting it out. A new leaf on a
             fresh handshake comes from a child the new generation forked, so the main process
             got past loading the new files, which is where a bad key kills it (AH02565).
             None is returned when the whole window was watched here.
        """
        was_alive = self.is_running()
        # (1)
        self._runner.run(self.reload_argv)
        # (2)
        if self._pid_source is None:
            return None
        # (3)
        started = self._clock()
        seen_alive = was_alive
        while True:
            alive = self.is_running()
            if seen_alive and not alive:
                raise ReloadError(_STOPPED)
            seen_alive = seen_alive or alive
            if alive and proven is not None and proven():  # (4)
                return GraceWatch(self.is_running, started + self.alive_grace_s, self._clock)
            if self._clock() - started >= self.alive_grace_s:
                break
            self._sleep(_POLL_INTERVAL_S)
        if not seen_alive:
            raise ReloadError(
                f"httpd is not running after the graceful reload (no live process in {self.describe()})"
            )
        return None

    def start(self) -> None:
        """Start a stopped httpd (after a rollback that followed its death on a bad reload).

        A graceful reload cannot do this under systemd (`systemctl reload` refuses an inactive
        unit), hence a separate command. Raises ReloadError when httpd is still not running after
        ``alive_grace_s`` (only observable with a pid file).
        """
        if self.start_argv is None:
            raise ReloadError("httpd is down and no start_command is configured")
        self._runner.run(self.start_argv)
        if self._pid_source is None:
            return
        started = self._clock()
        while not self.is_running():
            if self._clock() - started >= self.alive_grace_s:
                raise ReloadError(f"httpd did not start (no live process in {self.describe()})")
            self._sleep(_POLL_INTERVAL_S)


@dataclass(frozen=True)
class VerifyTarget:
    """Where to check the served certificate: a host and port, and the SNI name to ask for."""

    host: str
    port: int
    server_name: Optional[str]

    @property
    def sni(self) -> Optional[str]:
        """The SNI name: server_name, else the host, whichever first is a DNS name (IPs are not sent)."""
        for candidate in (self.server_name, self.host):
            if candidate and is_dns_name(candidate):
                return candidate
        return None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def fetch_served_leaf(target: VerifyTarget, timeout_s: float) -> bytes:
    """One fresh TLS handshake with ``target``; return the DER of the leaf certificate it serves.

    Nothing is verified: the caller compares bytes with the leaf it installed, which is stronger
    than chain validation and also works before the new CA is trusted anywhere.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    sni = target.sni
    try:
        conn = socket.create_connection((target.host, target.port), timeout=timeout_s)
        with conn as sock, context.wrap_socket(sock, server_hostname=sni) as tls:
            der = tls.getpeercert(binary_form=True)
    except ssl.SSLError as exc:
        raise ReloadError(f"TLS handshake with {target} failed: {exc.reason or exc}") from exc
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise TargetUnreachable(f"cannot connect to {target}: {reason}") from exc
    if not der:
        raise ReloadError(f"{target} sent no certificate")
    return der


def wait_until_served(
    target: VerifyTarget,
    expected_der: bytes,
    timeout_s: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    fetch: Fetch = fetch_served_leaf,
) -> float:
    """Poll fresh handshakes until ``target`` serves ``expected_der``; return the seconds waited.

    Each attempt is a new connection (a graceful reload closes idle keep-alive connections and
    only new ones see the new certificate). Connection errors are retried like a wrong leaf.
    After ``timeout_s`` raise ReloadError naming the target and what it served (serial and
    SHA-256 prefix) against what was expected, or TargetUnreachable with the last connection
    error when nothing answered at the end.

    Failure needs an attempt that *began* after the deadline: an agent stopped (SIGSTOP, a VM
    pause) inside a handshake that began before httpd reached new connections comes back past
    the deadline holding the old leaf, and the reload it then calls failed had in fact finished.
    """
    started = clock()
    deadline = started + timeout_s
    last_problem = "no attempt was made"
    unreachable = False
    while True:
        attempt_started = clock()
        remaining = deadline - attempt_started
        attempt_timeout = min(max(remaining, _MIN_ATTEMPT_TIMEOUT_S), _MAX_ATTEMPT_TIMEOUT_S)
        try:
            served = fetch(target, attempt_timeout)
        except (ReloadError, OSError) as exc:
            last_problem = str(exc)
            unreachable = isinstance(exc, (TargetUnreachable, OSError))
        else:
            unreachable = False
            if served == expected_der:
                return clock() - started
            last_problem = (
                f"it serves {describe_cert(served)}, expected {describe_cert(expected_der)}"
            )
        if clock() >= deadline:
            if attempt_started < deadline:
                continue  # check once more, with a handshake that starts now
            error = TargetUnreachable if unreachable else ReloadError
            raise error(
                f"{target} does not serve the new certificate after {timeout_s:g} s: {last_problem}"
            )
        sleep(_POLL_INTERVAL_S)


def describe_cert(der: bytes) -> str:
    """Short identity of a certificate for messages: ``serial 1a2b3c4d (sha256 0a1b2c3d4e5f6a7b)``."""
    from cryptography import x509  # noqa: PLC0415 - only for messages; not kept loaded while idle

    fingerprint = hashlib.sha256(der).hexdigest()[:16]
    try:
        serial = format(x509.load_der_x509_certificate(der).serial_number, "x")
    except ValueError:
        return f"an unparsable certificate (sha256 {fingerprint})"
    if len(serial) > 16:
        serial = serial[:16] + "..."
    return f"serial {serial} (sha256 {fingerprint})"


def _located_error(output: str) -> Optional[str]:
    """httpd's "<where>:" line joined with the line after it, or None when there is no such pair."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for where, why in zip(lines, lines[1:]):
        if where.endswith(":"):
            return f"{where.rstrip(':')}: {why}"[:500]
    return None
