"""`certpull run` in event mode: EventBridge (or SNS) -> SQS -> the agent, against moto and Apache.

The reconcile interval is an hour, so a rotation served within seconds was picked up by the event,
not by polling. Every AWS call goes through the counting proxy, so the tests can say exactly how
many DescribeSecret / GetSecretValue calls an event cost.
"""

from __future__ import annotations

import copy
import json
import time
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from tests.apache import ApacheFactory
from tests.aws_local import LocalAws
from tests.aws_proxy import AwsProxy
from tests.daemon_proc import Daemon
from tests.pki import Pki
from tests.site import Site

pytestmark = pytest.mark.integration

EVENTS = Path(__file__).resolve().parent.parent / "testdata" / "events"
PICKUP_TIMEOUT_S = 10.0  # "within seconds"; the reconcile interval (1 h) is what it is set against


def sample(name: str) -> Dict[str, Any]:
    return json.loads((EVENTS / name).read_text())  # type: ignore[no-any-return]


class EventBus:
    """An EventBridge rule for `aws.secretsmanager` targeting a fresh SQS queue, both in moto.

    Also an SNS topic subscribed to a queue (raw or enveloped delivery): moto's EventBridge cannot
    target SNS, so `publish_sns` publishes the EventBridge event itself, as that target would.
    """

    def __init__(self, aws: LocalAws) -> None:
        self.aws = aws
        self.sqs = aws.client("sqs")
        self.events = aws.client("events")
        suffix = uuid.uuid4().hex[:10]
        self.queue_url = self.sqs.create_queue(QueueName=f"certpull-run-{suffix}")["QueueUrl"]
        self.queue_arn = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url, AttributeNames=["QueueArn"]
        )["Attributes"]["QueueArn"]
        self.rule = f"certpull-run-{suffix}"
        self.events.put_rule(
            Name=self.rule, EventPattern=json.dumps({"source": ["aws.secretsmanager"]})
        )
        self.events.put_targets(Rule=self.rule, Targets=[{"Id": "agent", "Arn": self.queue_arn}])
        self.topic_arn = ""

    def close(self) -> None:
        """Remove the rule: every test shares moto's default event bus."""
        self.events.remove_targets(Rule=self.rule, Ids=["agent"])
        self.events.delete_rule(Name=self.rule)

    def subscribe_sns(self, raw: bool) -> None:
        sns = self.aws.client("sns")
        self.topic_arn = sns.create_topic(Name=f"{self.rule}-topic")["TopicArn"]
        sns.subscribe(
            TopicArn=self.topic_arn,
            Protocol="sqs",
            Endpoint=self.queue_arn,
            Attributes={"RawMessageDelivery": "true" if raw else "false"},
        )

    def put_event(self, event: Dict[str, Any]) -> None:
        response = self.events.put_events(
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

    def publish_sns(self, event: Dict[str, Any]) -> None:
        self.aws.client("sns").publish(TopicArn=self.topic_arn, Message=json.dumps(event))

    def send_raw(self, body: str) -> None:
        self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=body)

    def depth(self) -> int:
        """Messages still in the queue, visible or in flight (moto directly, not the proxy)."""
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]) + int(
            attrs["ApproximateNumberOfMessagesNotVisible"]
        )


def label_updated(site: Site, version_id: str) -> Dict[str, Any]:
    """A native `Secret Label Updated` event for the site's secret, AWSCURRENT moved."""
    event = sample("label_updated_awscurrent.json")
    event["id"] = str(uuid.uuid4())
    event["account"] = site.secret_arn.split(":")[4]
    event["resources"] = [site.secret_arn]
    event["detail"]["name"] = site.secret_arn.split(":secret:")[1][:-7]
    event["detail"]["versionId"] = version_id
    return event


def put_secret_value_call(site: Site) -> Dict[str, Any]:
    """A CloudTrail `PutSecretValue` event that names the secret only by its friendly name."""
    event = sample("cloudtrail_put_secret_value.json")
    event["id"] = str(uuid.uuid4())
    event["account"] = site.secret_arn.split(":")[4]
    event["detail"]["requestParameters"]["secretId"] = site.secret_arn.split(":secret:")[1][:-7]
    event["detail"]["responseElements"]["arn"] = site.secret_arn
    return event


@pytest.fixture
def bus(local_aws: LocalAws) -> Iterator[EventBus]:
    b = EventBus(local_aws)
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def site(
    tmp_path: Path,
    local_aws: LocalAws,
    aws_proxy: AwsProxy,
    apache: ApacheFactory,
    pki: Pki,
    bus: EventBus,
) -> Site:
    s = Site(tmp_path, local_aws, aws_proxy, apache.new(), pki)
    s.first_leaf = pki.leaf()  # type: ignore[attr-defined]
    s.agent_options.update(
        {
            "events_queue_url": bus.queue_url,
            "event_splay_s": "0",
            "reconcile_interval_s": "3600",
            "startup_splay_s": "0",
            "max_backoff_s": "10",
        }
    )
    s.create_secret(s.first_leaf)  # type: ignore[attr-defined]
    assert s.certpull("sync").returncode == 0
    s.apache.start()
    return s


