"""The rotation function against moto's server: a real ACM PCA CA, real CSRs, real Secrets Manager
staging labels, all over HTTP.

moto gaps handled here, never in the function (see tests/aws_local.py for the rest):
- Secrets Manager's "start of rotation" (AWSPENDING staged on an empty version) comes from
  ``LocalAws.begin_rotation``; the test calls the four steps itself, as Secrets Manager would.
- ACM private certificates from moto are signed by their own key, not by the fixed Amazon root
  moto returns as their chain (nor by CA_ARN), so testSecret rightly refuses them; the ACM test
  checks what createSecret stored instead, and that testSecret does refuse it.
- ACM RenewCertificate is not implemented by moto: the ENVIRONMENT=TEST path runs against
  botocore's Stubber (the last test).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any, Callable, Dict, List, Mapping, Optional

import botocore.session
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from certpull.bundle import validate
from certpull.config import BundlePolicy
from certpull.errors import BundleError, ConfigError
from certpull.rotation.errors import IssuingError, RotationError
from certpull.rotation.handler import lambda_handler
from certpull.rotation.issuers import AcmIssuer, AwsIssuers
from certpull.rotation.settings import AcmSettings
from certpull.rotation.steps import Rotation
from tests.aws_local import LocalAws
from tests.pki import make_ca, make_leaf

pytestmark = pytest.mark.integration

END_ENTITY = "arn:aws:acm-pca:::template/EndEntityCertificate/V1"
STEPS = ("createSecret", "setSecret", "testSecret", "finishSecret")


class Calls:
    """Counts AWS operations made through clients it built (botocore's event hooks, no patching)."""

    def __init__(self, aws: LocalAws) -> None:
        self.aws = aws
        self.made: List[str] = []

    def factory(self) -> Callable[[str, str], Any]:
        def make(service: str, region: str) -> Any:
            client = self.aws.client(service, region)
            client.meta.events.register("before-call.*.*", self._record)
            return client

        return make

    def _record(self, model: Any, **_: Any) -> None:
        self.made.append(model.name)

    def count(self, operation: str) -> int:
        return self.made.count(operation)


@pytest.fixture(scope="module")
def ec_ca(local_aws: LocalAws) -> str:
    return local_aws.create_private_ca(common_name="rotation tests EC root")


@pytest.fixture(scope="module")
def rsa_ca(local_aws: LocalAws) -> str:
    return local_aws.create_private_ca(
        common_name="rotation tests RSA root", key_algorithm="RSA_2048"
    )


def pca_settings(ca_arn: str, **overrides: object) -> Dict[str, object]:
    """A secret as the original function's users wrote it (settings only, no certificate yet)."""
    doc: Dict[str, object] = {
        "CERTIFICATE_TYPE": "ACM_PCA_ISSUED",
        "CA_ARN": ca_arn,
        "COMMON_NAME": "www.example.com",
        "TEMPLATE_ARN": END_ENTITY,
        "KEY_ALGORITHM": "TYPE_RSA",
        "KEY_SIZE": 2048,
        "SIGNING_HASH": "sha256",
        "SIGNING_ALGORITHM": "SHA256WITHECDSA",
    }
    doc.update(overrides)
    return {k: v for k, v in doc.items() if v is not None}


def new_secret(aws: LocalAws, doc: Mapping[str, object]) -> str:
    return aws.put_certificate_secret(f"rotation-{uuid.uuid4().hex[:10]}", doc)


def value(aws: LocalAws, secret: str, stage: str = "AWSCURRENT", version: str = "") -> Any:
    kwargs = {"SecretId": secret, "VersionStage": stage}
    if version:
        kwargs["VersionId"] = version
    return aws.client("secretsmanager").get_secret_value(**kwargs)


def has_value(aws: LocalAws, secret: str, version: str) -> bool:
    try:
        value(aws, secret, "AWSPENDING", version)
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == "ResourceNotFoundException"
        return False
    return True


def current_version(aws: LocalAws, secret: str) -> str:
    return next(v for v, s in aws.version_stages(secret).items() if "AWSCURRENT" in s)


def rotation(aws: LocalAws, calls: Optional[Calls] = None) -> Rotation:
    factory = calls.factory() if calls else aws.client
    return Rotation(aws.client("secretsmanager"), AwsIssuers(factory))


def rotate(aws: LocalAws, secret: str, steps: Any = STEPS, calls: Optional[Calls] = None) -> str:
    token = aws.begin_rotation(secret)
    for step in steps:
        rotation(aws, calls).run(secret, token, step)
    return token


def leaf(doc: Dict[str, Any]) -> x509.Certificate:
    return x509.load_pem_x509_certificate(doc["CERTIFICATE_PEM"].encode())


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@pytest.mark.parametrize(
    ("key_settings", "key_type"),
    [
        ({"KEY_ALGORITHM": "TYPE_RSA", "KEY_SIZE": 2048}, rsa.RSAPublicKey),
        ({"KEY_ALGORITHM": "TYPE_EC", "KEY_SIZE": 256}, ec.EllipticCurvePublicKey),
    ],
    ids=["rsa-2048", "ec-p256"],
)
def test_four_steps_issue_validate_and_promote_each_step_rerun(
    local_aws: LocalAws, ec_ca: str, key_settings: Dict[str, object], key_type: type
) -> None:
    sans = ["api.example.com", "127.0.0.1"]
    secret = new_secret(
        local_aws, pca_settings(ec_ca, SUBJECT_ALTERNATIVE_NAMES=sans, **key_settings)
    )
    first_version = current_version(local_aws, secret)
    token = local_aws.begin_rotation(secret)
    steps = rotation(local_aws)

    steps.run(secret, token, "createSecret")
    pending = value(local_aws, secret, "AWSPENDING", token)
    steps.run(secret, token, "createSecret")  # re-run: the pending value is reused, not re-issued
    assert value(local_aws, secret, "AWSPENDING", token)["SecretString"] == pending["SecretString"]
    assert current_version(local_aws, secret) == first_version
    for step in (
        "setSecret",
        "setSecret",
        "testSecret",
        "testSecret",
        "finishSecret",
        "finishSecret",
    ):
        steps.run(secret, token, step)

    assert local_aws.version_stages(secret)[token] == ["AWSCURRENT"]
    assert local_aws.version_stages(secret)[first_version] == ["AWSPREVIOUS"]
    doc = json.loads(value(local_aws, secret)["SecretString"])
    assert doc["CERTIFICATE_ARN"].startswith(ec_ca + "/certificate/")
    assert doc["KEY_ALGORITHM"] == key_settings["KEY_ALGORITHM"]  # settings carried forward
    assert doc["PRIVATE_KEY_PEM"].startswith("-----BEGIN PRIVATE KEY-----")  # PKCS#8
    cert = leaf(doc)
    assert isinstance(cert.public_key(), key_type)
    assert cert.subject.rfc4514_string() == "CN=www.example.com"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(n.value) for n in san] == ["www.example.com", "api.example.com", "127.0.0.1"]
    ca_pem = local_aws.client("acm-pca").get_certificate_authority_certificate(
        CertificateAuthorityArn=ec_ca
    )["Certificate"]
    assert doc["CERTIFICATE_CHAIN_PEM"].strip() == ca_pem.strip()
    bundle = validate(json.dumps(doc), BundlePolicy(server_name="127.0.0.1"), now())
    assert bundle.certificate_arn == doc["CERTIFICATE_ARN"]


