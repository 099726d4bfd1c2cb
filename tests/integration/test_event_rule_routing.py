"""The event patterns of secret-owner.yaml in moto's EventBridge: what they forward, the parser acts on.

Each rule's pattern is read from the template, its SecretArns filled in, and put on moto's event
bus with an SQS queue as the target (moto's EventBridge cannot target SNS; the topic only copies
the event). Every sample kind is then put on the bus, once for the configured secret and once for
another one: what arrives must be exactly the kinds the rule forwards for the configured secret,
and each arrival must parse into a check of that secret.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Dict, Iterator, List, Set

import pytest

from certpull.events import match_certs, parse_message
from tests.aws_local import MOTO_VERSION, LocalAws
from tests.cfn import event_rules, resolve
from tests.event_kinds import EVENTS, SAMPLES, Kind, forwarded_kinds

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        MOTO_VERSION < (5, 2),
        reason="moto < 5.2 (the last for Python 3.9) does not match EventBridge's $or",
    ),
]

SAMPLE_ARN = "arn:aws:secretsmanager:us-east-1:111122223333:secret:www-tls-AbCdEf"


class RuleToQueue:
    """One template rule on moto's default bus, targeting a fresh queue."""

    def __init__(self, aws: LocalAws, pattern: Dict[str, Any]) -> None:
        self.events = aws.client("events")
        self.sqs = aws.client("sqs")
        self.name = f"certpull-rule-{uuid.uuid4().hex[:10]}"
        self.queue_url = self.sqs.create_queue(QueueName=self.name)["QueueUrl"]
        queue_arn = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url, AttributeNames=["QueueArn"]
        )["Attributes"]["QueueArn"]
        self.events.put_rule(Name=self.name, EventPattern=json.dumps(pattern))
        self.events.put_targets(Rule=self.name, Targets=[{"Id": "q", "Arn": queue_arn}])

    def close(self) -> None:
        self.events.remove_targets(Rule=self.name, Ids=["q"])
        self.events.delete_rule(Name=self.name)
        self.sqs.delete_queue(QueueUrl=self.queue_url)

    def drain(self) -> List[str]:
        bodies: List[str] = []
        while True:
            got = self.sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
            ).get("Messages", [])
            if not got:
                return bodies
            for message in got:
                bodies.append(message["Body"])
                self.sqs.delete_message(
                    QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"]
                )


def for_secret(file: str, arn: str) -> Dict[str, Any]:
    """The sample in ``file`` rewritten to name ``arn`` everywhere it names the sample secret."""
    text = (EVENTS / file).read_text()
    name = arn.split(":secret:")[1][:-7]
    text = text.replace(SAMPLE_ARN, arn).replace('"www-tls"', json.dumps(name))
    doc: Dict[str, Any] = json.loads(text)
    return doc


def put(aws: LocalAws, event: Dict[str, Any]) -> None:
    response = aws.client("events").put_events(
        Entries=[
            {
                "Source": event["source"],
                "DetailType": event["detail-type"],
                "Detail": json.dumps(event["detail"]),
                "Resources": event.get("resources", []),
            }
        ]
    )
    assert response["FailedEntryCount"] == 0, response


@pytest.fixture
def secret_arn(local_aws: LocalAws) -> str:
    name = f"rule-{uuid.uuid4().hex[:8]}"
    arn: str = local_aws.client("secretsmanager").create_secret(Name=name, SecretString="{}")["ARN"]
    return arn


RULES = sorted(event_rules("secret-owner.yaml"))


@pytest.fixture(params=RULES)
def rule(request: pytest.FixtureRequest, local_aws: LocalAws, secret_arn: str) -> Iterator[Any]:
    logical_id = request.param
    template_pattern = event_rules("secret-owner.yaml")[logical_id]["Properties"]["EventPattern"]
    pattern = resolve(template_pattern, {"SecretArns": [secret_arn]})
    target = RuleToQueue(local_aws, pattern)
    try:
        yield logical_id, pattern, target
    finally:
        target.close()


def test_each_rule_forwards_exactly_its_kinds_for_its_secrets_and_the_parser_acts_on_them(
    local_aws: LocalAws, secret_arn: str, rule: Any
) -> None:
    logical_id, pattern, target = rule
    other_arn = secret_arn.replace(":secret:rule-", ":secret:other-")
    for file in (
        *SAMPLES.values(),
        "label_updated_custom.json",
        "cloudtrail_get_secret_value.json",
    ):
        put(local_aws, for_secret(file, other_arn))  # not a configured secret: never forwarded
        put(local_aws, for_secret(file, secret_arn))

    arrived: Set[Kind] = set()
    for body in target.drain():
        event = parse_message(body)
        assert event is not None, f"{logical_id} forwarded a message the parser drops: {body}"
        assert match_certs(event, {"www": secret_arn}) == ["www"], body
        assert event.may_change_current
        doc = json.loads(body)
        assert doc["detail"].get("labelUpdated") in (None, "AWSCURRENT"), body
        arrived.add((doc["detail-type"], doc["detail"].get("eventName")))

    expected = forwarded_kinds(pattern) & set(SAMPLES)
    assert expected, f"{logical_id} forwards none of the sample kinds"
    assert arrived == expected
