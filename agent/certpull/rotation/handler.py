"""The Lambda entry point: ``certpull.rotation.handler.lambda_handler``.

Builds real clients from the environment (``AWS_ENDPOINT_URL`` honoured, botocore standard retry
mode) and runs one rotation step. Exceptions propagate on purpose: Lambda reports the failure to
Secrets Manager, which marks the rotation failed and leaves AWSCURRENT alone.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping, Optional

import boto3
from botocore.config import Config

from certpull.rotation.issuers import AwsIssuers
from certpull.rotation.steps import Rotation

log = logging.getLogger("certpull.rotation")
log.setLevel(logging.INFO)

_CONFIG = Config(retries={"mode": "standard", "max_attempts": 5})


def client_factory(environ: Mapping[str, str]) -> Any:
    """(service, region) -> a boto3 client; region None means the Lambda's own region."""
    endpoint_url = environ.get("AWS_ENDPOINT_URL") or None

    def make(service: str, region: Optional[str] = None) -> Any:
        return boto3.client(
            service,  # type: ignore[call-overload]
            region_name=region,
            endpoint_url=endpoint_url,
            config=_CONFIG,
        )

    return make


def build_rotation(environ: Mapping[str, str]) -> Rotation:
    make = client_factory(environ)
    return Rotation(make("secretsmanager"), AwsIssuers(make))


def lambda_handler(event: Mapping[str, Any], context: Any) -> None:
    """Run ``event["Step"]`` for version ``event["ClientRequestToken"]`` of ``event["SecretId"]``."""
    build_rotation(os.environ).run(
        str(event["SecretId"]), str(event["ClientRequestToken"]), str(event["Step"])
    )
