"""The daemon's X.509 work in a short-lived worker process: cryptography never loads in `run`.

cryptography's Rust extension keeps about 10 MiB resident once imported, and nothing unloads it;
the daemon needs it only for the moments it validates a new bundle or reads an installed leaf.
So `certpull run` hands each such call (interfaces.X509) to a fresh interpreter of its own, with
its own flags and sys.path: the request (function name and arguments, the secret's text with its
private key among them) goes down a pipe to the child's stdin, never to argv, the environment or
a file; the child runs bundle.InProcess, writes the pickled result or BundleError to its stdout
and exits. One-shot commands run bundle.InProcess directly (their process ends anyway).

The leaf of every bundle a child validated or read is kept here, keyed by the SHA-256 of its
cert.pem (the last LEAF_CACHE), so reading that leaf back from the live directory (the installed
expiry every install pass checks first) needs no second child: a pure function memoized on its
input bytes, not a cache of state.json.

A child that cannot start, dies, or outlives ``timeout_s`` is an X509WorkerError (a transient
BundleError: that install does not happen, the last good certificate stays, the next pass tries
again); its stderr's last line is the only thing of it a message shows.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import pickle
import subprocess
import sys
from collections import OrderedDict
from typing import Any, List, Mapping, Optional, Sequence

from certpull.bundle_data import CertBundle, LeafInfo
from certpull.config import BundlePolicy
from certpull.errors import BundleError, X509WorkerError

CALLS = ("validate", "installed_bundle", "leaf_info")
LEAF_CACHE = 16
BOOT = "import sys; sys.path[:] = {paths!r}; from certpull.x509_worker import serve; serve()"


def interpreter_flags(flags: Any = sys.flags) -> List[str]:
    """This interpreter's flags for the child: isolation, site, optimization; never bytecode
    writes (the service cannot write under ProtectSystem, and the tree ships its own)."""
    out = ["-I"] if flags.isolated else (["-E"] if flags.ignore_environment else [])
    if flags.no_site:
        out.append("-S")
    if flags.optimize:
        out.append("-" + "O" * flags.optimize)
    return [*out, "-B"]


class Worker:
    """``interfaces.X509`` by one child process per call."""

    def __init__(
        self,
        timeout_s: float,
        python: str = sys.executable,
        flags: Optional[Sequence[str]] = None,
        paths: Optional[Sequence[str]] = None,
    ) -> None:
        self.timeout_s = timeout_s
        self._leaves: OrderedDict[str, LeafInfo] = OrderedDict()
        self._argv = [
            python,
            *(interpreter_flags() if flags is None else flags),
            "-c",
            BOOT.format(paths=list(sys.path if paths is None else paths)),
        ]

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

    def _call(self, name: str, *args: Any) -> Any:
        try:
            done = subprocess.run(
                self._argv,
                input=pickle.dumps((name, args)),
                capture_output=True,
                timeout=self.timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise X509WorkerError(
                f"the X.509 worker did not answer within {self.timeout_s:g} s"
            ) from None
        except OSError as exc:
            raise X509WorkerError(f"cannot start the X.509 worker: {exc.strerror}") from None
        try:
            # The child is this program, started by this process: its reply is trusted.
            kind, payload = (
                pickle.loads(done.stdout)  # noqa: S301
                if done.returncode == 0
                else (None, None)
            )
        except Exception:
            kind, payload = None, None
        if kind == "ok":
            return payload
        if kind == "error" and isinstance(payload, BundleError):
            raise payload
        lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
        why = f": {lines[-1][:300]}" if lines else ""
        raise X509WorkerError(f"the X.509 worker failed (exit {done.returncode}){why}")


def serve() -> None:
    """The child's side: one pickled (name, args) from stdin, one pickled reply to stdout."""
    name, args = pickle.loads(sys.stdin.buffer.read())  # noqa: S301 - from the daemon, our parent
    from certpull.bundle import InProcess  # noqa: PLC0415 - cryptography, in the child only

    call = getattr(InProcess(), name) if name in CALLS else None
    try:
        if call is None:
            reply: Any = ("error", X509WorkerError(f"unknown X.509 worker call {name!r}"))
        else:
            reply = ("ok", call(*args))
    except BundleError as exc:
        reply = ("error", exc)
    except Exception as exc:
        reply = ("error", X509WorkerError(f"the X.509 worker failed: {type(exc).__name__}: {exc}"))
    sys.stdout.buffer.write(pickle.dumps(reply))
