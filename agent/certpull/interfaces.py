"""The seams: what the pass (agent.py) and the daemon (daemon.py) need from each external system.

One Protocol per system, as certbot's `interfaces.Installer` does it. wiring.py passes the real
adapters (source.SecretSource, httpd.Httpd, state.StateFile, drift.DriftWatcher); tests pass
small fakes that satisfy the same Protocol, so neither side needs `type: ignore` or patching.
"""

from __future__ import annotations

from datetime import datetime
from typing import (
    TYPE_CHECKING,
    Callable,
    ContextManager,
    List,
    Mapping,
    Optional,
    Protocol,
    Sequence,
    Union,
)

if TYPE_CHECKING:
    from certpull.bundle_data import CertBundle, LeafInfo
    from certpull.config import BundlePolicy, CertConfig
    from certpull.httpd import GraceWatch, VerifyTarget
    from certpull.outcome import PassReport
    from certpull.source import SecretValue
    from certpull.state import State
    from certpull.windows import InstallWindows


class Source(Protocol):
    """Where certificate bundles come from (Secrets Manager)."""

    def current_version_id(
        self, secret_arn: str, role_arn: Optional[str] = None, external_id: Optional[str] = None
    ) -> str: ...

    def fetch_current(
        self, secret_arn: str, role_arn: Optional[str] = None, external_id: Optional[str] = None
    ) -> SecretValue: ...


class X509(Protocol):
    """The X.509 work of a pass (bundle.py's functions): in this process for one-shot commands
    (bundle.InProcess), in a worker process for the daemon (x509_worker.Worker), so that
    cryptography never stays loaded in it. Each raises BundleError with a one-line reason."""

    def validate(
        self,
        secret_string: str,
        policy: BundlePolicy,
        now: datetime,
        installed_not_after: Optional[datetime] = None,
    ) -> CertBundle: ...

    def installed_bundle(self, files: Mapping[str, bytes]) -> CertBundle: ...

    def leaf_info(self, cert_pem: bytes) -> LeafInfo: ...

    def prepare(self) -> None:
        """A call comes soon (a new version is being fetched): get ready for it meanwhile."""
        ...


class Server(Protocol):
    """The TLS server that loads the files (Apache httpd)."""

    def known_stopped(self) -> bool:
        """True only when the server is observably not running (then nothing is reloaded)."""
        ...

    def config_test(self) -> None: ...

    def graceful_reload(self, proven: Optional[Callable[[], bool]] = None) -> Optional[GraceWatch]:
        """Reload; with ``proven``, may return early with the rest of the liveness grace."""
        ...

    def start(self) -> None: ...

    def describe(self) -> str:
        """Where the server's process is looked for, for messages."""
        ...


class StateStore(Protocol):
    """state.json and the lock that serialises passes."""

    def load(self) -> State: ...

    def save(self, state: State) -> None: ...

    def update(self, change: Callable[[State], None]) -> State: ...

    def lock(self) -> ContextManager[None]: ...

    def quarantine(self) -> Optional[str]:
        """Move a damaged state.json aside; return where it went (None: nothing to move)."""
        ...


class DriftWatch(Protocol):
    """Reports which key (a certificate name, or "config") changed on disk, behind the agent's back."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def update(
        self, paths_to_watch: Optional[Mapping[str, Union[str, Sequence[str]]]] = None
    ) -> None: ...

    def suppress(self, key: str) -> ContextManager[None]: ...


class Controller(Protocol):
    """The control socket `check-now` talks to (control.ControlServer)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


class Passes(Protocol):
    """What the daemon asks of the pass (agent.Agent)."""

    def recover(
        self, certs: Optional[Sequence[CertConfig]] = None, reload: bool = True
    ) -> List[str]: ...

    def sync(
        self,
        names: Optional[Sequence[str]] = None,
        dry_run: bool = False,
        windows: Optional[InstallWindows] = None,
        retry_refused: bool = False,
        defer: Optional[Defer] = None,
        deadline: Optional[float] = None,
        start_httpd: Optional[Callable[[], bool]] = None,
    ) -> PassReport: ...

    def not_installed(self) -> List[str]: ...

    def httpd_stopped(self) -> bool: ...

    def drifted(self, name: str) -> bool: ...

    def repair(self, name: str) -> bool: ...

    def update_state(self, change: Callable[[State], None]) -> None: ...

    def watching_s(self) -> Optional[float]:
        """Seconds until ``watch_reload`` should look again; None: nothing to watch."""
        ...

    # The rest of a liveness grace, opaque here (install.Watch), handed to a reloaded agent.
    def take_watch(self) -> Optional[object]: ...

    def keep_watch(self, watch: Optional[object]) -> None: ...

    def watch_reload(self) -> List[str]:
        """The rest of the last reload's liveness grace: names rolled back because httpd died."""
        ...


Defer = Callable[[str, str, Optional[datetime]], Optional[float]]
"""(name, AWSCURRENT version id, installed leaf's notAfter) -> epoch s from which that version may
be installed (the pass leaves it pending until then); None: install it now."""

ServedCheck = Callable[["VerifyTarget", bytes, float], float]
"""(target, expected leaf DER, timeout) -> seconds until fresh handshakes served it; ReloadError otherwise."""
