"""Shared fixtures: the real parts (moto server, a counting proxy, private Apache instances)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterator, Optional

import pytest

from tests.apache import ApacheFactory, apache_factory
from tests.aws_local import LocalAws
from tests.aws_proxy import AwsProxy
from tests.pki import Pki

logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto server access log

HOST_TIER = Path(__file__).resolve().parent / "host"

# Tests never reach real AWS: dummy credentials, no profile, no instance metadata look-ups.
os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
)
for _name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "HTTP_PROXY", "HTTPS_PROXY"):
    os.environ.pop(_name, None)


@pytest.fixture(scope="session")
def local_aws() -> Iterator[LocalAws]:
    with LocalAws() as aws:
        yield aws


@pytest.fixture
def aws_proxy(local_aws: LocalAws) -> Iterator[AwsProxy]:
    proxy = AwsProxy(local_aws.endpoint_url).start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture(scope="session")
def pki() -> Pki:
    return Pki()


@pytest.fixture(scope="session")
def apache_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApacheFactory]:
    yield from apache_factory(tmp_path_factory)


@pytest.fixture
def apache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApacheFactory]:
    yield from apache_factory(tmp_path_factory)


# --- the host tier (tests/host): real systemd in containers, run once per `./dev test` ----------


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--host-tier",
        action="store_true",
        help="collect tests/host (boots Debian containers; scripts/test.sh runs it once)",
    )


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> Optional[bool]:
    """tests/host only with --host-tier: the two interpreter runs share the loopback."""
    if collection_path == HOST_TIER and not config.getoption("--host-tier"):
        return True
    return None
