"""The EventBridge rules shipped in secret-owner.yaml against the event parser, both ways.

Forward: every event kind a rule forwards (its detail-type, and for CloudTrail each eventName) is
parsed into a check of the secret, from the real-shaped samples in tests/testdata/events. Backward:
every kind the parser accepts is forwarded by a rule, or is listed in PARSER_ONLY with the reason.
Whether the rules really match those samples is tested through moto's EventBridge in
tests/integration/test_event_rule_routing.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional, Set, Tuple

import pytest

from certpull import events
from certpull.events import match_certs, parse_event
from tests.cfn import event_rules, resolve

EVENTS = Path(__file__).resolve().parent.parent / "testdata" / "events"
ARN = "arn:aws:secretsmanager:us-east-1:111122223333:secret:www-tls-AbCdEf"
OWNER = "secret-owner.yaml"

Kind = Tuple[str, Optional[str]]  # (detail-type, CloudTrail eventName or None)

SAMPLES: Dict[Kind, str] = {
    (events.LABEL_UPDATED, None): "label_updated_awscurrent.json",
    (events.API_CALL, events.PUT_SECRET_VALUE): "cloudtrail_put_secret_value.json",
    (events.API_CALL, events.UPDATE_SECRET): "cloudtrail_update_secret.json",
    (
        events.API_CALL,
        events.UPDATE_SECRET_VERSION_STAGE,
    ): "cloudtrail_update_secret_version_stage.json",
    (events.API_CALL, events.RESTORE_SECRET): "cloudtrail_restore_secret.json",
    (events.API_CALL, events.ROTATE_SECRET): "cloudtrail_rotate_secret.json",
    (events.SERVICE_EVENT, events.ROTATION_SUCCEEDED): "cloudtrail_rotation_succeeded.json",
}

PARSER_ONLY: Dict[Kind, str] = {
    (events.API_CALL, events.ROTATE_SECRET): (
        "RotateSecret only starts a rotation; AWSCURRENT moves when it finishes, which the rules "
        "forward (Secret Label Updated; UpdateSecretVersionStage and RotationSucceeded). Parsed for "
        "rules users write themselves, such as AWS's 'all changes to a secret' example."
    ),
}


def parser_kinds() -> Set[Kind]:
    """Every (detail-type, eventName) the parser turns into a SecretEvent."""
    kinds: Set[Kind] = {(events.LABEL_UPDATED, None)}
    kinds |= {(events.API_CALL, name) for name in events.API_CALLS}
    kinds |= {(events.SERVICE_EVENT, name) for name in events.SERVICE_EVENTS}
    return kinds


def forwarded_kinds(pattern: Dict[str, Any]) -> Set[Kind]:
    """The kinds an event pattern lets through: CloudTrail event names go with the detail-type
    CloudTrail gives them (API calls, or RotationSucceeded as a service event)."""
    kinds: Set[Kind] = set()
    names = pattern.get("detail", {}).get("eventName")
    for detail_type in pattern["detail-type"]:
        if detail_type == events.LABEL_UPDATED:
            kinds.add((detail_type, None))
            continue
        assert names, f"a {detail_type} rule without eventName forwards every call"
        for name in names:
            service = name in events.SERVICE_EVENTS
            if (detail_type == events.SERVICE_EVENT) == service:
                kinds.add((detail_type, name))
            elif name not in events.API_CALLS + events.SERVICE_EVENTS:
                kinds.add((detail_type, name))  # unknown to the parser: reported below
    return kinds


def shipped_kinds() -> Dict[Kind, str]:
    """Every kind some rule of secret-owner.yaml forwards -> that rule's logical id."""
    shipped: Dict[Kind, str] = {}
    for logical_id, rule in event_rules(OWNER).items():
        pattern = resolve(rule["Properties"]["EventPattern"], {"SecretArns": [ARN]})
        assert pattern["source"] == [events.SOURCE], logical_id
        for kind in forwarded_kinds(pattern):
            shipped[kind] = logical_id
    return shipped


def sample(kind: Kind) -> Dict[str, Any]:
    doc: Dict[str, Any] = json.loads((EVENTS / SAMPLES[kind]).read_text())
    assert (doc["detail-type"], doc["detail"].get("eventName")) == kind, SAMPLES[kind]
    return doc


def test_the_rules_forward_what_the_issue_names() -> None:
    shipped = shipped_kinds()
    assert shipped[(events.LABEL_UPDATED, None)] == "LabelRule"
    for name in (events.UPDATE_SECRET, events.RESTORE_SECRET, events.PUT_SECRET_VALUE):
        assert shipped[(events.API_CALL, name)] == "CloudTrailRule"


@pytest.mark.parametrize("kind", sorted(shipped_kinds(), key=str), ids=str)
def test_every_forwarded_kind_is_parsed_into_a_check_of_the_secret(kind: Kind) -> None:
    assert kind in SAMPLES, f"{kind} is forwarded by {shipped_kinds()[kind]} but has no sample"
    event = parse_event(sample(kind))
    assert event is not None, f"{kind} is forwarded by the template but the parser drops it"
    assert event.kind == (kind[1] or kind[0])
    assert event.may_change_current
    assert match_certs(event, {"www": ARN}) == ["www"]


@pytest.mark.parametrize("kind", sorted(parser_kinds(), key=str), ids=str)
def test_every_parsed_kind_is_forwarded_or_says_why_not(kind: Kind) -> None:
    shipped = shipped_kinds()
    if kind in PARSER_ONLY:
        assert kind not in shipped, f"{kind} is forwarded now: drop it from PARSER_ONLY"
    else:
        assert kind in shipped, f"the parser accepts {kind}, but no rule in {OWNER} forwards it"
    assert parse_event(sample(kind)) is not None


def test_the_label_rule_forwards_only_awscurrent() -> None:
    pattern = event_rules(OWNER)["LabelRule"]["Properties"]["EventPattern"]
    assert pattern["detail"] == {"labelUpdated": ["AWSCURRENT"]}
    assert pattern["resources"] == {"Ref": "SecretArns"}
