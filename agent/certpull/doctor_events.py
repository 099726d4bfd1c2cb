"""`certpull doctor`'s events checks: the queue named by ``events_queue_url`` is receivable
(a receive with a zero visibility change, nothing consumed) and its policy lets a source send."""

from __future__ import annotations

from typing import List

from certpull.config import Config
from certpull.doctor_aws import AwsProbe
from certpull.doctor_causes import Cause, Kind, classify
from certpull.doctor_fixes import aws_failed, queue_senders
from certpull.doctor_policy import Caller, Target, arn_account, queue_send_statement
from certpull.doctor_report import Check, Fix, failed, not_applicable, passed


def event_checks(config: Config, aws: AwsProbe, caller: Caller) -> List[Check]:
    """Doctor step 5: the queue is receivable (nothing consumed); its policy lets a source send."""
    url = config.agent.events_queue_url
    if not url:
        return [not_applicable("events", "rotation events", "events_queue_url is not set: polling")]
    region = aws.queue_region(url)
    queue_arn = _queue_arn(url, region)
    target = Target(
        "sqs:ReceiveMessage",
        queue_arn,
        region,
        config_hint=f"events_queue_url in [agent] of {config.path}",
        queue_url=url,
        endpoint_url=config.agent.endpoint_url,
    )
    received = aws.receive(url)
    if received.failure is not None:
        checks = [
            aws_failed("events.receive", "events queue", None, received.failure, caller, target)
        ]
    else:
        waiting = len((received.value or {}).get("Messages") or [])
        note = (
            "; the message seen stays in the queue, visible again at once"
            if waiting
            else ", no message waiting"
        )
        checks = [passed("events.receive", "events queue", f"{url} is receivable{note}")]
    checks.append(_queue_policy(aws, url, queue_arn))
    return checks


def _queue_policy(aws: AwsProbe, url: str, queue_arn: str) -> Check:
    id_, title = "events.policy", "events queue policy"
    answer = aws.queue_attributes(url)
    if answer.failure is not None:
        cause: Cause = classify(answer.failure)
        why = "may not read" if cause.kind is Kind.ACCESS_DENIED else "could not read"
        return not_applicable(
            id_,
            title,
            f"this host {why} the queue's policy (the agent does not need to); from account "
            f"{arn_account(queue_arn)}: aws sqs get-queue-attributes --queue-url {url} "
            "--attribute-names Policy",
        )
    attributes = (answer.value or {}).get("Attributes") or {}
    queue_arn = attributes.get("QueueArn", queue_arn)
    senders = queue_senders(attributes.get("Policy"))
    if senders:
        return passed(id_, title, "allows sqs:SendMessage to " + "; ".join(senders))
    return failed(
        id_,
        title,
        "no statement allows sqs:SendMessage: the SNS topic (or EventBridge rule) cannot "
        "deliver rotation events, so certpull only polls",
        fixes=(
            Fix(
                f"in account {arn_account(queue_arn)}, add this statement to the queue's "
                "policy (host.yaml with EventsTopicArn does it); TOPIC_ARN is "
                "secret-owner.yaml's output TopicArn",
                statement=queue_send_statement(queue_arn, "TOPIC_ARN"),
                commands=(
                    f"aws sqs set-queue-attributes --queue-url {url} "
                    '--attributes file://queue-policy.json   # {"Policy": "<the policy as a string>"}',
                ),
            ),
        ),
    )


def _queue_arn(url: str, region: str) -> str:
    """https://sqs.REGION.amazonaws.com/ACCOUNT/NAME -> arn:aws:sqs:REGION:ACCOUNT:NAME."""
    parts = url.rstrip("/").split("/")
    return f"arn:aws:sqs:{region}:{parts[-2]}:{parts[-1]}"
