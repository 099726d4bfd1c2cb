"""Builds the botocore clients certpull uses, in one place: endpoint, timeouts, retries, assumed roles.

Retries are botocore's `standard` mode (exponential backoff with jitter, throttling and transient
errors only), with connect/read timeouts short enough that a hung endpoint never stalls the agent for
long. An assumed role's credentials refresh themselves before they expire (botocore's
DeferredRefreshableCredentials around AssumeRole), so a months-long `certpull run` keeps working.

botocore alone, not boto3: certpull uses clients, never resources, and boto3's Session only wraps
botocore's (boto3 also imports s3transfer: 2 MiB). Clients made from one botocore session share
its parsed service models, endpoint data and rulesets: `certpull run` passes one session to the
agent's AwsClients and the SQS queue's (wiring.py), and an assumed role's session shares that
session's loader and endpoint resolver (only its credentials differ).
"""

from __future__ import annotations

import functools
import socket
import threading
from typing import Any, Dict, Optional, Tuple

import botocore.config
import botocore.session
from botocore.credentials import AssumeRoleCredentialFetcher, DeferredRefreshableCredentials

from certpull import __version__

SQS_WAIT_S = 20

# Components a role session takes from the base session: read-only data and factories.
_SHARED_COMPONENTS = ("data_loader", "response_parser_factory")
_SHARED_INTERNAL = ("endpoint_resolver", "exceptions_factory")


class AwsClients:
    """Caches one client per (service, region, role): clients are thread-safe and costly to build."""

    def __init__(
        self,
        endpoint_url: Optional[str] = None,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 15.0,
        max_attempts: int = 3,
        session: Optional[botocore.session.Session] = None,
        role_session_s: int = 3600,
    ) -> None:
        self._endpoint_url = endpoint_url
        self._role_session_s = role_session_s
        self._read_timeout_s = read_timeout_s
        self._session = session or botocore.session.get_session()
        self._config = botocore.config.Config(
            connect_timeout=connect_timeout_s,
            read_timeout=read_timeout_s,
            # total_max_attempts counts the first call too (botocore's max_attempts counts retries)
            retries={"mode": "standard", "total_max_attempts": max_attempts},
            user_agent_extra=f"certpull/{__version__}",
            tcp_keepalive=True,
        )
        self._clients: Dict[Tuple[str, str, Optional[str], Optional[str]], Any] = {}
        self._lock = threading.Lock()

    def client(
        self,
        service: str,
        region: str,
        role_arn: Optional[str] = None,
        external_id: Optional[str] = None,
    ) -> Any:
        key = (service, region, role_arn, external_id)
        with self._lock:
            if key not in self._clients:
                session = (
                    self._role_session(region, role_arn, external_id) if role_arn else self._session
                )
                self._clients[key] = self._new_client(service, region, self._config, session)
            return self._clients[key]

    def sqs(self, region: str) -> Any:
        """SQS long polls last 20 s: the read timeout must outlast them."""
        key = ("sqs", region, None, None)
        with self._lock:
            if key not in self._clients:
                config = self._config.merge(
                    botocore.config.Config(read_timeout=max(self._read_timeout_s, SQS_WAIT_S + 10))
                )
                self._clients[key] = self._new_client("sqs", region, config, self._session)
            return self._clients[key]

    def credential_method(self) -> Optional[str]:
        """Where the default chain found credentials ("env", "iam-role", ...); None: nowhere."""
        credentials = self._session.get_credentials()
        return str(credentials.method) if credentials is not None else None

    def available_regions(self, service: str, partition: str) -> Any:
        """The regions botocore's endpoint data lists for ``service`` in ``partition``."""
        return self._session.get_available_regions(service, partition)

    def secretsmanager(
        self, region: str, role_arn: Optional[str] = None, external_id: Optional[str] = None
    ) -> Any:
        return self.client("secretsmanager", region, role_arn, external_id)

    def _new_client(
        self, service: str, region: str, config: Any, session: botocore.session.Session
    ) -> Any:
        kwargs: Dict[str, Any] = {"region_name": region, "config": config}
        if self._endpoint_url:
            kwargs["endpoint_url"] = self._endpoint_url
        return session.create_client(service, **kwargs)

    def _role_session(
        self, region: str, role_arn: str, external_id: Optional[str]
    ) -> botocore.session.Session:
        """A session whose credentials come from AssumeRole and are renewed before expiry."""
        base = self._session
        create_client = functools.partial(
            base.create_client, config=self._config, endpoint_url=self._endpoint_url
        )
        extra: Dict[str, Any] = {
            "RoleSessionName": session_name(),
            "DurationSeconds": self._role_session_s,
        }
        if external_id:
            extra["ExternalId"] = external_id
        fetcher = AssumeRoleCredentialFetcher(
            client_creator=create_client,
            source_credentials=base.get_credentials(),
            role_arn=role_arn,
            extra_args=extra,
        )
        role_core = botocore.session.Session()
        for name in _SHARED_COMPONENTS:
            role_core.register_component(name, base.get_component(name))
        for name in _SHARED_INTERNAL:
            # botocore has no public way to share these; without them each role session parses
            # the endpoint data again (8.5 MiB with botocore's full endpoints.json).
            role_core._register_internal_component(  # type: ignore[attr-defined]
                name,
                base._get_internal_component(name),  # type: ignore[attr-defined]
            )
        # botocore has no public setter for refreshable credentials; this is how boto3 users do it.
        role_core._credentials = DeferredRefreshableCredentials(  # type: ignore[attr-defined]
            refresh_using=fetcher.fetch_credentials, method="assume-role"
        )
        role_core.set_config_variable("region", region)
        return role_core


def session_name() -> str:
    """`certpull-<host>`: CloudTrail in the secret's account then shows which host read it."""
    host = socket.gethostname().split(".")[0] or "host"
    cleaned = "".join(ch if ch.isalnum() or ch in "=,.@-_" else "-" for ch in host)
    return f"certpull-{cleaned}"[:64]
