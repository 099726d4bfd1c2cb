"""Two hosts, two real `certpull run` daemons, one SNS topic in moto: why each host needs its own queue.

As host.yaml deploys it: the fleet's topic fans each event out to every subscribed queue (raw
delivery), and each agent long-polls its queue. With one queue per host both agents install the
rotation within seconds; with one queue shared by both, SQS hands the message to one of them and
the other keeps serving the old certificate until its hourly reconcile. The reconcile interval is
an hour, so whatever is installed within the test was installed because of the event.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest

from tests.apache import ApacheFactory
from tests.aws_local import LocalAws
from tests.aws_proxy import AwsProxy
from tests.daemon_proc import Daemon
from tests.pki import Pki
from tests.site import Site

pytestmark = pytest.mark.integration

EVENTS = Path(__file__).resolve().parent.parent / "testdata" / "events"
PICKUP_TIMEOUT_S = 10.0
QUIET_S = 5.0  # after the one delivery: long enough for a second agent to act, had it been told


class FleetTopic:
    """An SNS topic and the queues subscribed to it, in moto."""

    def __init__(self, aws: LocalAws) -> None:
        self.sns = aws.client("sns")
        self.sqs = aws.client("sqs")
        self.suffix = uuid.uuid4().hex[:10]
        self.arn = self.sns.create_topic(Name=f"certpull-fleet-{self.suffix}")["TopicArn"]
        self.queues: List[str] = []

    def queue(self) -> str:
        """A new queue subscribed to the topic, as host.yaml makes one per host."""
        url: str = self.sqs.create_queue(
            QueueName=f"certpull-host-{self.suffix}-{len(self.queues)}"
        )["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        self.sns.subscribe(
            TopicArn=self.arn,
            Protocol="sqs",
            Endpoint=arn,
            Attributes={"RawMessageDelivery": "true"},
        )
        self.queues.append(url)
        return url

    def publish(self, event: Dict[str, Any]) -> None:
        """What the EventBridge rule's SNS target does with a matching event."""
        self.sns.publish(TopicArn=self.arn, Message=json.dumps(event))

    def depth(self) -> int:
        total = 0
        for url in self.queues:
            attrs = self.sqs.get_queue_attributes(
                QueueUrl=url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                ],
            )["Attributes"]
            total += int(attrs["ApproximateNumberOfMessages"])
            total += int(attrs["ApproximateNumberOfMessagesNotVisible"])
        return total

    def close(self) -> None:
        for url in self.queues:
            self.sqs.delete_queue(QueueUrl=url)
        self.sns.delete_topic(TopicArn=self.arn)


def label_updated(secret_arn: str, version_id: str) -> Dict[str, Any]:
    """Secrets Manager's own `Secret Label Updated` event: AWSCURRENT moved to ``version_id``."""
    event: Dict[str, Any] = json.loads((EVENTS / "label_updated_awscurrent.json").read_text())
    event["id"] = str(uuid.uuid4())
    event["account"] = secret_arn.split(":")[4]
    event["resources"] = [secret_arn]
    event["detail"]["name"] = secret_arn.split(":secret:")[1][:-7]
    event["detail"]["versionId"] = version_id
    return event


@pytest.fixture
def topic(local_aws: LocalAws) -> Iterator[FleetTopic]:
    t = FleetTopic(local_aws)
    try:
        yield t
    finally:
        t.close()


def two_hosts(
    tmp_path: Path,
    aws: LocalAws,
    proxy: AwsProxy,
    apache: ApacheFactory,
    pki: Pki,
    queue_urls: Tuple[str, str],
) -> Tuple[Site, Site]:
    """Two hosts serving the same secret, each installed by `certpull sync`, httpd running."""
    sites = []
    for index, queue_url in enumerate(queue_urls):
        root = tmp_path / f"host{index}"
        root.mkdir()
        site = Site(root, aws, proxy, apache.new(), pki)
        site.agent_options.update(
            {
                "events_queue_url": queue_url,
                "event_splay_s": "0",
                "reconcile_interval_s": "3600",
                "startup_splay_s": "0",
            }
        )
        sites.append(site)
    first, second = sites
    first.create_secret(pki.leaf())
    second.secret_arn = first.secret_arn
    second.write_config()
    for site in sites:
        done = site.certpull("sync")
        assert done.returncode == 0, done.stdout + done.stderr
        site.apache.start()
    return first, second


@contextlib.contextmanager
def running(sites: Tuple[Site, Site]) -> Iterator[List[Daemon]]:
    """`certpull run` on each host, ready and past its first pass; stopped on the way out whatever
    happened in between, and each must then exit 0."""
    daemons: List[Daemon] = []
    try:
        for site in sites:
            daemons.append(Daemon(site))
        for daemon in daemons:
            daemon.wait_ready()
            daemon.wait_first_pass()
        yield daemons
    finally:
        codes = [daemon.stop() for daemon in daemons]
    assert codes == [0] * len(sites)


def picked_up(daemon: Daemon) -> bool:
    return "rotation event Secret Label Updated" in daemon.log()


def test_one_queue_per_host_every_host_installs_the_rotation(
    tmp_path: Path,
    local_aws: LocalAws,
    aws_proxy: AwsProxy,
    apache: ApacheFactory,
    pki: Pki,
    topic: FleetTopic,
) -> None:
    sites = two_hosts(tmp_path, local_aws, aws_proxy, apache, pki, (topic.queue(), topic.queue()))
    with running(sites) as daemons:
        leaf_b = pki.leaf(slot=11)
        version = sites[0].put(leaf_b)
        topic.publish(label_updated(sites[0].secret_arn, version))
        for site, daemon in zip(sites, daemons):
            daemon.wait_for(
                "new leaf served", lambda s=site: s.serves(leaf_b.der), PICKUP_TIMEOUT_S
            )
            assert picked_up(daemon)
        daemons[0].wait_for("both queues emptied", lambda: topic.depth() == 0)


def test_a_shared_queue_reaches_only_one_host(
    tmp_path: Path,
    local_aws: LocalAws,
    aws_proxy: AwsProxy,
    apache: ApacheFactory,
    pki: Pki,
    topic: FleetTopic,
) -> None:
    """What host.yaml used to allow for an Auto Scaling group: the event is one message, and SQS
    gives one message to one consumer."""
    shared = topic.queue()
    sites = two_hosts(tmp_path, local_aws, aws_proxy, apache, pki, (shared, shared))
    old_der = sites[0].served_der()
    with running(sites) as daemons:
        leaf_b = pki.leaf(slot=12)
        version = sites[0].put(leaf_b)
        topic.publish(label_updated(sites[0].secret_arn, version))
        daemons[0].wait_for(
            "one host serving the new leaf",
            lambda: any(site.serves(leaf_b.der) for site in sites),
            PICKUP_TIMEOUT_S,
        )
        daemons[0].wait_for("the message deleted", lambda: topic.depth() == 0)
        time.sleep(QUIET_S)
        served = [site.served_der() for site in sites]
        told = [picked_up(daemon) for daemon in daemons]
    assert sorted(served) == sorted([leaf_b.der, old_der])  # one new, one still the old leaf
    assert sorted(told) == [False, True]
