"""`state.json`: what the agent installed, when it last looked, and what went wrong.

The file is the only channel between the agent and `certpull status`, so it is written atomically
(temporary file, fsync, rename, fsync of the directory) and read without importing anything heavy:
`status` must answer in well under 200 ms. Fields this version does not know are ignored when the
file is read, and so are not written back: a reader never fails on a newer agent's file, but a
save by an older agent drops the newer agent's extra fields.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import stat
import time
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from datetime import datetime, timezone
from typing import (
    Any,
    Callable,
    Dict,
    Iterator,
    Mapping,
    Optional,
    Type,
    TypeVar,
    Union,
    get_args,
    get_origin,
    get_type_hints,
)

from certpull.errors import StoreError
from certpull.fileops import Dir, FileOps, open_trusted_dir, reason

STATE_FORMAT = 1
STATE_FILE = "state.json"
LOCK_FILE = "lock"
RUN_LOCK_FILE = "run.lock"
DAMAGED_SUFFIX = ".damaged-"
KEEP_DAMAGED = 3
STATE_DIR_MODE = 0o700
MAX_STATE_BYTES = 16 << 20

T = TypeVar("T")
_BAD = object()


class StateDamaged(StoreError):
    """state.json exists but is not a state file (torn, empty, garbage); the live directories
    still say what is installed, so the agent rebuilds it."""


def parse_time(text: str) -> Optional[datetime]:
    """A time the record holds (ISO 8601; a naive one is UTC); None when it is garbled."""
    try:
        parsed = datetime.fromisoformat(text)
    except (ValueError, TypeError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


@dataclass
class Installed:
    """The certificate now active in the live directory."""

    version_id: str
    store_version: str
    serial: str
    fingerprint_sha256: str
    subject: str
    names: list = field(default_factory=list)  # type: ignore[type-arg]
    not_before: str = ""
    not_after: str = ""
    key_type: str = ""
    certificate_arn: Optional[str] = None
    installed_at: float = 0.0
    # The chain certificate served with the leaf that expires first (status covers it too).
    chain_not_after: str = ""
    chain_expiring: str = ""


@dataclass
class Pending:
    """A validated version waiting: for the install window, or for its notBefore."""

    version_id: str
    serial: str
    not_after: str
    found_at: float
    not_before: str = ""  # set when the leaf is not valid yet: installed at this time


@dataclass
class Rejected:
    """A bundle httpd refused (it died on reload, its config test failed only with it, or it was
    not served): not installed again until AWSCURRENT moves to another bundle."""

    version_id: str
    fingerprint: str
    reason: str
    at: float


@dataclass
class CertState:
    secret_arn: str = ""
    installed: Optional[Installed] = None
    previous: Optional[Installed] = None  # what `installed` replaced: the rollback target
    last_check_at: Optional[float] = None
    last_change_at: Optional[float] = None
    last_error: Optional[str] = None
    last_error_at: Optional[float] = None
    last_error_transient: Optional[bool] = None
    consecutive_failures: int = 0
    last_verify_ok: Optional[bool] = None
    last_verify_at: Optional[float] = None
    # The leaf a handshake last proved served (status says "matches" only when it is installed's).
    verified_fingerprint: Optional[str] = None
    seen_version_id: Optional[str] = None  # AWSCURRENT at the last successful check
    held_version_id: Optional[str] = (
        None  # rolled back from: not re-installed until AWSCURRENT moves
    )
    rollback_to: Optional[str] = None  # a rollback in progress: the version dir it activates
    reload_pending: bool = False  # active on disk, httpd not reloaded with it yet
    version_history: list = field(default_factory=list)  # type: ignore[type-arg]
    rejected: Optional[Rejected] = None
    warnings: list = field(default_factory=list)  # type: ignore[type-arg]
    pending: Optional[Pending] = None
    next_check_at: Optional[float] = None
    backoff_until: Optional[float] = None
    drift_count: int = 0
    last_drift_at: Optional[float] = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CertState:
        return _typed(cls, data) or cls()


@dataclass
class DaemonState:
    pid: Optional[int] = None
    started_at: Optional[float] = None
    heartbeat_at: Optional[float] = None
    heartbeat_interval_s: Optional[float] = None
    stopped_at: Optional[float] = None
    config_error: Optional[str] = None
    mode: Optional[str] = None  # "poll" or "events"
    # Who the pid was: /proc/PID/stat start time (clock ticks since boot) and the boot id, so
    # that a pid reused by another process is not taken for the daemon.
    start_ticks: Optional[int] = None
    boot_id: Optional[str] = None


@dataclass
class State:
    certs: Dict[str, CertState] = field(default_factory=dict)
    daemon: DaemonState = field(default_factory=DaemonState)
    updated_at: Optional[float] = None

    def cert(self, name: str) -> CertState:
        return self.certs.setdefault(name, CertState())

    def to_json(self) -> str:
        body = {
            "format": STATE_FORMAT,
            "updated_at": self.updated_at,
            "daemon": asdict(self.daemon),
            "certs": {name: asdict(cert) for name, cert in sorted(self.certs.items())},
        }
        return json.dumps(body, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> State:
        """Parse state.json. Text that is not a JSON object raises ValueError; a field of the
        wrong type is dropped (its default applies), as is a record missing a required field."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("it is not a JSON object")
        certs = data.get("certs")
        daemon = data.get("daemon")
        updated = _value(data.get("updated_at"), Optional[float])
        return cls(
            certs={
                str(name): CertState.from_dict(value)
                for name, value in (certs.items() if isinstance(certs, dict) else ())
                if isinstance(value, dict)
            },
            daemon=(_typed(DaemonState, daemon) if isinstance(daemon, dict) else None)
            or DaemonState(),
            updated_at=None if updated is _BAD else updated,
        )


