"""The agent's local control channel: `certpull check-now` asks the running agent to check a
certificate now and waits for that check's result.

Transport: a UNIX stream socket, by default ``/run/certpull/control.sock`` (systemd creates
``/run/certpull`` with ``RuntimeDirectory=certpull``, mode 0700). One JSON request line, one JSON
reply line, then the server closes. Only root or the agent's own uid may ask: the directory and
the socket (0600) are the agent's, and the server checks the caller's uid (``SO_PEERCRED``).

Request ``{"v": 1, "op": "check", "names": [...], "secret_arn": "...", "timeout_s": 120}``:
``names`` (configured ``[cert:NAME]`` sections) or ``secret_arn`` (every certificate configured
with that secret; partial ARNs and names match as for rotation events); ``timeout_s`` is how long
the caller waits in all.

Reply ``{"v": 1, "code": "ok"|"usage"|"timeout"|"stopping"|"busy", "message": "...",
"results": [{"name", "status", "message", "version_id"}], "splay_s": 3.2}``.

How a request is served (one thread per connection, at most ``MAX_CLIENTS`` at once):

1. Read and validate the request line (64 KiB at most, within ``READ_TIMEOUT_S``); resolve the
   names (unknown names are a usage error; a secret no certificate here uses resolves to none,
   and the reply is ``ok`` with no results: the doorbell rings every host of a fleet).
2. Note the last pass started (``PassResults.mark``): only a pass that starts after this
   point read AWSCURRENT after the caller asked, so only its result answers the caller.
3. Wait this host's splay (``splay_s``, from its instance id, capped at half the timeout), so
   the hosts of one wave do not check and reload httpd in the same second; then ``trigger`` each
   name (the daemon's ``Mailbox.post_trigger``).
4. Wait for each name's result (``PassResults.wait``) until the caller's deadline; reply.

The daemon's side is two calls around each pass: ``pass_id = results.started(names)`` before
``Agent.sync`` and ``results.finished(pass_id, {name: CheckResult})`` after it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import stat
import struct
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple, Union

from certpull.events import SecretEvent, match_certs
from certpull.outcome import Status

DEFAULT_SOCKET = "/run/certpull/control.sock"
PROTOCOL = 1
MAX_REQUEST_BYTES = 65536
MAX_CLIENTS = 16
READ_TIMEOUT_S = 5.0
REPLY_MARGIN_S = 1.0  # the server answers this long before the caller's deadline
DEFAULT_TIMEOUT_S = 120.0
MAX_TIMEOUT_S = 3600.0

OK, USAGE, TIMEOUT, STOPPING, BUSY = "ok", "usage", "timeout", "stopping", "busy"


class ControlError(Exception):
    """The control channel could not be used (protocol error, permissions, a socket in the way)."""


class AgentNotRunning(ControlError):
    """No agent answers on the socket (no socket, or nobody listening)."""


class UsageError(ControlError):
    """The request names something this host's configuration does not have."""


@dataclass(frozen=True)
class CheckResult:
    """One certificate's outcome in the pass that answered the request."""

    name: str
    status: str  # an outcome.Status value
    message: str
    version_id: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.status != Status.FAILED.value


