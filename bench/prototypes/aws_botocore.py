"""Prototype of certpull.aws on botocore alone: boto3 (and the s3transfer it imports) never loads.

Same interface as agent/certpull/aws.py (`AwsClients.client/sqs/secretsmanager`); boto3's Session
only wraps botocore's, and certpull uses clients, not resources. variants.py installs this module
as `certpull.aws` before certpull.daemon is imported.
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


class AwsClients:
    """Caches one client per (service, region, role), all from one botocore session."""

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
            retries={"mode": "standard", "total_max_attempts": max_attempts},
            user_agent_extra=f"certpull/{__version__}",
            tcp_keepalive=True,
        )
        self._clients: Dict[Tuple[str, str, Optional[str], Optional[str]], Any] = {}
        self._lock = threading.Lock()

    def _create(self, session: Any, service: str, region: str, config: Any) -> Any:
        kwargs: Dict[str, Any] = {"region_name": region, "config": config}
        if self._endpoint_url:
            kwargs["endpoint_url"] = self._endpoint_url
        return session.create_client(service, **kwargs)

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
                self._clients[key] = self._create(session, service, region, self._config)
            return self._clients[key]

    def sqs(self, region: str) -> Any:
        key = ("sqs", region, None, None)
        with self._lock:
            if key not in self._clients:
                config = self._config.merge(
                    botocore.config.Config(read_timeout=max(self._read_timeout_s, SQS_WAIT_S + 10))
                )
                self._clients[key] = self._create(self._session, "sqs", region, config)
            return self._clients[key]

    def secretsmanager(
        self, region: str, role_arn: Optional[str] = None, external_id: Optional[str] = None
    ) -> Any:
        return self.client("secretsmanager", region, role_arn, external_id)

    def _role_session(
        self, region: str, role_arn: str, external_id: Optional[str]
    ) -> botocore.session.Session:
        create_client = functools.partial(
            self._session.create_client, config=self._config, endpoint_url=self._endpoint_url
        )
        extra: Dict[str, Any] = {
            "RoleSessionName": _session_name(),
            "DurationSeconds": self._role_session_s,
        }
        if external_id:
            extra["ExternalId"] = external_id
        fetcher = AssumeRoleCredentialFetcher(
            client_creator=create_client,
            source_credentials=self._session.get_credentials(),
            role_arn=role_arn,
            extra_args=extra,
        )
        role_core = botocore.session.Session()
        role_core._credentials = DeferredRefreshableCredentials(  # type: ignore[attr-defined]
            refresh_using=fetcher.fetch_credentials, method="assume-role"
        )
        role_core.set_config_variable("region", region)
        return role_core


def _session_name() -> str:
    host = socket.gethostname().split(".")[0] or "host"
    cleaned = "".join(ch if ch.isalnum() or ch in "=,.@-_" else "-" for ch in host)
    return f"certpull-{cleaned}"[:64]