def _typed(cls: Type[T], data: Mapping[str, Any]) -> Optional[T]:
    """``cls`` from the fields of ``data`` whose values have the declared type; None when a
    required field is missing or of the wrong type."""
    hints = get_type_hints(cls)
    values: Dict[str, Any] = {}
    for f in fields(cls):  # type: ignore[arg-type]
        required = f.default is MISSING and f.default_factory is MISSING
        value = _value(data[f.name], hints[f.name]) if f.name in data else _BAD
        if value is _BAD:
            if required:
                return None
            continue
        values[f.name] = value
    return cls(**values)


def _value(value: Any, hint: Any) -> Any:
    """``value`` if it fits ``hint`` (converted where JSON is loose: int for float), else _BAD."""
    args = get_args(hint)
    if get_origin(hint) is Union:
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _value(value, inner[0]) if len(inner) == 1 else _BAD
    if hint is bool:
        return value if isinstance(value, bool) else _BAD
    if hint is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else _BAD
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return float(value) if ok else _BAD
    if hint is str:
        return value if isinstance(value, str) else _BAD
    if hint is list:
        return [v for v in value if isinstance(v, str)] if isinstance(value, list) else _BAD
    if isinstance(hint, type) and is_dataclass(hint):
        found = _typed(hint, value) if isinstance(value, dict) else None
        return _BAD if found is None else found
    return _BAD


