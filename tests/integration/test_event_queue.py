"""EventQueue against moto's server: EventBridge rule -> SQS, and SNS -> SQS, then parse and delete."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any, Dict, List

import botocore.config
import pytest

from certpull.errors import SourceError
from certpull.event_queue import EventQueue, QueueMessage
from certpull.events import LABEL_UPDATED, ROTATION_SUCCEEDED, match_certs, parse_message
from tests.aws_local import LocalAws

pytestmark = pytest.mark.integration

EVENTS = Path(__file__).resolve().parent.parent / "testdata" / "events"
ARN = "arn:aws:secretsmanager:us-east-1:111122223333:secret:www-tls-AbCdEf"


def sample(name: str) -> Dict[str, Any]:
    return json.loads((EVENTS / name).read_text())  # type: ignore[no-any-return]


def new_queue(local_aws: LocalAws) -> Dict[str, str]:
    sqs = local_aws.client("sqs")
    url = sqs.create_queue(QueueName=f"certpull-{uuid.uuid4().hex[:12]}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    return {"url": url, "arn": arn}


def receive_all(queue: EventQueue, want: int) -> List[QueueMessage]:
    got: List[QueueMessage] = []
    for _ in range(10):
        got.extend(queue.receive())
        if len(got) >= want:
            break
    return got


def put_event(local_aws: LocalAws, event: Dict[str, Any]) -> None:
    response = local_aws.client("events").put_events(
        Entries=[
            {
                "Source": event["source"],
                "DetailType": event["detail-type"],
                "Detail": json.dumps(event["detail"]),
                "Resources": event.get("resources", []),
            }
        ]
    )
    assert response["FailedEntryCount"] == 0


def test_eventbridge_rule_to_queue_receive_parse_delete(local_aws: LocalAws) -> None:
    queue_ids = new_queue(local_aws)
    events = local_aws.client("events")
    rule = f"certpull-{uuid.uuid4().hex[:8]}"
    events.put_rule(
        Name=rule,
        EventPattern=json.dumps(
            {
                "source": ["aws.secretsmanager"],
                "detail-type": ["Secret Label Updated", "AWS Service Event via CloudTrail"],
            }
        ),
    )
    events.put_targets(Rule=rule, Targets=[{"Id": "agent", "Arn": queue_ids["arn"]}])

    put_event(local_aws, sample("label_updated_awscurrent.json"))
    put_event(local_aws, sample("cloudtrail_rotation_succeeded.json"))
    put_event(local_aws, sample("foreign_ec2_state_change.json"))  # not matched by the rule

    queue = EventQueue(local_aws.client("sqs"), queue_ids["url"], wait_s=1)
    messages = receive_all(queue, want=2)
    assert len(messages) == 2
    parsed = [parse_message(m.body) for m in messages]
    assert sorted(e.kind for e in parsed if e) == sorted([LABEL_UPDATED, ROTATION_SUCCEEDED])
    for event in parsed:
        assert event is not None
        assert match_certs(event, {"www": ARN, "other": ARN.replace("www", "api")}) == ["www"]

    assert queue.delete(messages) == 0
    assert queue.receive() == []
    attrs = local_aws.client("sqs").get_queue_attributes(
        QueueUrl=queue_ids["url"],
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    assert attrs == {
        "ApproximateNumberOfMessages": "0",
        "ApproximateNumberOfMessagesNotVisible": "0",
    }


@pytest.mark.parametrize("raw", [False, True])
def test_sns_topic_to_queue(local_aws: LocalAws, raw: bool) -> None:
    queue_ids = new_queue(local_aws)
    sns = local_aws.client("sns")
    topic = sns.create_topic(Name=f"certpull-{uuid.uuid4().hex[:8]}")["TopicArn"]
    sns.subscribe(
        TopicArn=topic,
        Protocol="sqs",
        Endpoint=queue_ids["arn"],
        Attributes={"RawMessageDelivery": "true" if raw else "false"},
    )
    sns.publish(TopicArn=topic, Message=json.dumps(sample("cloudtrail_put_secret_value.json")))
    sns.publish(TopicArn=topic, Message="hello, not an event")

    queue = EventQueue(local_aws.client("sqs"), queue_ids["url"], wait_s=1)
    messages = receive_all(queue, want=2)
    assert len(messages) == 2
    envelope_seen = any('"Type": "Notification"' in m.body for m in messages)
    assert envelope_seen is not raw
    parsed = [parse_message(m.body) for m in messages]
    events = [e for e in parsed if e is not None]
    assert len(events) == 1  # the foreign message parses to None and is deleted all the same
    assert match_certs(events[0], {"www": ARN}) == ["www"]
    assert queue.delete(messages) == 0
    assert queue.receive() == []


def test_more_than_ten_deletes_are_batched(local_aws: LocalAws) -> None:
    queue_ids = new_queue(local_aws)
    sqs = local_aws.client("sqs")
    for i in range(23):
        sqs.send_message(QueueUrl=queue_ids["url"], MessageBody=f"m{i}")
    queue = EventQueue(sqs, queue_ids["url"], wait_s=0)
    messages = receive_all(queue, want=23)
    assert len(messages) == 23
    assert queue.delete(messages) == 0
    assert queue.receive() == []


def test_stale_receipt_handle_is_counted_not_raised(local_aws: LocalAws) -> None:
    queue_ids = new_queue(local_aws)
    queue = EventQueue(local_aws.client("sqs"), queue_ids["url"], wait_s=0)
    assert queue.delete([QueueMessage(receipt_handle="not-a-real-handle", body="")]) == 1


def test_missing_queue_is_a_permanent_source_error(local_aws: LocalAws) -> None:
    url = new_queue(local_aws)["url"] + "-gone"
    queue = EventQueue(local_aws.client("sqs"), url, wait_s=0)
    with pytest.raises(SourceError) as info:
        queue.receive()
    assert info.value.transient is False
    assert "cannot receive from SQS queue" in str(info.value)


def test_unreachable_endpoint_is_a_transient_source_error() -> None:
    import boto3

    client = boto3.client(
        "sqs",
        region_name="us-east-1",
        endpoint_url="http://127.0.0.1:9",  # discard port: connection refused
        config=botocore.config.Config(
            retries={"max_attempts": 1}, connect_timeout=1, read_timeout=30
        ),
    )
    queue = EventQueue(client, "http://127.0.0.1:9/123456789012/q", wait_s=0)
    with pytest.raises(SourceError) as info:
        queue.receive()
    assert info.value.transient is True
    with pytest.raises(SourceError):
        queue.delete([QueueMessage("h", "b")])


def test_long_poll_is_fitted_inside_the_read_timeout() -> None:
    import boto3

    client = boto3.client(
        "sqs",
        region_name="us-east-1",
        endpoint_url="http://127.0.0.1:9",
        config=botocore.config.Config(read_timeout=15),
    )
    assert EventQueue(client, "http://127.0.0.1:9/q").wait_s == 10
    assert EventQueue(client, "http://127.0.0.1:9/q", wait_s=5).wait_s == 5
    roomy = boto3.client(
        "sqs",
        region_name="us-east-1",
        endpoint_url="http://127.0.0.1:9",
        config=botocore.config.Config(read_timeout=60),
    )
    assert EventQueue(roomy, "http://127.0.0.1:9/q").wait_s == 20


@pytest.mark.parametrize(
    ("kwargs", "message"), [({"wait_s": 21}, "0..20"), ({"max_messages": 11}, "1..10")]
)
def test_bad_settings(kwargs: Dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EventQueue(object(), "url", **kwargs)