@dataclass(frozen=True)
class Reply:
    code: str
    message: str = ""
    results: Tuple[CheckResult, ...] = ()
    splay_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.code == OK and all(result.ok for result in self.results)

    def to_json(self) -> str:
        body = {
            "v": PROTOCOL,
            "code": self.code,
            "message": self.message,
            "results": [asdict(result) for result in self.results],
            "splay_s": round(self.splay_s, 3),
        }
        return json.dumps(body, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Reply:
        try:
            data = json.loads(text)
            results = tuple(
                CheckResult(
                    name=str(r["name"]),
                    status=str(r["status"]),
                    message=str(r.get("message", "")),
                    version_id=r.get("version_id"),
                )
                for r in data.get("results", [])
            )
            return cls(
                code=str(data["code"]),
                message=str(data.get("message", "")),
                results=results,
                splay_s=float(data.get("splay_s", 0.0)),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ControlError(f"malformed reply from the agent: {exc}") from None


class PassResults:
    """The daemon's pass results, for control threads to wait on. Thread-safe."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._cond = threading.Condition()
        self._last_pass = 0
        self._done: Dict[str, Tuple[int, CheckResult]] = {}
        self._monotonic = monotonic

    def mark(self) -> int:
        """The id of the last pass started: results of later passes answer a request made now."""
        with self._cond:
            return self._last_pass

    def started(self, names: Sequence[str]) -> int:
        """A pass over ``names`` starts (the daemon calls this before ``Agent.sync``)."""
        with self._cond:
            self._last_pass += 1
            return self._last_pass

    def finished(self, pass_id: int, results: Mapping[str, CheckResult]) -> None:
        """The pass ``pass_id`` ended with these results (one per name it covered)."""
        with self._cond:
            for name, result in results.items():
                previous = self._done.get(name)
                if previous is None or previous[0] < pass_id:
                    self._done[name] = (pass_id, result)
            self._cond.notify_all()

    def wait(
        self,
        name: str,
        after: int,
        deadline: float,
        give_up: Callable[[], bool] = lambda: False,
    ) -> Optional[CheckResult]:
        """The result of the first pass after ``after`` that covered ``name``; None at the
        monotonic ``deadline``, or once ``give_up()`` is true after ``wake_all``."""
        with self._cond:
            while True:
                done = self._done.get(name)
                if done is not None and done[0] > after:
                    return done[1]
                left = deadline - self._monotonic()
                if left <= 0 or give_up():
                    return None
                self._cond.wait(left)

    def wake_all(self) -> None:
        with self._cond:
            self._cond.notify_all()


Resolver = Callable[[Sequence[str], Optional[str]], Sequence[str]]
"""(names, secret_arn) -> configured names to check; raises UsageError for unknown names."""


def config_resolver(certs: Callable[[], Mapping[str, str]]) -> Resolver:
    """A resolver over the running config (``{name: secret_arn}``, read at each request so a
    reloaded config counts); a secret matches as rotation events do (full or partial ARN, name)."""

    def resolve(names: Sequence[str], secret_arn: Optional[str]) -> Sequence[str]:
        configured = certs()
        if secret_arn:
            return match_certs(SecretEvent(kind="check-now", secret_ids=(secret_arn,)), configured)
        unknown = [name for name in names if name not in configured]
        if unknown:
            known = ", ".join(sorted(configured)) or "none"
            raise UsageError(f"no [cert:{unknown[0]}] section (configured: {known})")
        return list(dict.fromkeys(names))

    return resolve


@dataclass
class _Request:
    names: List[str] = field(default_factory=list)
    secret_arn: Optional[str] = None
    timeout_s: float = DEFAULT_TIMEOUT_S


class ControlServer:
    """Serves check requests on a UNIX socket; every side effect is a constructor argument."""

    def __init__(
        self,
        path: str,
        *,
        trigger: Callable[[str], None],
        results: PassResults,
        resolve: Resolver,
        splay_s: Union[float, Callable[[], float]] = 0.0,
        allowed_uids: Optional[Set[int]] = None,
        max_clients: int = MAX_CLIENTS,
        read_timeout_s: float = READ_TIMEOUT_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self._trigger = trigger
        self._results = results
        self._resolve = resolve
        self._splay_s = splay_s
        self._allowed_uids = allowed_uids if allowed_uids is not None else {0, os.geteuid()}
        self._monotonic = monotonic
        self._max_clients = max_clients
        self._read_timeout_s = read_timeout_s
        self._slots = threading.BoundedSemaphore(max_clients)
        self._stop = threading.Event()
        self._sock: Optional[socket.socket] = None
        self._thread: Optional[threading.Thread] = None

    @property
    def splay_s(self) -> float:
        """This host's splay (a callable is asked at each request: the instance id is looked up
        only when a request comes)."""
        value = self._splay_s() if callable(self._splay_s) else self._splay_s
        return max(0.0, value)

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Bind the socket (0600, in a directory only the agent may enter) and serve in a thread."""
        directory = os.path.dirname(self.path) or "."
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            info = os.stat(directory)
        except OSError as exc:
            raise ControlError(f"cannot create {directory}: {exc.strerror}") from None
        if info.st_mode & 0o022:
            raise ControlError(
                f"{directory} is writable by others (mode {stat.S_IMODE(info.st_mode):04o}): "
                "refusing to serve the control socket there"
            )
        self._remove_stale()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(self.path)
            os.chmod(self.path, 0o600)
            sock.listen(self._max_clients)
        except OSError as exc:
            sock.close()
            raise ControlError(f"cannot listen on {self.path}: {exc.strerror}") from None
        sock.settimeout(5.0)  # stop() wakes accept() itself; this is only a safety net
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, name="certpull-control", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting; requests still waiting get a ``stopping`` reply at once."""
        self._stop.set()
        self._results.wake_all()
        if self._sock is not None:
            with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as wake:
                wake.settimeout(1.0)
                wake.connect(self.path)  # accept() returns and sees the stop flag
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            with contextlib.suppress(OSError):
                os.unlink(self.path)

    def _remove_stale(self) -> None:
        try:
            info = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(info.st_mode):
            raise ControlError(f"{self.path} exists and is not a socket: refusing to replace it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(1.0)
            probe.connect(self.path)
        except OSError:
            os.unlink(self.path)  # nobody listens: left by an agent that died
            return
        finally:
            probe.close()
        raise ControlError(f"another certpull agent already answers on {self.path}")

    # --- serving -----------------------------------------------------------------------------

    def _serve(self) -> None:
        sock = self._sock
        while sock is not None and not self._stop.is_set():
            try:
                conn, _ = sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            if self._stop.is_set():
                conn.close()
                return
            if not self._slots.acquire(blocking=False):
                self._send(conn, Reply(BUSY, f"more than {self._max_clients} requests at once"))
                conn.close()
                continue
            threading.Thread(
                target=self._handle, args=(conn,), name="certpull-control-request", daemon=True
            ).start()

    def _handle(self, conn: socket.socket) -> None:
        try:
            with conn:
                self._send(conn, self._answer(conn))
        finally:
            self._slots.release()

    def _answer(self, conn: socket.socket) -> Reply:
        started = self._monotonic()
        uid = _peer_uid(conn)
        if uid is None or uid not in self._allowed_uids:
            return Reply(USAGE, f"uid {uid} may not use the control socket (root only)")
        try:  # (1)
            conn.settimeout(self._read_timeout_s)
            request = _parse(_read_line(conn))
            names = list(self._resolve(request.names, request.secret_arn))
        except UsageError as exc:
            return Reply(USAGE, str(exc))
        except OSError:
            return Reply(USAGE, f"no complete request within {self._read_timeout_s:g} s")
        if not names:
            return Reply(OK, f"no certificate on this host uses {request.secret_arn}")
        deadline = started + request.timeout_s - REPLY_MARGIN_S
        after = self._results.mark()  # (2)
        splay = min(self.splay_s, request.timeout_s / 2.0)
        if self._stop.wait(splay):  # (3)
            return Reply(STOPPING, "the agent is stopping", splay_s=splay)
        for name in names:
            self._trigger(name)
        found: List[CheckResult] = []  # (4)
        for name in names:
            result = self._results.wait(name, after, deadline, self._stop.is_set)
            if self._stop.is_set():
                return Reply(STOPPING, "the agent is stopping", tuple(found), splay)
            if result is None:
                waited = self._monotonic() - started
                return Reply(
                    TIMEOUT,
                    f"{name}: no result within {waited:.0f} s (the agent is still working; "
                    "the installed certificate stays until it finishes)",
                    tuple(found),
                    splay,
                )
            found.append(result)
        return Reply(OK, "", tuple(found), splay)

    def _send(self, conn: socket.socket, reply: Reply) -> None:
        with contextlib.suppress(OSError):  # the caller gave up: nothing to tell
            conn.sendall(reply.to_json().encode())


def request_check(
    path: str = DEFAULT_SOCKET,
    *,
    names: Sequence[str] = (),
    secret_arn: Optional[str] = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Reply:
    """Ask the running agent to check now and wait for the result (the client side).

    Raises AgentNotRunning when nothing answers on ``path``, ControlError for other failures.
    """
    body = {"v": PROTOCOL, "op": "check", "names": list(names), "timeout_s": timeout_s}
    if secret_arn:
        body["secret_arn"] = secret_arn
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(5.0)
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise AgentNotRunning(f"no agent answers on {path} ({exc.strerror})") from None
        except OSError as exc:
            if exc.errno in (errno.ENOTSOCK, errno.ENOENT, errno.ECONNREFUSED):
                raise AgentNotRunning(f"no agent answers on {path} ({exc.strerror})") from None
            raise ControlError(f"cannot connect to {path}: {exc.strerror}") from None
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall((json.dumps(body) + "\n").encode())  # a refusal may come first
        sock.settimeout(timeout_s + 5.0)
        try:
            text = _read_line(sock)
        except socket.timeout:
            raise ControlError(f"the agent did not answer within {timeout_s:g} s") from None
        except OSError as exc:
            raise ControlError(f"lost the connection to the agent: {exc.strerror}") from None
    finally:
        sock.close()
    if not text:
        raise AgentNotRunning(f"the agent on {path} closed the connection without answering")
    return Reply.from_json(text)


# --- helpers ---------------------------------------------------------------------------------


def _read_line(conn: socket.socket) -> str:
    """Up to the first newline (or EOF); at most MAX_REQUEST_BYTES."""
    chunks: List[bytes] = []
    size = 0
    while True:
        chunk = conn.recv(4096)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if b"\n" in chunk:
            break
        if size > MAX_REQUEST_BYTES:
            raise UsageError(f"request longer than {MAX_REQUEST_BYTES} bytes")
    return b"".join(chunks).split(b"\n", 1)[0].decode("utf-8", "replace")


def _parse(line: str) -> _Request:
    try:
        data: Any = json.loads(line)
    except ValueError:
        raise UsageError("request is not JSON") from None
    if not isinstance(data, dict) or data.get("op") != "check":
        raise UsageError('request must be a JSON object with "op": "check"')
    names = data.get("names") or []
    secret_arn = data.get("secret_arn") or None
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise UsageError('"names" must be a list of certificate names')
    if secret_arn is not None and not isinstance(secret_arn, str):
        raise UsageError('"secret_arn" must be a string')
    if bool(names) == bool(secret_arn):
        raise UsageError("name certificates or a secret ARN, not both and not neither")
    timeout = data.get("timeout_s", DEFAULT_TIMEOUT_S)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise UsageError('"timeout_s" must be a number')
    if not 1.0 <= timeout <= MAX_TIMEOUT_S:
        raise UsageError(f'"timeout_s" must be between 1 and {MAX_TIMEOUT_S:g} s')
    return _Request(names=names, secret_arn=secret_arn, timeout_s=float(timeout))


def _peer_uid(conn: socket.socket) -> Optional[int]:
    try:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    _, uid, _ = struct.unpack("3i", creds)
    return int(uid)
