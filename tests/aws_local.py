"""A local AWS for tests and the demo: moto's HTTP server on 127.0.0.1, reached only through endpoint_url.

Everything goes through real boto3 clients over HTTP, as the agent and the rotation function do in
production. The few places where moto differs from AWS are handled here, in test code, and named:

- ACM PCA issues nothing until the CA has a certificate: ``create_private_ca`` does the whole
  ceremony (CSR -> self-issued root certificate -> import -> ACTIVE).
- Secrets Manager starts a rotation by staging AWSPENDING on a new, still empty version and then
  invoking the rotation function. moto only does that when ``RotationLambdaARN`` names a Lambda
  function it knows, so ``begin_rotation`` registers a do-nothing function (moto's Docker-free
  Lambda backend) and lets the test call the rotation steps itself.

Usable from pytest fixtures and from a plain script::

    with LocalAws() as aws:
        ca_arn = aws.create_private_ca()
        secret_arn = aws.put_certificate_secret("www-tls", {...})
"""

from __future__ import annotations

import importlib.metadata
import io
import json
import logging
import urllib.request
import uuid
import zipfile
from types import TracebackType
from typing import Any, Dict, List, Mapping, Optional, Tuple, Type

import boto3
from botocore.config import Config
from moto.server import ThreadedMotoServer

# moto 5.1 is the last for Python 3.9; a few tests need what only 5.2 emulates (named there).
MOTO_VERSION = tuple(int(part) for part in importlib.metadata.version("moto").split(".")[:2])

DEFAULT_REGION = "us-east-1"
ROOT_CA_TEMPLATE_ARN = "arn:aws:acm-pca:::template/RootCACertificate/V1"
_NOOP_FUNCTION = "certpull-tests-rotation-noop"
_NOOP_ROLE = "certpull-tests-rotation-noop"


