"""Which Secrets Manager event kinds the parser accepts, which a rule's pattern forwards, and a
real-shaped sample of each in tests/testdata/events (shared by the rule tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Set, Tuple

from certpull import events

EVENTS = Path(__file__).resolve().parent / "testdata" / "events"

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
