"""Event parsing and matching, against the sample events in tests/testdata/events/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import pytest

from certpull import events
from certpull.events import SecretEvent, match_certs, parse_message

EVENTS = Path(__file__).resolve().parent.parent / "testdata" / "events"
ARN = "arn:aws:secretsmanager:us-east-1:111122223333:secret:www-tls-AbCdEf"


def sample(name: str) -> str:
    return (EVENTS / name).read_text()


@pytest.mark.parametrize(
    ("file", "kind", "moved", "version_id"),
    [
        (
            "label_updated_awscurrent.json",
            events.LABEL_UPDATED,
            True,
            "a1b2c3d4-5678-90ab-cdef-EXAMPLE11111",
        ),
        (
            "label_updated_custom.json",
            events.LABEL_UPDATED,
            False,
            "b2c3d4e5-6789-01ab-cdef-EXAMPLE22222",
        ),
        ("cloudtrail_put_secret_value.json", events.PUT_SECRET_VALUE, True, None),
        (
            "cloudtrail_put_secret_value_pending_legacy_aRN.json",
            events.PUT_SECRET_VALUE,
            False,
            None,
        ),
        (
            "cloudtrail_update_secret_version_stage.json",
            events.UPDATE_SECRET_VERSION_STAGE,
            True,
            "c3d4e5f6-7890-12ab-cdef-EXAMPLE33333",
        ),
        (
            "cloudtrail_rotate_secret.json",
            events.ROTATE_SECRET,
            None,
            "c3d4e5f6-7890-12ab-cdef-EXAMPLE33333",
        ),
        ("cloudtrail_rotation_succeeded.json", events.ROTATION_SUCCEEDED, None, None),
        (  # a new value: AWSCURRENT moved to the version in the response
            "cloudtrail_update_secret.json",
            events.UPDATE_SECRET,
            True,
            "d4e5f6a7-8901-23ab-cdef-EXAMPLE44444",
        ),
        ("cloudtrail_update_secret_description.json", events.UPDATE_SECRET, None, None),
        ("cloudtrail_restore_secret.json", events.RESTORE_SECRET, None, None),
        ("cloudtrail_restore_secret_legacy_aRN.json", events.RESTORE_SECRET, None, None),
        (
            "sns_envelope_label_updated.json",
            events.LABEL_UPDATED,
            True,
            "a1b2c3d4-5678-90ab-cdef-EXAMPLE11111",
        ),
        ("sns_envelope_rotation_succeeded.json", events.ROTATION_SUCCEEDED, None, None),
    ],
)
def test_sample_events_parse_and_name_the_secret(
    file: str, kind: str, moved: Optional[bool], version_id: Optional[str]
) -> None:
    event = parse_message(sample(file))
    assert event is not None
    assert event.kind == kind
    assert ARN in event.secret_ids
    assert event.awscurrent_moved is moved
    assert event.may_change_current is (moved is not False)
    assert event.version_id == version_id
    assert event.region == "us-east-1"
    assert match_certs(event, {"www": ARN, "api": ARN.replace("www-tls", "api-tls")}) == ["www"]


def test_raw_sns_delivery_is_the_event_itself() -> None:
    # RawMessageDelivery=true: the SQS body is the EventBridge JSON, same as an SQS target.
    raw = json.dumps(json.loads(sample("label_updated_awscurrent.json")))
    assert parse_message(raw) == parse_message(sample("label_updated_awscurrent.json"))


@pytest.mark.parametrize(
    "body",
    [
        "",
        "not json",
        "[1, 2]",
        "null",
        '{"Type": "Notification", "Message": "not json"}',
        '{"Type": "Notification", "Message": "[]"}',
        '{"source": "aws.secretsmanager", "detail-type": "Secret Label Updated"}',
        '{"source": "aws.secretsmanager", "detail-type": "Secret Label Updated", "detail": {}}',
        '{"source": "aws.secretsmanager", "detail-type": "Something New", "detail": {"name": "x"}}',
        '{"source": "aws.secretsmanager", "detail-type": "AWS API Call via CloudTrail",'
        ' "detail": {"eventName": "PutSecretValue", "requestParameters": {}}}',
        '{"source": "aws.secretsmanager", "detail-type": "AWS API Call via CloudTrail",'
        ' "detail": {"eventName": "PutSecretValue", "eventSource": "kms.amazonaws.com",'
        ' "requestParameters": {"secretId": "x"}}}',
        sample("foreign_ec2_state_change.json"),
        sample("cloudtrail_get_secret_value.json"),
        sample("cloudtrail_put_secret_value_access_denied.json"),
        json.dumps({"Type": "Notification", "Message": sample("foreign_ec2_state_change.json")}),
    ],
)
def test_malformed_and_foreign_messages_are_none(body: str) -> None:
    assert parse_message(body) is None


@pytest.mark.parametrize(
    ("detail_extra", "moved"),
    [
        ({"versionStages": ["AWSCURRENT"]}, True),
        ({"versionStages": ["AWSPENDING"]}, False),
        ({"versionStages": ["CANARY", "AWSCURRENT"]}, True),
        ({}, True),
    ],
)
def test_put_secret_value_stages(detail_extra: dict, moved: bool) -> None:  # type: ignore[type-arg]
    doc = json.loads(sample("cloudtrail_put_secret_value.json"))
    doc["detail"]["requestParameters"].update(detail_extra)
    event = parse_message(json.dumps(doc))
    assert event is not None and event.awscurrent_moved is moved


@pytest.mark.parametrize(
    ("stage", "move_to", "moved"),
    [("AWSCURRENT", "v2", True), ("AWSCURRENT", None, False), ("CANARY", "v2", False)],
)
def test_update_secret_version_stage(stage: str, move_to: Optional[str], moved: bool) -> None:
    doc = json.loads(sample("cloudtrail_update_secret_version_stage.json"))
    params = doc["detail"]["requestParameters"]
    params["versionStage"] = stage
    if move_to is None:
        del params["moveToVersionId"]
    else:
        params["moveToVersionId"] = move_to
    event = parse_message(json.dumps(doc))
    assert event is not None and event.awscurrent_moved is moved


def ev(*ids: str, region: Optional[str] = "us-east-1") -> SecretEvent:
    return SecretEvent(kind="test", secret_ids=ids, region=region)


PARTIAL = "arn:aws:secretsmanager:us-east-1:111122223333:secret:www-tls"


@pytest.mark.parametrize(
    ("event", "configured", "matches"),
    [
        (ev(ARN), ARN, True),  # full ARN
        (ev(PARTIAL), ARN, True),  # event has a partial ARN (caller passed it)
        (ev(ARN), PARTIAL, True),  # configured with a partial ARN
        (ev("www-tls"), ARN, True),  # event carries only the name
        (ev("www-tls"), PARTIAL, True),
        (ev("www-tls", region="eu-west-1"), ARN, False),  # same name, other region
        (ev("www-tls", region=None), ARN, True),
        (ev(ARN), "www-tls", True),  # configured by name
        (ev("www"), ARN, False),  # a prefix is not the secret
        (ev("www-tls-other"), ARN, False),
        (ev(ARN.replace("111122223333", "444455556666")), ARN, False),  # other account
        (ev(ARN.replace("AbCdEf", "ZyXwVu")), ARN, False),  # recreated secret, new suffix
        (ev("arn:aws:secretsmanager:us-east-1:111122223333:secret:www"), ARN, False),
    ],
)
def test_match_certs(event: SecretEvent, configured: str, matches: bool) -> None:
    assert match_certs(event, {"www": configured}) == (["www"] if matches else [])


def test_one_secret_can_feed_several_certs() -> None:
    event = parse_message(sample("cloudtrail_rotation_succeeded.json"))
    assert event is not None
    assert match_certs(event, {"b": ARN, "a": PARTIAL, "c": "other"}) == ["a", "b"]
    assert "RotationSucceeded for" in event.describe()
