"""source.py + aws.py against moto's server: same account, assumed role into another account,
credential refresh, endpoint from the environment. Calls are counted at the proxy."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path
from typing import Any, List

import boto3
import pytest

from certpull.aws import AwsClients
from certpull.errors import SourceError
from certpull.source import SecretSource
from tests.apache import ApacheFactory
from tests.aws_local import LocalAws
from tests.aws_proxy import AwsProxy
from tests.pki import Pki
from tests.site import Site

pytestmark = pytest.mark.integration

OWNER_ACCOUNT = "111111111111"
OWNER_ROLE = f"arn:aws:iam::{OWNER_ACCOUNT}:role/certpull-reader"


def owner_client(aws: LocalAws) -> Any:
    """A Secrets Manager client in the owner account (moto maps assumed-role keys to that account)."""
    creds = aws.client("sts").assume_role(
        RoleArn=f"arn:aws:iam::{OWNER_ACCOUNT}:role/admin", RoleSessionName="owner"
    )["Credentials"]
    return boto3.client(
        "secretsmanager",
        region_name="us-east-1",
        endpoint_url=aws.endpoint_url,
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
    )


def test_same_account_describe_then_get(local_aws: LocalAws, aws_proxy: AwsProxy, pki: Pki) -> None:
    arn = local_aws.client("secretsmanager").create_secret(
        Name=f"same-{uuid.uuid4().hex[:8]}", SecretString=pki.secret_string()
    )["ARN"]
    source = SecretSource(AwsClients(endpoint_url=aws_proxy.endpoint_url).secretsmanager)
    version = source.current_version_id(arn)
    value = source.fetch_current(arn)
    assert value.version_id == version
    assert aws_proxy.count("DescribeSecret") == 1 and aws_proxy.count("GetSecretValue") == 1
    assert aws_proxy.count("AssumeRole") == 0


def test_assumed_role_reads_a_secret_of_another_account(
    local_aws: LocalAws, aws_proxy: AwsProxy, pki: Pki
) -> None:
    arn = owner_client(local_aws).create_secret(
        Name=f"cross-{uuid.uuid4().hex[:8]}", SecretString=pki.secret_string()
    )["ARN"]
    assert f":{OWNER_ACCOUNT}:" in arn
    clients = AwsClients(endpoint_url=aws_proxy.endpoint_url)
    # Without the role, the host's own account has no such secret: a permanent error.
    with pytest.raises(SourceError, match="secret not found") as info:
        SecretSource(clients.secretsmanager).current_version_id(arn)
    assert info.value.transient is False
    source = SecretSource(clients.secretsmanager)
    source.current_version_id(arn, OWNER_ROLE, "fleet-7")
    source.fetch_current(arn, OWNER_ROLE, "fleet-7")
    source.current_version_id(arn, OWNER_ROLE, "fleet-7")
    assert aws_proxy.count("AssumeRole") == 1  # credentials are cached until they near expiry


def test_assumed_role_credentials_are_refreshed_before_they_expire(
    local_aws: LocalAws, aws_proxy: AwsProxy, pki: Pki
) -> None:
    """Sessions of 15 minutes are always inside botocore's 15-minute refresh window: every call
    renews them. (With the default 1 h session the same happens after 45 minutes.)"""
    arn = owner_client(local_aws).create_secret(
        Name=f"refresh-{uuid.uuid4().hex[:8]}", SecretString=pki.secret_string()
    )["ARN"]
    source = SecretSource(
        AwsClients(endpoint_url=aws_proxy.endpoint_url, role_session_s=900).secretsmanager
    )
    source.current_version_id(arn, OWNER_ROLE)
    assert aws_proxy.count("AssumeRole") == 1
    source.current_version_id(arn, OWNER_ROLE)
    assert aws_proxy.count("AssumeRole") == 2
    assert aws_proxy.count("DescribeSecret") == 2


def test_endpoint_from_the_environment_when_the_config_has_none(
    tmp_path: Path, local_aws: LocalAws, aws_proxy: AwsProxy, apache: ApacheFactory, pki: Pki
) -> None:
    site = Site(tmp_path, local_aws, aws_proxy, apache.new(), pki)
    site.create_secret(pki.leaf())
    site.agent_options["endpoint_url"] = ""
    site.write_config()
    env = dict(os.environ, AWS_ENDPOINT_URL=aws_proxy.endpoint_url)
    done = subprocess.run(
        [*site_argv(site), "sync", "--dry-run"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "would install" in done.stdout
    assert aws_proxy.count("DescribeSecret") == 1


def site_argv(site: Site) -> List[str]:
    import sys

    return [sys.executable, "-m", "certpull", "-c", str(site.config_path)]
