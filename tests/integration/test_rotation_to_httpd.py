"""Producer to consumer: the rotation function issues from ACM PCA, `certpull sync` installs, httpd serves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography import x509

from certpull.rotation.issuers import AwsIssuers
from certpull.rotation.steps import STEPS, Rotation
from tests.apache import ApacheFactory
from tests.aws_local import LocalAws
from tests.aws_proxy import AwsProxy
from tests.pki import Pki
from tests.site import Site

pytestmark = pytest.mark.integration


def rotate(aws: LocalAws, secret_arn: str) -> None:
    token = aws.begin_rotation(secret_arn)
    rotation = Rotation(aws.client("secretsmanager"), AwsIssuers(aws.client))
    for step in STEPS:
        rotation.run(secret_arn, token, step)


def served_matches_secret(site: Site, aws: LocalAws) -> bool:
    doc = json.loads(
        aws.client("secretsmanager").get_secret_value(
            SecretId=site.secret_arn, VersionStage="AWSCURRENT"
        )["SecretString"]
    )
    leaf = x509.load_pem_x509_certificate(doc["CERTIFICATE_PEM"].encode())
    from cryptography.hazmat.primitives.serialization import Encoding

    return site.served_der() == leaf.public_bytes(Encoding.DER)


@pytest.mark.parametrize(("key_algorithm", "key_size"), [("TYPE_EC", 256), ("TYPE_RSA", 2048)])
def test_rotation_function_output_is_installed_and_served(
    tmp_path: Path,
    local_aws: LocalAws,
    aws_proxy: AwsProxy,
    apache: ApacheFactory,
    pki: Pki,
    key_algorithm: str,
    key_size: int,
) -> None:
    ca_arn = local_aws.create_private_ca(common_name=f"producer-consumer {key_algorithm}")
    secret_arn = local_aws.put_certificate_secret(
        f"pc-{key_algorithm.lower()}-{tmp_path.name}",
        {
            "CERTIFICATE_TYPE": "ACM_PCA_ISSUED",
            "CA_ARN": ca_arn,
            "COMMON_NAME": "www.example.com",
            "SUBJECT_ALTERNATIVE_NAMES": ["127.0.0.1"],
            "TEMPLATE_ARN": "arn:aws:acm-pca:::template/EndEntityCertificate/V1",
            "KEY_ALGORITHM": key_algorithm,
            "KEY_SIZE": key_size,
            "SIGNING_HASH": "sha256",
            "SIGNING_ALGORITHM": "SHA256WITHECDSA",
        },
    )
    rotate(local_aws, secret_arn)
    site = Site(tmp_path, local_aws, aws_proxy, apache.new(), pki, secret_arn=secret_arn)
    site.write_config()
    done = site.certpull("sync")
    assert done.returncode == 0, done.stdout + done.stderr
    site.apache.start()
    assert served_matches_secret(site, local_aws)
    first = site.served_der()
    rotate(local_aws, secret_arn)
    done = site.certpull("sync")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "installed version" in done.stdout
    assert site.served_der() != first
    assert served_matches_secret(site, local_aws)
