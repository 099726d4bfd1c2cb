"""Compat links at install time (issue 10): the documented set-up for an unmodified ssl.conf.

httpd already runs on the distribution's stock certificate (mod_ssl's localhost.crt/.key); the
config names those paths as cert_file / key_file. The first install must make them symlinks into
the live directory *and* reload, so the secret's certificate is served; a compat link that cannot
be made must show in the exit code and in `certpull status`, not only in a log line at start.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator

import pytest

from tests.apache import ApacheFactory, write_file
from tests.aws_local import LocalAws
from tests.aws_proxy import AwsProxy
from tests.pki import Issued, Pki, make_ca, make_leaf
from tests.site import Site

pytestmark = pytest.mark.integration


def stock_certificate() -> Issued:
    """What mod_ssl generates on a fresh Amazon Linux host: a self-signed localhost certificate."""
    return make_leaf(
        make_ca("localhost stock CA", slot=7), names=("localhost", "127.0.0.1"), slot=7
    )


@pytest.fixture
def stock_site(
    tmp_path: Path, local_aws: LocalAws, aws_proxy: AwsProxy, apache: ApacheFactory, pki: Pki
) -> Iterator[Site]:
    """httpd serving the stock localhost.crt from an ssl.conf that certpull must not edit."""
    site = Site(tmp_path, local_aws, aws_proxy, apache.new(), pki)
    tls = tmp_path / "pki-tls"
    (tls / "certs").mkdir(parents=True)
    (tls / "private").mkdir()
    stock = stock_certificate()
    write_file(tls / "certs/localhost.crt", stock.pem)
    write_file(tls / "private/localhost.key", stock.key_pem(), mode=0o600)
    conf = site.apache.conf_path.read_text()
    live = site.cert_dir
    conf = conf.replace(
        f"SSLCertificateFile {live}/cert.pem", f"SSLCertificateFile {tls}/certs/localhost.crt"
    )
    conf = conf.replace(
        f"SSLCertificateKeyFile {live}/privkey.pem",
        f"SSLCertificateKeyFile {tls}/private/localhost.key",
    )
    conf = conf.replace(f"  SSLCertificateChainFile {live}/chain.pem\n", "")
    write_file(site.apache.conf_path, conf)
    site.apache.start()
    assert site.served_der() == stock.der
    site.stock = stock  # type: ignore[attr-defined]
    site.tls = tls  # type: ignore[attr-defined]
    yield site


def test_first_install_creates_the_compat_links_and_serves_the_secret(
    stock_site: Site, pki: Pki
) -> None:
    tls: Path = stock_site.tls  # type: ignore[attr-defined]
    stock_site.cert_options = {
        "cert_file": str(tls / "certs/localhost.crt"),
        "key_file": str(tls / "private/localhost.key"),
    }
    leaf = pki.leaf()
    stock_site.create_secret(leaf)
    result = stock_site.certpull("sync")
    assert result.returncode == 0, result.stdout + result.stderr
    assert stock_site.served_der() == leaf.der
    for path, name in (
        (tls / "certs/localhost.crt", "cert.pem"),
        (tls / "private/localhost.key", "privkey.pem"),
    ):
        assert path.is_symlink()
        assert Path(os.readlink(path)) == stock_site.cert_dir / name
    assert (tls / "certs/localhost.crt.certpull-orig").read_text() == stock_site.stock.pem  # type: ignore[attr-defined]


def test_a_compat_link_that_cannot_be_made_fails_the_sync_and_shows_in_status(
    tmp_path: Path, local_aws: LocalAws, aws_proxy: AwsProxy, apache: ApacheFactory, pki: Pki
) -> None:
    site = Site(tmp_path, local_aws, aws_proxy, apache.new(), pki)
    missing = tmp_path / "no-such-dir" / "localhost.crt"
    site.cert_options = {"cert_file": str(missing)}
    site.create_secret(pki.leaf())
    result = site.certpull("sync")  # httpd is not running yet: the files are installed, no reload
    assert (site.cert_dir / "cert.pem").exists()
    assert result.returncode == 1, result.stdout + result.stderr
    assert str(missing) in result.stdout + result.stderr
    status = site.certpull("status", "--json")
    # A first install whose links fail is not installed: httpd's config points at the missing link,
    # so nothing of this secret can be served -- CRITICAL, naming the link.
    assert status.returncode == 2, status.stdout
    report = json.loads(status.stdout)
    assert any(str(missing) in problem for problem in report["certs"]["www"]["problems"])
