"""`certpull doctor`'s AWS calls: each made once, read-only, its answer or failure kept whole.

Every call goes through the agent's own clients (aws.AwsClients: same endpoint, timeouts, retries
and assumed roles as `sync`), so the doctor sees what the agent would see and needs no permission
the agent does not have. A failure becomes a ``doctor_causes.AwsFailure`` here, in ``failure_of``;
what it means is decided by ``doctor_causes.classify``. Each answer keeps the ``Date`` header of
the response (success or error) and the local time it arrived, for the clock check.

SQS: ``receive`` asks for one message with WaitTimeSeconds 0 and VisibilityTimeout 0, and deletes
nothing. A message it happens to receive stays in the queue, visible to the agent again at once;
the only trace is its ApproximateReceiveCount, one higher (a redrive policy counts that receive).
"""

from __future__ import annotations

import os
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Dict, List, Optional

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ProxyConnectionError,
    ReadTimeoutError,
)

from certpull.aws import AwsClients, session_name
from certpull.doctor_causes import NO_CREDENTIALS, AwsFailure

IMDS_DEFAULT_ENDPOINT = "http://169.254.169.254/"
_XML_FIELD = "<{0}>(.*?)</{0}>"


@dataclass(frozen=True)
class Answer:
    """One AWS call: the response (``value``) or the ``failure``; ``date`` of the response."""

    operation: str
    value: Optional[Dict[str, Any]] = None
    failure: Optional[AwsFailure] = None
    date: Optional[float] = None  # the response's Date header, as a Unix time
    received_at: float = 0.0  # this host's clock when the answer arrived

    @property
    def ok(self) -> bool:
        return self.failure is None


@dataclass(frozen=True)
class ImdsAnswer:
    """The IMDSv2 token request: ``problem`` is None when a token came back."""

    endpoint: str
    problem: Optional[str] = None
    instance_id: Optional[str] = None


