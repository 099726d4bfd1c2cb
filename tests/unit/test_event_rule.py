"""The EventBridge rules shipped in secret-owner.yaml against the event parser, both ways.

Forward: every event kind a rule forwards (its detail-type, and for CloudTrail each eventName) is
parsed into a check of the secret, from the real-shaped samples in tests/testdata/events. Backward:
every kind the parser accepts is forwarded by a rule, or is listed in PARSER_ONLY with the reason.
Whether the rules really match those samples is tested through moto's EventBridge in
tests/integration/test_event_rule_routing.py.
"""

from __future__ import annotations

import json
from typing import Any, Dict

import pytest

from certpull import events
from certpull.events import match_certs, parse_event
from tests.cfn import event_rules, resolve
from tests.event_kinds import EVENTS, PARSER_ONLY, SAMPLES, Kind, forwarded_kinds, parser_kinds

ARN = "arn:aws:secretsmanager:us-east-1:111122223333:secret:www-tls-AbCdEf"
OWNER = "secret-owner.yaml"


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
