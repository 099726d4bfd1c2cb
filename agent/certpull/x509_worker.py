"""The daemon's X.509 work in a worker process: cryptography never loads in `run`.

cryptography's Rust extension keeps about 10 MiB resident once imported, and nothing unloads it;
the daemon needs it only for the moments it validates a new bundle or reads an installed leaf.
So `certpull run` hands each such call (interfaces.X509) to a child interpreter of its own, with
its own flags and sys.path: the request (function name and arguments, the secret's text with its
private key among them) goes down a pipe to the child's stdin, never to argv, the environment or
a file; the child runs bundle.InProcess and writes the pickled result or BundleError back on its
stdout, each message length-prefixed. One-shot commands run bundle.InProcess directly.

A child is started ahead (``prepare``) when a pass is about to fetch a new version, so its start
overlaps GetSecretValue, and stays ``linger_s`` after its last answer (then its stdin is closed
and it exits), so a burst of rotations pays one interpreter start and one cryptography import
(~115 ms on Python 3.9), not one per call, and an idle agent still holds no cryptography. The
child also leaves on its own after ``linger_s`` plus IDLE_GRACE_S without a request, should the
daemon be stopped or gone. It runs as the daemon, in its sandbox, and holds the secrets it was
sent no longer than it lingers (the daemon holds them too, while a pass runs).

The leaf of every bundle a child validated or read is kept here, keyed by the SHA-256 of its
cert.pem (the last LEAF_CACHE), so reading that leaf back from the live directory (the installed
expiry every install pass checks first) needs no call: a pure function memoized on its input
bytes, not a cache of state.json.

A child that cannot start, dies without answering, or outlives ``timeout_s`` is an
X509WorkerError (a transient BundleError: that install does not happen, the last good
certificate stays, the next pass tries again); its stderr's last line is the only thing of it a
message shows. A lingering child that gives no answer (killed meanwhile) is replaced once.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import pickle
import select
import struct
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from typing import IO, Any, List, Mapping, Optional, Sequence, Tuple, cast

from certpull.bundle_data import CertBundle, LeafInfo
from certpull.config import BundlePolicy
from certpull.errors import BundleError, X509WorkerError

CALLS = ("validate", "installed_bundle", "leaf_info")
LEAF_CACHE = 16
LINGER_S = 10.0
IDLE_GRACE_S = 30.0
BOOT = (
    "import sys; sys.path[:] = {paths!r}; from certpull.x509_worker import serve; serve({idle_s!r})"
)
_LENGTH = struct.Struct(">I")


def interpreter_flags(flags: Any = sys.flags) -> List[str]:
    """This interpreter's flags for the child: isolation, site, optimization; never bytecode
    writes (the service cannot write under ProtectSystem, and the tree ships its own)."""
    out = ["-I"] if flags.isolated else (["-E"] if flags.ignore_environment else [])
    if flags.no_site:
        out.append("-S")
    if flags.optimize:
        out.append("-" + "O" * flags.optimize)
    return [*out, "-B"]


def read_message(fd: int, deadline: Optional[float]) -> Optional[bytes]:
    """One length-prefixed message from ``fd``; None at end of file; TimeoutError when it has
    not all come by ``deadline`` (time.monotonic; None: wait)."""
    header = _read_exact(fd, _LENGTH.size, deadline)
    if header is None:
        return None
    return _read_exact(fd, _LENGTH.unpack(header)[0], deadline)


def write_message(fd: int, payload: bytes, deadline: Optional[float]) -> None:
    """``payload`` length-prefixed to ``fd``; TimeoutError when the reader has not taken it all
    by ``deadline`` (a secret can be larger than a pipe holds)."""
    view = memoryview(_LENGTH.pack(len(payload)) + payload)
    while view:
        _wait(fd, deadline, write=True)
        view = view[os.write(fd, view[: 1 << 16]) :]


def _read_exact(fd: int, size: int, deadline: Optional[float]) -> Optional[bytes]:
    chunks: List[bytes] = []
    while size:
        _wait(fd, deadline, write=False)
        chunk = os.read(fd, min(size, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _wait(fd: int, deadline: Optional[float], write: bool) -> None:
    if deadline is None:
        return
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    readers, writers, _ = (
        select.select([], [fd], [], left) if write else select.select([fd], [], [], left)
    )
    if not (writers if write else readers):
        raise TimeoutError


class Worker:
    """``interfaces.X509`` by a child process that stays ``linger_s`` after its last call
    (0: one child per call). Thread-safe: one call at a time."""

    def __init__(
        self,
        timeout_s: float,
        python: str = sys.executable,
        flags: Optional[Sequence[str]] = None,
        paths: Optional[Sequence[str]] = None,
        linger_s: float = LINGER_S,
    ) -> None:
        self.timeout_s = timeout_s
        self.linger_s = linger_s
        self._leaves: OrderedDict[str, LeafInfo] = OrderedDict()
        self._argv = [
            python,
            *(interpreter_flags() if flags is None else flags),
            "-c",
            BOOT.format(
                paths=list(sys.path if paths is None else paths), idle_s=linger_s + IDLE_GRACE_S
            ),
        ]
        self._lock = threading.Lock()
        self._child: Optional[subprocess.Popen[bytes]] = None
        self._retire: Optional[threading.Timer] = None

    @property
    def child_pid(self) -> Optional[int]:
        """The lingering child's pid, None when there is none (tests look at it)."""
        child = self._child
        return child.pid if child is not None and child.poll() is None else None

    def validate(
        self,
        secret_string: str,
        policy: BundlePolicy,
        now: dt.datetime,
        installed_not_after: Optional[dt.datetime] = None,
    ) -> CertBundle:
        result: CertBundle = self._call("validate", secret_string, policy, now, installed_not_after)
        self._remember(result.cert_pem, result.leaf)
        return result

    def installed_bundle(self, files: Mapping[str, bytes]) -> CertBundle:
        result: CertBundle = self._call("installed_bundle", dict(files))
        self._remember(result.cert_pem, result.leaf)
        return result

    def leaf_info(self, cert_pem: bytes) -> LeafInfo:
        key = hashlib.sha256(cert_pem).hexdigest()
        known = self._leaves.get(key)
        if known is not None:
            self._leaves.move_to_end(key)
            return known
        result: LeafInfo = self._call("leaf_info", cert_pem)
        self._remember(cert_pem, result)
        return result

    def _remember(self, cert_pem: bytes, leaf: LeafInfo) -> None:
        key = hashlib.sha256(cert_pem).hexdigest()
        self._leaves[key] = leaf
        self._leaves.move_to_end(key)
        while len(self._leaves) > LEAF_CACHE:
            self._leaves.popitem(last=False)

    def prepare(self) -> None:
        """Start a child ahead of the next call, so its interpreter start and cryptography
        import overlap what comes first (GetSecretValue); it lingers as after a call."""
        if self.linger_s <= 0:
            return
        with self._lock:
            if self._child is None:
                try:
                    self._start()
                except X509WorkerError:
                    return  # the call itself will say why
            self._arm_retire()

    def close(self) -> None:
        """End the lingering child now (its stdin closed; killed if it does not leave)."""
        with self._lock:
            self._cancel_retire()
            self._end_child()

    def _call(self, name: str, *args: Any) -> Any:
        request = pickle.dumps((name, args))
        with self._lock:
            self._cancel_retire()
            try:
                reply = self._exchange(request)
            finally:
                if self.linger_s > 0 and self._child is not None:
                    self._arm_retire()
                else:
                    self._end_child()
        try:
            # The child is this program, started by this process: its reply is trusted.
            kind, payload = pickle.loads(reply)  # noqa: S301
        except Exception:
            kind, payload = None, None
        if kind == "ok":
            return payload
        if kind == "error" and isinstance(payload, BundleError):
            raise payload
        raise X509WorkerError("the X.509 worker failed: its answer could not be read")

    def _exchange(self, request: bytes) -> bytes:
        """The child's reply to ``request``: from the lingering child, else (or when it gives
        none) from a fresh one."""
        reused = self._child is not None
        while True:
            reply = self._ask(self._child if self._child is not None else self._start(), request)
            if reply is not None:
                return reply
            code, why = self._end_child()
            if not reused:
                raise X509WorkerError(f"the X.509 worker failed (exit {code}){why}")
            reused = False

    def _ask(self, child: subprocess.Popen[bytes], request: bytes) -> Optional[bytes]:
        stdin, stdout = cast("IO[bytes]", child.stdin), cast("IO[bytes]", child.stdout)
        deadline = time.monotonic() + self.timeout_s
        try:
            with contextlib.suppress(BrokenPipeError):  # it has gone, and says so by no reply
                write_message(stdin.fileno(), request, deadline)
            return read_message(stdout.fileno(), deadline)
        except TimeoutError:
            self._end_child(kill=True)
            raise X509WorkerError(
                f"the X.509 worker did not answer within {self.timeout_s:g} s"
            ) from None

    def _start(self) -> subprocess.Popen[bytes]:
        try:
            self._child = subprocess.Popen(
                self._argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
        except OSError as exc:
            raise X509WorkerError(f"cannot start the X.509 worker: {exc.strerror}") from None
        return self._child

    def _end_child(self, kill: bool = False) -> Tuple[Optional[int], str]:
        """Close the child's stdin and reap it (killed at once with ``kill``, else after 5 s);
        (exit code, ": its stderr's last line")."""
        child, self._child = self._child, None
        if child is None:
            return None, ""
        if kill:
            child.kill()
        pipes = cast("List[IO[bytes]]", [p for p in (child.stdin, child.stdout) if p])
        for pipe in pipes:
            with contextlib.suppress(OSError):
                pipe.close()
        try:
            child.wait(timeout=5)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        err = b""
        if child.stderr is not None:
            err = child.stderr.read()
            child.stderr.close()
        lines = err.decode("utf-8", "replace").strip().splitlines()
        return child.returncode, f": {lines[-1][:300]}" if lines else ""

    def _arm_retire(self) -> None:
        self._cancel_retire()
        self._retire = threading.Timer(self.linger_s, self.close)
        self._retire.daemon = True
        self._retire.start()

    def _cancel_retire(self) -> None:
        if self._retire is not None:
            self._retire.cancel()
            self._retire = None


def serve(idle_s: Optional[float] = None) -> None:
    """The child's side: cryptography first (a fresh child is ready as soon as it can be), then
    pickled (name, args) requests from stdin, each answered on stdout, until stdin closes or
    ``idle_s`` passes without one."""
    from certpull.bundle import InProcess  # noqa: PLC0415 - cryptography, in the child only

    worker = InProcess()
    while True:
        try:
            request = read_message(0, None if idle_s is None else time.monotonic() + idle_s)
        except TimeoutError:
            return
        if request is None:
            return
        write_message(1, pickle.dumps(_answer(worker, request)), None)


def _answer(worker: Any, request: bytes) -> Any:
    try:
        name, args = pickle.loads(request)  # noqa: S301 - from the daemon, our parent
        call = getattr(worker, name) if name in CALLS else None
        if call is None:
            return ("error", X509WorkerError(f"unknown X.509 worker call {name!r}"))
        return ("ok", call(*args))
    except BundleError as exc:
        return ("error", exc)
    except Exception as exc:
        return ("error", X509WorkerError(f"the X.509 worker failed: {type(exc).__name__}: {exc}"))
