"""source.py with botocore's Stubber: which calls are made, and how every failure is classified."""

from __future__ import annotations

from typing import Any, Iterator, Optional, Tuple

import boto3
import pytest
from botocore.exceptions import (
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)
from botocore.stub import Stubber

from certpull.errors import SourceError
from certpull.source import SecretSource, SecretValue, classify

ARN = "arn:aws:secretsmanager:eu-west-1:111122223333:secret:www-tls-AbCdEf"
V1 = "11111111-1111-4111-8111-111111111111"
V2 = "22222222-2222-4222-8222-222222222222"


@pytest.fixture
def stubbed() -> Iterator[Tuple[SecretSource, Stubber, list]]:  # type: ignore[type-arg]
    client = boto3.session.Session(
        aws_access_key_id="x", aws_secret_access_key="y", region_name="eu-west-1"
    ).client("secretsmanager")
    asked: list = []  # type: ignore[type-arg]

    def factory(region: str, role_arn: Optional[str], external_id: Optional[str]) -> Any:
        asked.append((region, role_arn, external_id))
        return client

    with Stubber(client) as stub:
        yield SecretSource(factory), stub, asked
        stub.assert_no_pending_responses()


def test_current_version_id_uses_describe_secret_in_the_arns_region(stubbed: Any) -> None:
    source, stub, asked = stubbed
    stub.add_response(
        "describe_secret",
        {"ARN": ARN, "VersionIdsToStages": {V1: ["AWSPREVIOUS"], V2: ["AWSCURRENT", "AWSPENDING"]}},
        {"SecretId": ARN},
    )
    assert source.current_version_id(ARN, "arn:aws:iam::1:role/r", "ext") == V2
    assert asked == [("eu-west-1", "arn:aws:iam::1:role/r", "ext")]


def test_fetch_current_asks_for_awscurrent_explicitly(stubbed: Any) -> None:
    source, stub, _ = stubbed
    stub.add_response(
        "get_secret_value",
        {"ARN": ARN, "VersionId": V2, "SecretString": '{"PRIVATE_KEY_PEM": "secret-bytes"}'},
        {"SecretId": ARN, "VersionStage": "AWSCURRENT"},
    )
    value = source.fetch_current(ARN)
    assert value.version_id == V2
    assert "secret-bytes" not in repr(value) and "secret-bytes" not in str(value)


@pytest.mark.parametrize(
    ("response", "message"),
    [
        ({"ARN": ARN, "VersionIdsToStages": {V1: ["AWSPENDING"]}}, "has no AWSCURRENT version"),
        (
            {"ARN": ARN, "DeletedDate": "2026-01-01T00:00:00Z", "VersionIdsToStages": {}},
            "scheduled for deletion",
        ),
    ],
)
def test_describe_secret_refusals_are_permanent(stubbed: Any, response: dict, message: str) -> None:  # type: ignore[type-arg]
    source, stub, _ = stubbed
    stub.add_response("describe_secret", response, {"SecretId": ARN})
    with pytest.raises(SourceError, match=message) as info:
        source.current_version_id(ARN)
    assert info.value.transient is False


def test_binary_secret_is_refused_permanently(stubbed: Any) -> None:
    source, stub, _ = stubbed
    stub.add_response(
        "get_secret_value",
        {"ARN": ARN, "VersionId": V2, "SecretBinary": b"\x00\x01"},
        {"SecretId": ARN, "VersionStage": "AWSCURRENT"},
    )
    with pytest.raises(SourceError, match="binary data") as info:
        source.fetch_current(ARN)
    assert info.value.transient is False


CLIENT_ERRORS = [
    # (code, http status, message, transient, fragment)
    ("ThrottlingException", 400, "Rate exceeded", True, "ThrottlingException"),
    ("InternalServiceError", 500, "oops", True, "InternalServiceError"),
    ("ServiceUnavailable", 503, "", True, "ServiceUnavailable"),
    ("SomethingNew", 502, "bad gateway", True, "SomethingNew"),
    ("AccessDeniedException", 400, "not authorized", False, "access denied"),
    ("ResourceNotFoundException", 400, "not found", False, "secret not found"),
    ("DecryptionFailure", 400, "kms", False, "cannot decrypt the secret"),
    ("KMSDisabledException", 400, "", False, "KMS key is disabled"),
    (
        "InvalidRequestException",
        400,
        "You can't perform this operation on the secret because it was marked for deletion.",
        False,
        "scheduled for deletion",
    ),
    ("InvalidParameterException", 400, "bad", False, "InvalidParameterException: bad"),
    ("ExpiredTokenException", 400, "expired", True, "ExpiredTokenException"),
]


@pytest.mark.parametrize(
    ("code", "status", "msg", "transient", "fragment"),
    CLIENT_ERRORS,
    ids=[c[0] for c in CLIENT_ERRORS],
)
def test_client_errors_are_classified(
    stubbed: Any, code: str, status: int, msg: str, transient: bool, fragment: str
) -> None:
    source, stub, _ = stubbed
    stub.add_client_error("describe_secret", code, msg, status)
    with pytest.raises(SourceError) as info:
        source.current_version_id(ARN)
    assert info.value.transient is transient
    assert info.value.code == code
    assert fragment in str(info.value)
    assert str(info.value).startswith("DescribeSecret: ")


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (EndpointConnectionError(endpoint_url="https://x"), True),
        (ConnectTimeoutError(endpoint_url="https://x"), True),
        (ReadTimeoutError(endpoint_url="https://x"), True),
        (NoCredentialsError(), True),
        (ConnectionResetError(104, "Connection reset by peer"), True),
    ],
)
def test_transport_errors_are_transient(exc: Exception, transient: bool) -> None:
    err = classify(exc, "GetSecretValue")
    assert err.transient is transient
    assert str(err).startswith("GetSecretValue: ")


def test_unknown_exceptions_are_not_swallowed() -> None:
    with pytest.raises(ZeroDivisionError):
        classify(ZeroDivisionError(), "x")


def test_secret_value_repr_hides_the_payload() -> None:
    value = SecretValue("v1", "-----BEGIN PRIVATE KEY-----abc")
    assert "BEGIN" not in repr(value) and "chars" in repr(value)


def test_each_describe_answer_reaches_the_rotation_book_without_another_call() -> None:
    from datetime import datetime, timezone

    from certpull.fleet_loop import RotationBook

    client = boto3.session.Session(
        aws_access_key_id="x", aws_secret_access_key="y", region_name="eu-west-1"
    ).client("secretsmanager")
    book = RotationBook()
    source = SecretSource(lambda region, role, ext: client, on_describe=book.record)
    due = datetime(2027, 1, 1, tzinfo=timezone.utc)
    with Stubber(client) as stub:
        stub.add_response(
            "describe_secret",
            {
                "ARN": ARN,
                "RotationEnabled": True,
                "NextRotationDate": due,
                "RotationRules": {"AutomaticallyAfterDays": 30},
                "VersionIdsToStages": {V2: ["AWSCURRENT"]},
            },
            {"SecretId": ARN},
        )
        assert book.get(ARN) is None
        assert source.current_version_id(ARN) == V2
        stub.assert_no_pending_responses()
    facts = book.get(ARN)
    assert facts is not None and facts.expected_rotation_at() == due.timestamp()
    assert facts.period_s == 30 * 86400