class LocalAws:
    """moto's server on a free loopback port, and helpers that put it in the state a test needs."""

    def __init__(self, verbose: bool = False) -> None:
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=verbose)
        if not verbose:
            logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one access-log line per call
        self._endpoint_url: Optional[str] = None
        self._noop_function_arns: Dict[str, str] = {}
        self._helper_clients: Dict[Tuple[str, str], Any] = {}

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> LocalAws:
        self._server.start()
        host, port = self._server.get_host_and_port()
        self._endpoint_url = f"http://{host}:{port}"
        # Lambda functions registered here are never run: begin_rotation only needs moto to know them.
        self._post("/moto-api/config", {"lambda": {"use_docker": False}})
        return self

    def stop(self) -> None:
        if self._endpoint_url is not None:
            self._server.stop()
            self._endpoint_url = None

    def reset(self) -> None:
        """Forget every resource in every service (moto's state is per process, not per server)."""
        self._post("/moto-api/reset", {})
        self._noop_function_arns.clear()
        self._post("/moto-api/config", {"lambda": {"use_docker": False}})

    def __enter__(self) -> LocalAws:
        return self.start()

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.stop()

    @property
    def endpoint_url(self) -> str:
        if self._endpoint_url is None:
            raise RuntimeError("LocalAws is not started")
        return self._endpoint_url

    # -- clients ---------------------------------------------------------------------------------

    def client(self, service: str, region: str = DEFAULT_REGION) -> Any:
        """A real boto3 client for ``service`` at this server: dummy credentials, standard retries."""
        return boto3.session.Session(
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name=region,
        ).client(
            service,  # type: ignore[call-overload]
            endpoint_url=self.endpoint_url,
            config=Config(retries={"mode": "standard", "max_attempts": 3}),
        )

    # -- ACM Private CA --------------------------------------------------------------------------

    def create_private_ca(
        self,
        region: str = DEFAULT_REGION,
        common_name: str = "certpull demo root CA",
        key_algorithm: str = "EC_prime256v1",
    ) -> str:
        """Create a ROOT CA in ACM PCA and leave it ACTIVE; return its ARN.

        Steps, as on AWS:
        1. CreateCertificateAuthority (type ROOT) -> PENDING_CERTIFICATE.
        2. GetCertificateAuthorityCsr.
        3. IssueCertificate from the CA itself with the RootCACertificate/V1 template.
        4. GetCertificate, then ImportCertificateAuthorityCertificate -> ACTIVE.

        moto signs with an RSA-2048 key and SHA-512 whatever ``key_algorithm`` says; the value is
        still what DescribeCertificateAuthority reports, which is what the rotation function reads.
        """
        pca = self._helper_client("acm-pca", region)
        arn: str = pca.create_certificate_authority(  # (1)
            CertificateAuthorityConfiguration={
                "KeyAlgorithm": key_algorithm,
                "SigningAlgorithm": _signing_algorithm_for(key_algorithm),
                "Subject": {"CommonName": common_name, "Organization": "certpull tests"},
            },
            CertificateAuthorityType="ROOT",
        )["CertificateAuthorityArn"]
        csr = pca.get_certificate_authority_csr(CertificateAuthorityArn=arn)["Csr"]  # (2)
        cert_arn = pca.issue_certificate(  # (3)
            CertificateAuthorityArn=arn,
            Csr=csr.encode(),
            SigningAlgorithm=_signing_algorithm_for(key_algorithm),
            TemplateArn=ROOT_CA_TEMPLATE_ARN,
            Validity={"Type": "YEARS", "Value": 10},
        )["CertificateArn"]
        cert = pca.get_certificate(CertificateAuthorityArn=arn, CertificateArn=cert_arn)  # (4)
        pca.import_certificate_authority_certificate(
            CertificateAuthorityArn=arn, Certificate=cert["Certificate"].encode()
        )
        return arn

    # -- Secrets Manager -------------------------------------------------------------------------

    def put_certificate_secret(
        self, name: str, secret_dict: Mapping[str, object], region: str = DEFAULT_REGION
    ) -> str:
        """Create secret ``name`` holding ``secret_dict`` as JSON, or add a new AWSCURRENT version."""
        sm = self._helper_client("secretsmanager", region)
        body = json.dumps(dict(secret_dict))
        try:
            arn: str = sm.create_secret(Name=name, SecretString=body)["ARN"]
        except sm.exceptions.ResourceExistsException:
            arn = sm.put_secret_value(SecretId=name, SecretString=body)["ARN"]
        return arn

    def begin_rotation(
        self, secret_id: str, token: Optional[str] = None, region: str = DEFAULT_REGION
    ) -> str:
        """Do what Secrets Manager does before calling createSecret; return the ClientRequestToken.

        A new version id is staged AWSPENDING with no value yet, AWSCURRENT stays where it is, and
        rotation is enabled. The test then calls the rotation steps with this token.
        """
        token = token or str(uuid.uuid4())
        self._helper_client("secretsmanager", region).rotate_secret(
            SecretId=secret_id,
            ClientRequestToken=token,
            RotationLambdaARN=self._noop_function_arn(region),
            RotationRules={"AutomaticallyAfterDays": 30},
        )
        return token

    def version_stages(self, secret_id: str, region: str = DEFAULT_REGION) -> Dict[str, List[str]]:
        """VersionIdsToStages of the secret: which version carries AWSCURRENT, AWSPENDING, ..."""
        described = self._helper_client("secretsmanager", region).describe_secret(
            SecretId=secret_id
        )
        return dict(described.get("VersionIdsToStages", {}))

    # -- internals -------------------------------------------------------------------------------

    def _helper_client(self, service: str, region: str) -> Any:
        """The helpers' own clients, built once (a boto3 client costs about half a second to make);
        tests get fresh ones from ``client`` so that hooks they register stay theirs."""
        if (service, region) not in self._helper_clients:
            self._helper_clients[(service, region)] = self.client(service, region)
        return self._helper_clients[(service, region)]

    def _noop_function_arn(self, region: str) -> str:
        if region not in self._noop_function_arns:
            iam = self.client("iam", region)
            try:
                role_arn = iam.get_role(RoleName=_NOOP_ROLE)["Role"]["Arn"]
            except iam.exceptions.NoSuchEntityException:
                role_arn = iam.create_role(
                    RoleName=_NOOP_ROLE,
                    AssumeRolePolicyDocument=json.dumps(
                        {
                            "Version": "2012-10-17",
                            "Statement": [
                                {
                                    "Effect": "Allow",
                                    "Principal": {"Service": "lambda.amazonaws.com"},
                                    "Action": "sts:AssumeRole",
                                }
                            ],
                        }
                    ),
                )["Role"]["Arn"]
            self._noop_function_arns[region] = self.client("lambda", region).create_function(
                FunctionName=_NOOP_FUNCTION,
                Runtime="python3.12",
                Role=role_arn,
                Handler="noop.handler",
                Code={"ZipFile": _noop_zip()},
            )["FunctionArn"]
        return self._noop_function_arns[region]

    def _post(self, path: str, body: Mapping[str, object]) -> None:
        request = urllib.request.Request(  # noqa: S310 - our own loopback server
            self.endpoint_url + path,
            data=json.dumps(dict(body)).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            response.read()


def _signing_algorithm_for(key_algorithm: str) -> str:
    return "SHA256WITHECDSA" if key_algorithm.startswith("EC_") else "SHA256WITHRSA"


def _noop_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("noop.py", "def handler(event, context):\n    return None\n")
    return buffer.getvalue()


if __name__ == "__main__":  # a quick manual check: python -m tests.aws_local
    with LocalAws() as local:
        print("endpoint", local.endpoint_url)
        print("ca", local.create_private_ca())