def test_every_rotation_makes_a_new_key_unless_reuse_is_asked(
    local_aws: LocalAws, ec_ca: str
) -> None:
    secret = new_secret(local_aws, pca_settings(ec_ca, KEY_ALGORITHM="TYPE_EC", KEY_SIZE=256))
    rotate(local_aws, secret)
    first = json.loads(value(local_aws, secret)["SecretString"])
    rotate(local_aws, secret)
    second = json.loads(value(local_aws, secret)["SecretString"])
    assert second["PRIVATE_KEY_PEM"] != first["PRIVATE_KEY_PEM"]
    assert second["CERTIFICATE_ARN"] != first["CERTIFICATE_ARN"]

    reusing = dict(second, REUSE_KEY=True)
    local_aws.put_certificate_secret(secret, reusing)
    rotate(local_aws, secret)
    third = json.loads(value(local_aws, secret)["SecretString"])
    assert third["PRIVATE_KEY_PEM"] == second["PRIVATE_KEY_PEM"]
    assert third["CERTIFICATE_PEM"] != second["CERTIFICATE_PEM"]


def test_handler_runs_the_steps_with_clients_from_the_environment(
    local_aws: LocalAws, ec_ca: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", local_aws.endpoint_url)
    secret = new_secret(
        local_aws, pca_settings(ec_ca, KEY_ALGORITHM="TYPE_EC", EC_CURVE="P-384", KEY_SIZE=None)
    )
    token = local_aws.begin_rotation(secret)
    for step in STEPS:
        lambda_handler({"SecretId": secret, "ClientRequestToken": token, "Step": step}, None)
    key = leaf(json.loads(value(local_aws, secret)["SecretString"])).public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert key.curve.name == "secp384r1"


@pytest.mark.parametrize("broken_ca", ["missing", "disabled"])
def test_issuing_failure_raises_and_awscurrent_stays(
    local_aws: LocalAws, ec_ca: str, broken_ca: str
) -> None:
    if broken_ca == "missing":
        ca_arn = ec_ca.rsplit("/", 1)[0] + "/" + str(uuid.uuid4())
    else:
        ca_arn = local_aws.create_private_ca(common_name="disabled CA")
        local_aws.client("acm-pca").update_certificate_authority(
            CertificateAuthorityArn=ca_arn, Status="DISABLED"
        )
    secret = new_secret(local_aws, pca_settings(ca_arn))
    before = value(local_aws, secret)
    token = local_aws.begin_rotation(secret)
    calls = Calls(local_aws)

    with pytest.raises(IssuingError) as caught:
        rotation(local_aws, calls).run(secret, token, "createSecret")

    assert "CA" in str(caught.value) or "DescribeCertificateAuthority" in str(caught.value)
    assert calls.count("IssueCertificate") == 0
    assert current_version(local_aws, secret) == before["VersionId"]
    assert value(local_aws, secret)["SecretString"] == before["SecretString"]
    assert not has_value(local_aws, secret, token)  # nothing was written


@pytest.mark.parametrize(
    ("overrides", "bad_key", "ca"),
    [
        ({"KEY_ALGORITHM": "TYPE_DSA"}, "KEY_ALGORITHM", "ec"),
        ({"KEY_SIZE": 1024}, "KEY_SIZE", "ec"),
        ({"KEY_ALGORITHM": "TYPE_EC", "KEY_SIZE": 255}, "KEY_SIZE", "ec"),
        ({"EC_CURVE": "secp256k1", "KEY_ALGORITHM": "TYPE_EC"}, "EC_CURVE", "ec"),
        ({"SIGNING_ALGORITHM": "SHA256WITHECDSA"}, "SIGNING_ALGORITHM", "rsa"),
        ({"SIGNING_ALGORITHM": "SHA1WITHRSA"}, "SIGNING_ALGORITHM", "rsa"),
        (
            {"TEMPLATE_ARN": "arn:aws:acm-pca:::template/SubordinateCACertificate_PathLen0/V1"},
            "TEMPLATE_ARN",
            "ec",
        ),
        ({"CERTIFICATE_TYPE": "SELF_SIGNED"}, "CERTIFICATE_TYPE", "ec"),
    ],
    ids=[
        "dsa",
        "rsa-1024",
        "ec-255",
        "secp256k1",
        "ecdsa-on-rsa-ca",
        "sha1",
        "ca-template",
        "type",
    ],
)
def test_unsupported_settings_are_rejected_before_anything_is_issued(
    local_aws: LocalAws,
    ec_ca: str,
    rsa_ca: str,
    overrides: Dict[str, object],
    bad_key: str,
    ca: str,
) -> None:
    secret = new_secret(local_aws, pca_settings(ec_ca if ca == "ec" else rsa_ca, **overrides))
    before = value(local_aws, secret)
    token = local_aws.begin_rotation(secret)
    calls = Calls(local_aws)

    with pytest.raises(ConfigError) as caught:
        rotation(local_aws, calls).run(secret, token, "createSecret")

    assert str(caught.value).startswith(f"{bad_key}: ")
    assert calls.count("IssueCertificate") == 0
    assert current_version(local_aws, secret) == before["VersionId"]


def test_acm_private_certificate_is_requested_once_and_exported(
    local_aws: LocalAws, ec_ca: str
) -> None:
    settings = {
        "CERTIFICATE_TYPE": "ACM_ISSUED",
        "CA_ARN": ec_ca,
        "COMMON_NAME": f"acm-{uuid.uuid4().hex[:8]}.example.com",
        "ENVIRONMENT": "PROD",
    }
    secret = new_secret(local_aws, settings)
    calls = Calls(local_aws)
    steps = ("createSecret", "setSecret", "finishSecret")  # testSecret: see the module docstring

    token = rotate(local_aws, secret, steps, calls)
    first = json.loads(value(local_aws, secret)["SecretString"])
    assert local_aws.version_stages(secret)[token] == ["AWSCURRENT"]
    assert calls.count("RequestCertificate") == 1
    assert calls.count("ExportCertificate") == 1
    key = serialization.load_pem_private_key(first["PRIVATE_KEY_PEM"].encode(), password=None)
    assert first["PRIVATE_KEY_PEM"].startswith("-----BEGIN PRIVATE KEY-----")  # decrypted PKCS#8
    assert key.public_key() == leaf(first).public_key()
    assert ":acm:" in first["CERTIFICATE_ARN"]

    rotate(local_aws, secret, steps, calls)  # ACM renews on its own: export the same certificate
    second = json.loads(value(local_aws, secret)["SecretString"])
    assert calls.count("RequestCertificate") == 1
    assert second["CERTIFICATE_ARN"] == first["CERTIFICATE_ARN"]
    assert second["CERTIFICATE_PEM"] == first["CERTIFICATE_PEM"]

    token = local_aws.begin_rotation(secret)
    rotation(local_aws).run(secret, token, "createSecret")
    with pytest.raises(BundleError, match="does not verify"):  # moto: not signed by its chain
        rotation(local_aws).run(secret, token, "testSecret")


def test_staging_is_checked_before_any_step(local_aws: LocalAws, ec_ca: str) -> None:
    secret = new_secret(local_aws, pca_settings(ec_ca))
    token = local_aws.begin_rotation(secret)
    with pytest.raises(RotationError, match="no stage"):
        rotation(local_aws).run(secret, str(uuid.uuid4()), "createSecret")
    with pytest.raises(RotationError, match="unknown rotation step"):
        rotation(local_aws).run(secret, token, "deleteSecret")
    current = current_version(local_aws, secret)
    rotation(local_aws).run(secret, current, "createSecret")  # AWSCURRENT already: nothing to do
    assert not has_value(local_aws, secret, token)


def test_acm_test_environment_renews_then_exports() -> None:
    """moto has no RenewCertificate: this path runs against botocore's Stubber."""
    client = botocore.session.get_session().create_client(
        "acm", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    ca = "arn:aws:acm-pca:us-east-1:123456789012:certificate-authority/test"
    arn = "arn:aws:acm:us-east-1:123456789012:certificate/abc"
    issuer = make_ca()
    cert = make_leaf(issuer, names=("www.example.com",))
    passphrase = b"0123456789abcdef0123456789abcdef"
    described = {
        "CertificateArn": arn,
        "DomainName": "www.example.com",
        "SubjectAlternativeNames": ["www.example.com"],
        "CertificateAuthorityArn": ca,
        "Status": "ISSUED",
        "Serial": "01",
    }
    renewed = dict(described, Serial="02")
    with Stubber(client) as stub:
        stub.add_response(
            "describe_certificate", {"Certificate": described}, {"CertificateArn": arn}
        )
        stub.add_response(
            "describe_certificate", {"Certificate": described}, {"CertificateArn": arn}
        )
        stub.add_response("renew_certificate", {}, {"CertificateArn": arn})
        stub.add_response(
            "describe_certificate", {"Certificate": described}, {"CertificateArn": arn}
        )
        stub.add_response("describe_certificate", {"Certificate": renewed}, {"CertificateArn": arn})
        stub.add_response(
            "export_certificate",
            {
                "Certificate": cert.pem,
                "CertificateChain": issuer.pem,
                "PrivateKey": cert.key_pem(password=passphrase),
            },
            {"CertificateArn": arn, "Passphrase": passphrase},
        )
        sleeps: List[float] = []
        issued = AcmIssuer(client, sleep=sleeps.append, new_passphrase=lambda: passphrase).issue(
            AcmSettings(ca, "www.example.com", "TEST"), {"CERTIFICATE_ARN": arn}, "token"
        )
        stub.assert_no_pending_responses()
    assert sleeps == [1]
    assert issued.certificate_arn == arn
    assert issued.private_key_pem == cert.key_pem()
    assert "PRIVATE" not in repr(issued)
