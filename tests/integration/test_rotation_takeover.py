"""Secrets filled by the AWS sample's rotation function, then taken over by certpull's, against moto.

The sample's side is ``tests/sample_lambda.py`` (its behaviour re-implemented, step by step, from
``sm_rotate_secrets.py``). First the fixture is held to the format the sample really stores; then
certpull's rotation function rotates such a secret in place: the settings stay byte for byte, the
new leaf carries a subjectAltName, and ``certpull sync`` installs and serves it.

moto gaps, handled in test code: RotateSecret is refused while AWSPENDING still sits on the
AWSCURRENT version (the sample's finishSecret leaves it; AWS clears it itself), see
``SampleLambda.rotate``; ACM PCA ignores SigningAlgorithm and Validity (always SHA-512, 365 days)
and signs with an RSA key whatever the CA's KeyAlgorithm says.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from certpull.bundle import validate
from certpull.config import BundlePolicy
from certpull.errors import ConfigError
from certpull.rotation.issuers import AwsIssuers
from certpull.rotation.steps import STEPS, Rotation
from tests.apache import ApacheFactory
from tests.aws_local import LocalAws
from tests.aws_proxy import AwsProxy, Fault
from tests.pki import Pki
from tests.sample_lambda import CreateResult, SampleLambda, sample_settings, settings_of
from tests.site import Site

pytestmark = pytest.mark.integration

CN = "www.example.com"


@pytest.fixture(scope="module")
def rsa_ca(local_aws: LocalAws) -> str:
    return local_aws.create_private_ca(
        common_name="sample takeover RSA root", key_algorithm="RSA_2048"
    )


@pytest.fixture(scope="module")
def ec_ca(local_aws: LocalAws) -> str:
    return local_aws.create_private_ca(
        common_name="sample takeover EC root", key_algorithm="EC_prime256v1"
    )


@pytest.fixture
def proxied(local_aws: LocalAws, aws_proxy: AwsProxy) -> Iterator[AwsProxy]:
    """The counting, fault-injecting proxy, with counts starting at zero."""
    aws_proxy.reset_counts()
    yield aws_proxy


@functools.cache
def client(aws: LocalAws, service: str, region: str = "us-east-1") -> Any:
    """One client per service: building a boto3 client costs about half a second."""
    return aws.client(service, region)


def via(proxy: AwsProxy, service: str) -> Any:
    import boto3

    return boto3.session.Session(region_name="us-east-1").client(
        service,  # type: ignore[call-overload]
        endpoint_url=proxy.endpoint_url,
        config=Config(retries={"mode": "standard", "max_attempts": 1}),
    )


def new_secret(aws: LocalAws, doc: Dict[str, object]) -> str:
    return aws.put_certificate_secret(f"sample-{uuid.uuid4().hex[:10]}", doc)


def current(aws: LocalAws, secret: str) -> Dict[str, Any]:
    got = client(aws, "secretsmanager").get_secret_value(SecretId=secret, VersionStage="AWSCURRENT")
    doc: Dict[str, Any] = json.loads(got["SecretString"])
    return doc


def current_version(aws: LocalAws, secret: str) -> str:
    return next(v for v, s in aws.version_stages(secret).items() if "AWSCURRENT" in s)


def has_value(aws: LocalAws, secret: str, version: str) -> bool:
    try:
        client(aws, "secretsmanager").get_secret_value(SecretId=secret, VersionId=version)
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == "ResourceNotFoundException"
        return False
    return True


def sample_rotate(aws: LocalAws, secret: str, pca_client: Optional[Any] = None) -> CreateResult:
    lam = SampleLambda(client(aws, "secretsmanager"), pca_client or client(aws, "acm-pca"))
    return lam.rotate(secret, aws.begin_rotation(secret))


def certpull_rotate(aws: LocalAws, secret: str, issuers_factory: Optional[Any] = None) -> str:
    token = aws.begin_rotation(secret)
    rotation = Rotation(
        client(aws, "secretsmanager"), AwsIssuers(issuers_factory or functools.partial(client, aws))
    )
    for step in STEPS:
        rotation.run(secret, token, step)
    return token


def leaf(doc: Dict[str, Any]) -> x509.Certificate:
    return x509.load_pem_x509_certificate(doc["CERTIFICATE_PEM"].encode())


def has_san(cert: x509.Certificate) -> bool:
    try:
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return False
    return True


# --- the fixture stores what the sample stores -----------------------------------------------


def test_sample_first_rotation_stores_a_cn_only_leaf_exactly_as_acm_pca_returns_it(
    local_aws: LocalAws, rsa_ca: str
) -> None:
    secret = new_secret(local_aws, sample_settings(rsa_ca, CN))
    result = sample_rotate(local_aws, secret)
    assert result.swallowed is None
    doc = current(local_aws, secret)

    cert = leaf(doc)
    assert cert.subject.rfc4514_string() == f"CN={CN}"
    assert not has_san(cert)
    got = client(local_aws, "acm-pca").get_certificate(
        CertificateAuthorityArn=rsa_ca, CertificateArn=doc["CERTIFICATE_ARN"]
    )
    assert doc["CERTIFICATE_PEM"] == got["Certificate"]  # byte for byte
    assert doc["CERTIFICATE_CHAIN_PEM"] == got["CertificateChain"]
    for field in ("CERTIFICATE_PEM", "CERTIFICATE_CHAIN_PEM"):
        assert not doc[field].endswith("\n") and "\r" not in doc[field]
    chain = x509.load_pem_x509_certificates(doc["CERTIFICATE_CHAIN_PEM"].encode())
    assert chain[-1].subject == chain[-1].issuer  # up to and including the root
    assert doc["PRIVATE_KEY_PEM"].startswith("-----BEGIN PRIVATE KEY-----\n")  # PKCS#8, clear
    assert settings_of(doc) == sample_settings(rsa_ca, CN)


def test_sample_renewal_keeps_the_key_and_a_failed_one_stores_the_old_certificate_again(
    local_aws: LocalAws, rsa_ca: str, proxied: AwsProxy
) -> None:
    secret = new_secret(local_aws, sample_settings(rsa_ca, CN))
    sample_rotate(local_aws, secret)
    first = current(local_aws, secret)
    sample_rotate(local_aws, secret)
    second = current(local_aws, secret)
    assert second["PRIVATE_KEY_PEM"] == first["PRIVATE_KEY_PEM"]
    assert second["CERTIFICATE_PEM"] != first["CERTIFICATE_PEM"]

    second_version = current_version(local_aws, secret)
    proxied.inject(Fault(operation="IssueCertificate", status=400, code="RequestFailedException"))
    result = sample_rotate(local_aws, secret, via(proxied, "acm-pca"))
    assert result.swallowed is not None and "RequestFailedException" in result.swallowed
    assert current_version(local_aws, secret) != second_version  # a "successful" rotation...
    assert current(local_aws, secret) == second  # ...that stored the old certificate again


def test_sample_first_rotation_of_an_ec_secret_stores_no_certificate_fields(
    local_aws: LocalAws, rsa_ca: str
) -> None:
    settings = sample_settings(
        rsa_ca, CN, key_algorithm="TYPE_EC", key_size=256, ec_curve="SECP256R1"
    )
    secret = new_secret(local_aws, settings)
    result = sample_rotate(local_aws, secret)
    assert result.swallowed == "TypeError: Algorithm must be a registered hash algorithm."
    assert current(local_aws, secret) == settings  # rotated "successfully", to the bare settings


# --- certpull's rotation function takes over ---------------------------------------------------

# Every key setting and every SIGNING_ALGORITHM x SIGNING_HASH pair at least once; the full cross
# product runs in tests/unit/test_rotation_sample_table.py.
TAKEOVER = [
    ("rsa-2048/RSA/sha256", {"key_algorithm": "TYPE_RSA", "key_size": 2048}, "RSA", "sha256"),
    ("rsa-4096/ECDSA/sha384", {"key_algorithm": "TYPE_RSA", "key_size": 4096}, "ECDSA", "sha384"),
    (
        "ec-p256/RSA/sha512",
        {"key_algorithm": "TYPE_EC", "key_size": 256, "ec_curve": "SECP256R1"},
        "RSA",
        "sha512",
    ),
    (
        "ec-p384/ECDSA/sha256",
        {"key_algorithm": "TYPE_EC", "key_size": 2048, "ec_curve": "SECP384R1"},
        "ECDSA",
        "sha256",
    ),
    (
        "ec-p521/ECDSA/sha512",
        {"key_algorithm": "TYPE_EC", "key_size": 521, "ec_curve": "SECP521R1"},
        "ECDSA",
        "sha512",
    ),
    ("rsa-2048/RSA/sha384", {"key_algorithm": "TYPE_RSA", "key_size": 2048}, "RSA", "sha384"),
]


@pytest.mark.parametrize(
    ("key_settings", "family", "signing_hash"),
    [case[1:] for case in TAKEOVER],
    ids=[case[0] for case in TAKEOVER],
)
def test_certpull_rotation_takes_over_a_sample_secret_in_place(
    local_aws: LocalAws,
    rsa_ca: str,
    ec_ca: str,
    key_settings: Dict[str, object],
    family: str,
    signing_hash: str,
) -> None:
    ca_arn = rsa_ca if family == "RSA" else ec_ca
    settings = sample_settings(
        ca_arn, CN, signing_algorithm=family, signing_hash=signing_hash, **key_settings
    )
    secret = new_secret(local_aws, settings)
    sample_rotate(local_aws, secret)  # RSA: a CN-only leaf; EC: the bare settings (see above)
    before = current(local_aws, secret)

    token = certpull_rotate(local_aws, secret)

    assert local_aws.version_stages(secret)[token] == ["AWSCURRENT"]
    after = current(local_aws, secret)
    assert settings_of(after) == settings_of(before) == settings  # carried forward unchanged
    cert = leaf(after)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [CN]
    key = cert.public_key()
    if key_settings["key_algorithm"] == "TYPE_RSA":
        assert isinstance(key, rsa.RSAPublicKey) and key.key_size == key_settings["key_size"]
    else:
        assert isinstance(key, ec.EllipticCurvePublicKey)
        assert key.curve.name == str(key_settings["ec_curve"]).lower()
    if "PRIVATE_KEY_PEM" in before:
        assert after["PRIVATE_KEY_PEM"] != before["PRIVATE_KEY_PEM"]  # a new key (no REUSE_KEY)
    assert after["CERTIFICATE_ARN"].startswith(ca_arn + "/certificate/")
    validate(json.dumps(after), BundlePolicy(server_name=CN), dt.datetime.now(dt.timezone.utc))

    certpull_rotate(local_aws, secret)  # and again: certpull's own output rotates too
    assert settings_of(current(local_aws, secret)) == settings


@pytest.mark.parametrize(
    ("key_settings", "family", "bad_key"),
    [
        ({"key_algorithm": "TYPE_DSA", "key_size": 2048}, "RSA", "KEY_ALGORITHM"),
        ({"key_algorithm": "TYPE_RSA", "key_size": 1024}, "RSA", "KEY_SIZE"),
        ({"key_algorithm": "TYPE_RSA", "key_size": 2048}, "ECDSA", "SIGNING_ALGORITHM"),
    ],
    ids=["dsa", "rsa-1024", "ecdsa-family-on-an-rsa-ca"],
)
def test_takeover_refuses_what_acm_pca_would_refuse_naming_the_key(
    local_aws: LocalAws,
    rsa_ca: str,
    proxied: AwsProxy,
    key_settings: Dict[str, object],
    family: str,
    bad_key: str,
) -> None:
    secret = new_secret(
        local_aws, sample_settings(rsa_ca, CN, signing_algorithm=family, **key_settings)
    )
    before = current(local_aws, secret)
    token = local_aws.begin_rotation(secret)
    rotation = Rotation(
        client(local_aws, "secretsmanager"), AwsIssuers(lambda service, _: via(proxied, service))
    )

    with pytest.raises(ConfigError) as caught:
        rotation.run(secret, token, "createSecret")

    assert str(caught.value).startswith(f"{bad_key}: ")
    assert "\n" not in str(caught.value)
    assert proxied.count("IssueCertificate") == 0
    assert current(local_aws, secret) == before
    assert not has_value(local_aws, secret, token)  # nothing was written


def test_host_fed_by_the_sample_is_served_after_the_takeover(
    tmp_path: Path,
    local_aws: LocalAws,
    rsa_ca: str,
    aws_proxy: AwsProxy,
    apache: ApacheFactory,
    pki: Pki,
) -> None:
    """The agent serves the sample's CN-only leaf (allow_cn_only, the default), refuses it when
    told to (nothing touched), and the first rotation by certpull's function replaces it."""
    secret = new_secret(local_aws, sample_settings(rsa_ca, CN))
    sample_rotate(local_aws, secret)
    strict = Site(tmp_path / "strict", local_aws, aws_proxy, apache.new(), pki, secret_arn=secret)
    strict.root.mkdir()
    strict.cert_options["allow_cn_only"] = "no"
    strict.write_config()
    refused = strict.certpull("sync")
    assert refused.returncode == 1
    assert (
        "in its CN only, without a subjectAltName, and allow_cn_only = no"
        in refused.stdout + refused.stderr
    )
    assert not (strict.cert_dir / "cert.pem").exists()

    site = Site(tmp_path, local_aws, aws_proxy, apache.new(), pki, secret_arn=secret)
    site.write_config()
    first = site.certpull("sync")
    assert first.returncode == 0, first.stdout + first.stderr
    site.apache.start()
    assert site.served_der() == leaf(current(local_aws, secret)).public_bytes(Encoding.DER)
    assert not has_san(leaf(current(local_aws, secret)))

    certpull_rotate(local_aws, secret)
    done = site.certpull("sync")

    assert done.returncode == 0, done.stdout + done.stderr
    assert site.served_der() == leaf(current(local_aws, secret)).public_bytes(Encoding.DER)
    assert has_san(leaf(current(local_aws, secret)))