def failure_of(exc: Exception, operation: str) -> AwsFailure:
    """The one translation of botocore's exceptions into (code, message, status)."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        message = str(error.get("Message", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code.isdigit() and "<Code>" in message:  # an XML error body where JSON was expected
            code = _xml_field(message, "Code") or code
            message = _xml_field(message, "Message") or ""
        return AwsFailure(code, message, status, operation)
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return AwsFailure(NO_CREDENTIALS, str(exc), 0, operation)
    if isinstance(exc, ConnectTimeoutError):
        return AwsFailure("ConnectTimeout", str(exc), 0, operation)
    if isinstance(exc, ReadTimeoutError):
        return AwsFailure("ReadTimeout", str(exc), 0, operation)
    if isinstance(exc, ProxyConnectionError):
        return AwsFailure("ProxyError", str(exc), 0, operation)
    if isinstance(exc, EndpointConnectionError):
        return AwsFailure("EndpointConnectionError", str(exc), 0, operation)
    if isinstance(exc, ConnectionClosedError):
        return AwsFailure("ConnectionClosed", str(exc), 0, operation)
    if isinstance(exc, BotoCoreError):
        return AwsFailure(type(exc).__name__, str(exc), 0, operation)
    if isinstance(exc, OSError):
        return AwsFailure("EndpointConnectionError", str(exc), 0, operation)
    raise exc


def _xml_field(text: str, name: str) -> Optional[str]:
    match = re.search(_XML_FIELD.format(name), text, re.DOTALL)
    return match.group(1).strip() if match else None


def _date_of(response: Any) -> Optional[float]:
    try:
        header = response["ResponseMetadata"]["HTTPHeaders"]["date"]
        return parsedate_to_datetime(str(header)).timestamp()
    except (KeyError, TypeError, ValueError, IndexError):
        return None


@dataclass
class AwsProbe:
    """The doctor's read-only AWS calls, through the agent's clients."""

    clients: AwsClients
    queue_region: Callable[[str], str]  # queue URL -> its region (wiring.queue_region)
    clock: Callable[[], float] = time.time
    imds_endpoint: Optional[str] = None
    imds_timeout_s: float = 2.0
    answers: List[Answer] = field(default_factory=list)  # every answer, in order

    def _call(self, operation: str, call: Callable[[], Any]) -> Answer:
        try:
            response = call()
        except Exception as exc:
            failure = failure_of(exc, operation)  # re-raises what is not an AWS failure
            response = getattr(exc, "response", None)
            answer = Answer(operation, None, failure, _date_of(response), self.clock())
        else:
            answer = Answer(operation, dict(response), None, _date_of(response), self.clock())
        self.answers.append(answer)
        return answer

    def credential_method(self) -> Optional[str]:
        """botocore's name for where the credentials come from ("env", "iam-role", ...)."""
        try:
            return self.clients.credential_method()
        except BotoCoreError:
            return None

    def caller_identity(self, region: str) -> Answer:
        sts = self.clients.client("sts", region)
        return self._call("GetCallerIdentity", sts.get_caller_identity)

    def assume_role(self, region: str, role_arn: str, external_id: Optional[str]) -> Answer:
        """The AssumeRole the agent makes for ``role_arn`` (same session name and external id)."""
        args: Dict[str, Any] = {"RoleArn": role_arn, "RoleSessionName": session_name()}
        if external_id:
            args["ExternalId"] = external_id
        sts = self.clients.client("sts", region)
        return self._call("AssumeRole", lambda: sts.assume_role(**args))

    def describe_secret(
        self, arn: str, role_arn: Optional[str], external_id: Optional[str]
    ) -> Answer:
        sm = self.clients.secretsmanager(arn.split(":")[3], role_arn, external_id)
        return self._call("DescribeSecret", lambda: sm.describe_secret(SecretId=arn))

    def get_secret_value(
        self, arn: str, role_arn: Optional[str], external_id: Optional[str]
    ) -> Answer:
        sm = self.clients.secretsmanager(arn.split(":")[3], role_arn, external_id)
        return self._call(
            "GetSecretValue",
            lambda: sm.get_secret_value(SecretId=arn, VersionStage="AWSCURRENT"),
        )

    def receive(self, queue_url: str) -> Answer:
        """One short receive that consumes nothing (see the module docstring)."""
        sqs = self.clients.sqs(self.queue_region(queue_url))
        return self._call(
            "ReceiveMessage",
            lambda: sqs.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=1, WaitTimeSeconds=0, VisibilityTimeout=0
            ),
        )

    def queue_attributes(self, queue_url: str) -> Answer:
        sqs = self.clients.sqs(self.queue_region(queue_url))
        return self._call(
            "GetQueueAttributes",
            lambda: sqs.get_queue_attributes(
                QueueUrl=queue_url, AttributeNames=["Policy", "QueueArn"]
            ),
        )

    def known_region(self, service: str, partition: str, region: str) -> bool:
        """Whether botocore's endpoint data lists ``region`` for ``service`` in ``partition``."""
        try:
            regions = self.clients.available_regions(service, partition)
        except (BotoCoreError, ValueError):
            return True  # no data to say otherwise
        return region in regions

    def imds_token(self) -> ImdsAnswer:
        """PUT /latest/api/token as botocore does; on success also read the instance id."""
        endpoint = (
            self.imds_endpoint
            or os.environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT")
            or IMDS_DEFAULT_ENDPOINT
        )
        base = endpoint.rstrip("/") + "/latest/"
        request = urllib.request.Request(  # noqa: S310 - the instance metadata endpoint
            base + "api/token",
            method="PUT",
            headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.imds_timeout_s) as response:  # noqa: S310
                token = response.read().decode("ascii", "replace").strip()
        except urllib.error.HTTPError as exc:
            return ImdsAnswer(endpoint, f"the token request was answered HTTP {exc.code}")
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            return ImdsAnswer(endpoint, f"no answer to the token request ({reason})")
        instance_id = None
        lookup = urllib.request.Request(  # noqa: S310
            base + "meta-data/instance-id", headers={"X-aws-ec2-metadata-token": token}
        )
        try:
            with urllib.request.urlopen(lookup, timeout=self.imds_timeout_s) as response:  # noqa: S310
                instance_id = response.read().decode("ascii", "replace").strip() or None
        except (OSError, ValueError):
            pass
        return ImdsAnswer(endpoint, None, instance_id)
