"""Every key type the validator accepts is installed in a form httpd pairs with its certificate
(issue 12, item 4): one real Apache, one rotation per type and key format, each reloaded and
served; the types it refuses never touch disk."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.apache import ApacheFactory
from tests.aws_local import LocalAws
from tests.aws_proxy import AwsProxy
from tests.pki import ACCEPTED_KEYS, Pki, openssl_leaf
from tests.site import Site

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def site(
    tmp_path_factory: pytest.TempPathFactory, local_aws: LocalAws, apache_session: ApacheFactory
) -> Iterator[Site]:
    proxy = AwsProxy(local_aws.endpoint_url).start()
    pki = Pki()
    s = Site(tmp_path_factory.mktemp("key-types"), local_aws, proxy, apache_session.new(), pki)
    s.create_secret(pki.leaf())
    assert s.certpull("sync").returncode == 0
    s.apache.start()
    try:
        yield s
    finally:
        proxy.stop()


@pytest.mark.parametrize(
    ("kind", "size", "fmt"), ACCEPTED_KEYS, ids=[f"{k}{s}-{f}" for k, s, f in ACCEPTED_KEYS]
)
def test_an_accepted_key_type_is_served_by_httpd_after_a_reload(
    site: Site, kind: str, size: int, fmt: str
) -> None:
    leaf = site.pki.leaf(key_kind=kind, key_size=size, slot=60)
    reloads = site.reloads()
    site.put(secret_string=site.pki.secret_string(leaf, PRIVATE_KEY_PEM=leaf.key_pem(fmt)))
    done = site.certpull("sync")
    assert done.returncode == 0, done.stdout + done.stderr
    assert site.reloads() == reloads + 1 and site.apache.is_running()
    assert site.served_der() == leaf.der


@pytest.mark.parametrize("kind", ["ed25519", "rsa-pss"])
def test_a_refused_key_type_never_touches_disk(site: Site, kind: str, tmp_path: Path) -> None:
    if kind == "ed25519":
        leaf = site.pki.leaf(key_kind="ed25519", slot=61)
        body = site.pki.secret_string(leaf)
    else:
        cert, key = openssl_leaf(site.pki.intermediate, tmp_path, algorithm="RSA-PSS")
        body = site.pki.secret_string(None, CERTIFICATE_PEM=cert, PRIVATE_KEY_PEM=key)
    before, reloads = site.live_bytes(), site.reloads()
    site.put(secret_string=body)
    if kind == "rsa-pss":
        import time

        time.sleep(1.5)  # openssl starts the certificate now: let "now" pass its notBefore
    done = site.certpull("sync")
    assert done.returncode == 1
    assert ("Ed25519" if kind == "ed25519" else "RSA-PSS") in done.stdout, done.stdout
    assert site.live_bytes() == before and site.reloads() == reloads and site.apache.is_running()