def test_a_host_fed_by_the_sample_lives_through_its_renewals_and_failures(
    tmp_path: Path,
    local_aws: LocalAws,
    rsa_ca: str,
    proxied: AwsProxy,
    apache: ApacheFactory,
    pki: Pki,
) -> None:
    """What the sample stores over a secret's life, as one host sees it: its CN-only leaf is served
    with a WARNING; a renewal with the same key is installed; a failed rotation that stored the old
    bytes again is no change; a version with no certificate fields is one clear line, and the
    installed certificate stays served."""
    secret = new_secret(local_aws, sample_settings(rsa_ca, CN))
    sample_rotate(local_aws, secret)
    site = Site(tmp_path, local_aws, proxied, apache.new(), pki, secret_arn=secret)
    site.cert_options["server_name"] = CN
    site.write_config()
    assert site.certpull("sync").returncode == 0
    site.apache.start()
    assert site.certpull("verify").returncode == 0  # a handshake proves it served
    status = site.certpull("status", "--json")
    assert status.returncode == 1, status.stdout  # WARNING: served, but CN-only
    assert (
        json.loads(status.stdout)["certs"]["www"]["served"] == "matches the installed certificate"
    )

    sample_rotate(local_aws, secret)  # a renewal: a new CN-only leaf, the same key
    renewed = current(local_aws, secret)
    done = site.certpull("sync")
    assert done.returncode == 0, done.stdout + done.stderr
    assert site.served_der() == leaf(renewed).public_bytes(Encoding.DER)

    proxied.inject(Fault(operation="IssueCertificate", status=400, code="RequestFailedException"))
    sample_rotate(local_aws, secret, via(proxied, "acm-pca"))  # the old bytes, a new version
    again = site.certpull("sync")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "carries the installed certificate; nothing to do" in again.stdout + again.stderr

    client(local_aws, "secretsmanager").put_secret_value(
        SecretId=secret,
        SecretString=json.dumps(settings_of(renewed)),  # no certificate fields
    )
    broken = site.certpull("sync")
    assert broken.returncode == 1
    lines = [ln for ln in (broken.stdout + broken.stderr).splitlines() if "CERTIFICATE_PEM" in ln]
    assert lines and all("www" in ln for ln in lines), broken.stdout + broken.stderr
    assert "Traceback" not in broken.stderr
    assert site.served_der() == leaf(renewed).public_bytes(Encoding.DER)
