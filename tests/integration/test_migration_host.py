"""docs/migration.md on one host: from the sample's Run Command document to certpull, ssl.conf unmodified.

A real httpd reads ``localhost.crt`` and ``localhost.key`` and no chain file, as Amazon Linux's
ssl.conf does; the files are first written the way the sample's document writes them (``jq -r``
output in place under umask 0022, the chain appended to the CA bundle). certpull is then configured
with the guide's own ``[cert:www]`` block (paths moved under a temporary root) and installs over
the same paths through its compat links.

certpull first installs and serves what the sample stored (a CN-only leaf, reported as a WARNING),
then the guide's step 3 moves the secret to certpull's rotation function and the next sync serves
a leaf with a subjectAltName (status OK).
"""

from __future__ import annotations

import configparser
import json
import os
import re
import stat
import subprocess
from pathlib import Path
from typing import Dict

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from certpull.rotation.issuers import AwsIssuers
from certpull.rotation.steps import STEPS, Rotation
from tests.apache import ApacheFactory
from tests.aws_local import LocalAws
from tests.aws_proxy import AwsProxy
from tests.pki import Pki
from tests.sample_lambda import SampleLambda, sample_settings
from tests.site import Site

pytestmark = pytest.mark.integration

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "migration.md"
CN = "www.example.com"


def guide_host_config() -> configparser.ConfigParser:
    block = re.search(
        r"<!-- migration-test: host-config -->\n```ini\n(.*?)^```", GUIDE.read_text(), re.M | re.S
    )
    assert block, "docs/migration.md has no host-config block"
    parser = configparser.ConfigParser(inline_comment_prefixes=(";",))
    parser.read_string(block.group(1))
    return parser


def run_document(secret_string: str, root: Path) -> None:
    """What one run of RunUpdateTLS does to the host's files (as root, umask 0022)."""
    script = (
        "umask 0022\n"
        'jq -r .CERTIFICATE_PEM <<<"$SECRET" > "$ROOT/etc/pki/tls/certs/localhost.crt"\n'
        'jq -r .PRIVATE_KEY_PEM <<<"$SECRET" > "$ROOT/etc/pki/tls/private/localhost.key"\n'
        'jq -r .CERTIFICATE_CHAIN_PEM <<<"$SECRET" >> "$ROOT/etc/pki/tls/certs/ca-bundle.crt"\n'
    )
    subprocess.run(
        ["bash", "-c", script],
        env=dict(os.environ, SECRET=secret_string, ROOT=str(root)),
        check=True,
        timeout=30,
    )


def current_string(aws: LocalAws, secret_arn: str) -> str:
    got = aws.client("secretsmanager").get_secret_value(
        SecretId=secret_arn, VersionStage="AWSCURRENT"
    )
    return str(got["SecretString"])


def served_chain_length(port: int) -> int:
    done = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", CN, "-showcerts"],
        input="",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return done.stdout.count("-----BEGIN CERTIFICATE-----")


def der(pem: str) -> bytes:
    return x509.load_pem_x509_certificate(pem.encode()).public_bytes(Encoding.DER)