class StateFile:
    """Reads and atomically rewrites `<state_dir>/state.json`; serialises writers with a lock file.

    The state directory is opened through `open_trusted_dir` (a directory others can write is
    refused, with the fix) and every file in it is used relative to that descriptor without
    following a symlink: root never writes where a planted link points.
    """

    def __init__(
        self, state_dir: str, clock: Any = time.time, fs: Optional[FileOps] = None
    ) -> None:
        self.state_dir = state_dir
        self.path = os.path.join(state_dir, STATE_FILE)
        self._clock = clock
        self._fs = fs if fs is not None else FileOps()

    def _open_dir(self, create: bool) -> Optional[Dir]:
        return open_trusted_dir(
            self._fs,
            os.path.abspath(self.state_dir),
            create_mode=STATE_DIR_MODE if create else None,
        )

    def _created_dir(self) -> Dir:
        d = self._open_dir(create=True)
        if d is None:  # open_trusted_dir creates what is missing
            raise StoreError(f"cannot create state dir {self.state_dir}")
        return d

    def load(self) -> State:
        """The saved state, or an empty one when none exists. A damaged file raises StateDamaged."""
        d = self._open_dir(create=False)
        if d is None:
            return State()
        with d:
            st = d.lstat(STATE_FILE)
            if st is None:
                return State()
            if not stat.S_ISREG(st.st_mode):
                raise StateDamaged(f"{self.path} is damaged (it is not a regular file)")
            text = d.read_file(STATE_FILE, MAX_STATE_BYTES)
        try:
            return State.from_json(text.decode("utf-8"))
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            detail = "it is empty" if not text.strip() else str(exc).splitlines()[0][:120]
            raise StateDamaged(f"{self.path} is damaged ({detail})") from None

    def quarantine(self) -> Optional[str]:
        """Move a damaged state.json aside as `state.json.damaged-<UTC time>` (kept for a look;
        at most KEEP_DAMAGED of them); return its path, None when there was nothing to move."""
        with self._created_dir() as d:
            if d.lstat(STATE_FILE) is None:
                return None
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self._clock()))
            kept = f"{STATE_FILE}{DAMAGED_SUFFIX}{stamp}.{os.urandom(2).hex()}"
            d.rename(STATE_FILE, kept)
            old = sorted(n for n in d.listdir() if n.startswith(STATE_FILE + DAMAGED_SUFFIX))
            for name in old[:-KEEP_DAMAGED]:
                with contextlib.suppress(StoreError):
                    d.unlink_if_present(name)
            d.fsync()
            return d.join(kept)

    def save(self, state: State) -> None:
        """Write atomically: temporary file in the same dir, fsync, rename, fsync dir."""
        state.updated_at = self._clock()
        data = state.to_json().encode()
        with self._created_dir() as d:
            tmp = f".state.{os.urandom(8).hex()}"
            try:
                fd = d.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
                try:
                    view = memoryview(data)
                    while view:
                        view = view[self._fs.write(fd, bytes(view)) :]
                    self._fs.fsync(fd)
                finally:
                    self._fs.close(fd)
                self._fs.rename(tmp, STATE_FILE, dir_fd=d.fd)
                self._fs.fsync(d.fd)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    self._fs.unlink(tmp, dir_fd=d.fd)
                raise StoreError(f"cannot write {self.path}: {reason(exc)}") from None

    def update(self, change: Callable[[State], None]) -> State:
        """Load, change and save under the lock (the daemon's heartbeat, status fields)."""
        with self.lock():
            try:
                state = self.load()
            except StateDamaged:
                self.quarantine()  # the next pass rebuilds the certificates' records
                state = State()
            change(state)
            self.save(state)
            return state

    @contextlib.contextmanager
    def lock(self, timeout_s: float = 120.0, sleep: Any = time.sleep) -> Iterator[None]:
        """Hold the agent's lock: one pass at a time, whether from `run`, `sync` or `rollback`."""
        fd = self._open_lock(LOCK_FILE)
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    self._fs.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES):
                        raise StoreError(f"cannot lock {self.state_dir}: {exc.strerror}") from None
                    if time.monotonic() >= deadline:
                        raise StoreError(
                            f"another certpull holds {self.state_dir}/{LOCK_FILE} "
                            f"(waited {timeout_s:g} s)"
                        ) from None
                    sleep(0.1)
            yield
        finally:
            self._fs.close(fd)

    @contextlib.contextmanager
    def daemon_lock(self, pid: int) -> Iterator[None]:
        """Held for the whole life of `certpull run`: a second one is refused, before it records
        itself anywhere. Distinct from the pass lock (``lock``), which `sync` also takes."""
        fd = self._open_lock(RUN_LOCK_FILE)
        try:
            try:
                self._fs.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise StoreError(f"cannot lock {self.state_dir}: {exc.strerror}") from None
                holder = self._fs.read(fd, 32).decode("ascii", "replace").strip()
                who = f" (pid {holder})" if holder.isdigit() else ""
                raise StoreError(
                    f"another `certpull run` is already running{who} on {self.state_dir}; "
                    "refusing to start a second one"
                ) from None
            with contextlib.suppress(OSError):
                self._fs.ftruncate(fd, 0)
                self._fs.write(fd, f"{pid}\n".encode())
            yield
        finally:
            self._fs.close(fd)

    def _open_lock(self, name: str) -> int:
        """An fd of a lock file in the state directory; a one-line StoreError saying what to do
        when it cannot be opened (read-only file system, a directory or a link in its place)."""
        with self._created_dir() as d:
            path = d.join(name)
            try:
                fd: int = d.open(name, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    why = "it is a symbolic link (remove it; certpull makes it itself)"
                elif exc.errno == errno.EISDIR:
                    why = "it is a directory (remove it; certpull makes it itself)"
                elif exc.errno == errno.EROFS:
                    why = f"{self.state_dir} is on a read-only file system (state_dir must be writable)"
                else:
                    why = reason(exc)
                raise StoreError(f"cannot open the lock {path}: {why}") from None
            return fd