@pytest.fixture
def daemon(site: Site, aws_proxy: AwsProxy) -> Iterator[Daemon]:
    d = Daemon(site)
    try:
        d.wait_ready()
        d.wait_first_pass()
        aws_proxy.reset_counts()
        yield d
    finally:
        d.stop()


def test_rotation_is_picked_up_by_an_eventbridge_event(
    site: Site, daemon: Daemon, aws_proxy: AwsProxy, bus: EventBus
) -> None:
    reloads = site.reloads()
    leaf_b = site.pki.leaf(slot=1)
    version = site.put(leaf_b)
    bus.put_event(label_updated(site, version))
    daemon.wait_for("new leaf served", lambda: site.serves(leaf_b.der), PICKUP_TIMEOUT_S)
    daemon.wait_for("event deleted", lambda: bus.depth() == 0)
    assert aws_proxy.count("GetSecretValue") == 1
    assert aws_proxy.count("DescribeSecret") == 1
    assert site.reloads() == reloads + 1
    assert "rotation event Secret Label Updated" in daemon.log()
    assert daemon.stop() == 0


@pytest.mark.parametrize("raw", [True, False], ids=["raw", "envelope"])
def test_sns_delivered_event_is_picked_up(
    site: Site, daemon: Daemon, aws_proxy: AwsProxy, bus: EventBus, raw: bool
) -> None:
    bus.subscribe_sns(raw)
    leaf_b = site.pki.leaf(slot=2)
    site.put(leaf_b)
    bus.publish_sns(put_secret_value_call(site))
    daemon.wait_for("new leaf served", lambda: site.serves(leaf_b.der), PICKUP_TIMEOUT_S)
    daemon.wait_for("message deleted", lambda: bus.depth() == 0)
    assert aws_proxy.count("GetSecretValue") == 1
    assert "rotation event PutSecretValue" in daemon.log()


def test_foreign_and_malformed_messages_are_deleted_without_a_check(
    site: Site, daemon: Daemon, aws_proxy: AwsProxy, bus: EventBus
) -> None:
    other_secret = label_updated(site, "v-other")
    other_secret["resources"] = [site.secret_arn.replace(":secret:", ":secret:other-")]
    other_secret["detail"]["name"] = "other-" + other_secret["detail"]["name"]
    custom_label = label_updated(site, "v-canary")
    custom_label["detail"]["labelUpdated"] = "CANARY"
    denied = put_secret_value_call(site)
    denied["detail"]["errorCode"] = "AccessDenied"
    denied["detail"]["responseElements"] = None
    bodies: List[str] = [
        "not json at all",
        "",
        json.dumps(["a", "list"]),
        json.dumps(sample("foreign_ec2_state_change.json")),
        json.dumps({"Type": "Notification", "Message": "{broken"}),
        json.dumps(other_secret),  # a secret this host does not use
        json.dumps(custom_label),  # AWSCURRENT did not move
        json.dumps(denied),  # a failed PutSecretValue changed nothing
    ]
    for body in bodies:
        if body:
            bus.send_raw(body)
    bus.sqs.send_message(QueueUrl=bus.queue_url, MessageBody=" ")  # SQS refuses an empty body
    daemon.wait_for("every message deleted", lambda: bus.depth() == 0)
    time.sleep(0.5)  # a check would follow a trigger at once (splay 0): give it the chance
    assert aws_proxy.count("DescribeSecret") == 0
    assert aws_proxy.count("GetSecretValue") == 0
    assert aws_proxy.count("DeleteMessageBatch") >= 1
    # still healthy: the poller thread survived every message and the next real event works
    leaf_b = site.pki.leaf(slot=3)
    version = site.put(leaf_b)
    bus.put_event(label_updated(site, version))
    daemon.wait_for("new leaf served", lambda: site.serves(leaf_b.der), PICKUP_TIMEOUT_S)
    assert "Traceback" not in daemon.log()
    assert daemon.stop() == 0


def test_a_burst_of_events_costs_one_fetch_and_one_reload(
    site: Site, aws_proxy: AwsProxy, bus: EventBus
) -> None:
    site.agent_options["event_splay_s"] = "2"
    site.write_config()
    daemon = Daemon(site)
    try:
        daemon.wait_ready()
        daemon.wait_first_pass()
        aws_proxy.reset_counts()
        reloads = site.reloads()
        leaf_b = site.pki.leaf(slot=4)
        version = site.put(leaf_b)
        event = label_updated(site, version)
        for _ in range(5):
            burst = copy.deepcopy(event)
            burst["id"] = str(uuid.uuid4())
            bus.put_event(burst)
        daemon.wait_for("new leaf served", lambda: site.serves(leaf_b.der), PICKUP_TIMEOUT_S)
        daemon.wait_for("burst deleted", lambda: bus.depth() == 0)
        time.sleep(2.5)  # longer than the splay: a trigger still pending has run by now
        assert aws_proxy.count("GetSecretValue") == 1
        assert site.reloads() == reloads + 1
        # triggers coalesce while one is pending; a batch that lands during the check costs at
        # most one more DescribeSecret (the check may have read the old version)
        assert 1 <= aws_proxy.count("DescribeSecret") <= 2
        assert daemon.stop() == 0
    finally:
        daemon.stop()