def test_a_host_moves_from_the_document_to_certpull_with_ssl_conf_unmodified(
    tmp_path: Path, local_aws: LocalAws, aws_proxy: AwsProxy, apache: ApacheFactory, pki: Pki
) -> None:
    ca_arn = local_aws.create_private_ca(
        common_name="host migration root", key_algorithm="RSA_2048"
    )
    sm = local_aws.client("secretsmanager")
    secret_arn = sm.create_secret(
        Name=f"host-migration-{tmp_path.name}"[:60],
        SecretString=json.dumps(sample_settings(ca_arn, CN)),
    )["ARN"]
    SampleLambda(sm, local_aws.client("acm-pca")).rotate(
        secret_arn, local_aws.begin_rotation(secret_arn)
    )
    sample = json.loads(current_string(local_aws, secret_arn))

    # The host as the document leaves it.
    root = tmp_path / "host"
    certs, private = root / "etc/pki/tls/certs", root / "etc/pki/tls/private"
    certs.mkdir(parents=True)
    private.mkdir(parents=True)
    (certs / "ca-bundle.crt").write_text("# the system's CA certificates\n")
    for _ in range(3):  # every run appends the chain again
        run_document(current_string(local_aws, secret_arn), root)
    assert (certs / "ca-bundle.crt").read_text().count(sample["CERTIFICATE_CHAIN_PEM"]) == 3
    assert stat.S_IMODE((private / "localhost.key").stat().st_mode) == 0o644  # readable by all
    httpd = apache.new()
    httpd.use_files(certs / "localhost.crt", private / "localhost.key")  # ssl.conf, unmodified
    httpd.start()
    assert httpd.served_leaf_der() == der(sample["CERTIFICATE_PEM"])

    # The guide's step 2: certpull with the guide's [cert:www] block, paths under the test root.
    guide = guide_host_config()
    options: Dict[str, str] = {}
    for key, value in guide["cert:www"].items():
        if key in ("secret_arn", "verify"):
            continue  # this test's secret; this httpd's port (Site sets both)
        options[key] = value.replace("/etc/pki/tls", str(root / "etc/pki/tls"))
    assert options["server_name"] == CN
    site = Site(tmp_path / "site", local_aws, aws_proxy, httpd, pki, secret_arn=secret_arn)
    site.root.mkdir()
    site.cert_options.update(options)
    site.agent_options.update({k: v for k, v in guide["agent"].items() if v})
    site.write_config()
    for args in (("check-config",), ("sync", "--dry-run"), ("sync",)):
        done = site.certpull(*args)
        assert done.returncode == 0, f"certpull {' '.join(args)}:\n{done.stdout}{done.stderr}"

    # What the sample stored is served as it is, and status says why it is only a WARNING.
    assert httpd.served_leaf_der() == der(sample["CERTIFICATE_PEM"])
    status = site.certpull("status", "--json")
    assert status.returncode == 1, status.stdout
    problems = json.loads(status.stdout)["certs"]["www"]["problems"]
    assert any("in the CN only" in p and "Go, Chrome" in p for p in problems), problems

    # The guide's step 3: certpull's rotation function takes the secret over.
    token = local_aws.begin_rotation(secret_arn)
    rotation = Rotation(sm, AwsIssuers(local_aws.client))
    for step in STEPS:
        rotation.run(secret_arn, token, step)
    taken_over = json.loads(current_string(local_aws, secret_arn))
    done = site.certpull("sync")
    assert done.returncode == 0, done.stdout + done.stderr
    status = site.certpull("status", "--json")
    assert status.returncode == 0, status.stdout

    crt, key = certs / "localhost.crt", private / "localhost.key"
    assert crt.is_symlink() and key.is_symlink()
    assert Path(os.readlink(crt)) == site.cert_dir / "fullchain.pem"
    assert Path(os.readlink(key)) == site.cert_dir / "privkey.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert httpd.served_leaf_der() == der(taken_over["CERTIFICATE_PEM"])
    assert (
        served_chain_length(httpd.port) == 2
    )  # leaf and its issuer: the sample sent the leaf only

    # What the guide's clean-up is for: the replaced files are kept, with the document's modes.
    kept_key = private / "localhost.key.certpull-orig"
    assert kept_key.read_text() == sample["PRIVATE_KEY_PEM"] + "\n"
    assert stat.S_IMODE(kept_key.stat().st_mode) == 0o600  # certpull restricted it first
    assert (certs / "localhost.crt.certpull-orig").read_text() == sample["CERTIFICATE_PEM"] + "\n"

    # Why the guide retires the document first: its '>' writes through certpull's links.
    installed = (site.cert_dir / "fullchain.pem").read_text()
    run_document(json.dumps(sample), root)
    assert (site.cert_dir / "fullchain.pem").read_text() != installed
    assert (site.cert_dir / "fullchain.pem").read_text() == sample["CERTIFICATE_PEM"] + "\n"
