"""Secrets Manager change events from an SQS queue body -> which configured certificates to check.

Pure: a string in, a ``SecretEvent`` (or None) out; no AWS calls.

Accepted shapes (``source: aws.secretsmanager``):

* ``Secret Label Updated`` (native Secrets Manager event): ``detail.name`` (friendly name),
  ``detail.labelUpdated``, ``detail.versionId``; the secret ARN is in ``resources``.
* ``AWS API Call via CloudTrail`` for ``PutSecretValue``, ``UpdateSecret``,
  ``UpdateSecretVersionStage``, ``RestoreSecret`` and ``RotateSecret``:
  ``detail.requestParameters.secretId`` (name, full or partial ARN, as the caller wrote it) and
  ``detail.responseElements.arn`` (``aRN`` before February 2024). ``UpdateSecret`` moved
  AWSCURRENT when its response has a ``versionId`` (a new value); without one it may have changed
  only metadata, so it is checked anyway. ``RestoreSecret`` moves no label, but a secret that was
  scheduled for deletion could not be read: it is checked at once.
* ``AWS Service Event via CloudTrail`` ``RotationSucceeded``: the ARN is in
  ``detail.additionalEventData.SecretId`` (``serviceEventDetails`` and ``resources`` are read too).

Each may arrive as the EventBridge JSON itself (an SQS target, or SNS with raw message delivery)
or wrapped in an SNS notification envelope (``{"Type": "Notification", "Message": "<json>"}``).
Anything else (malformed JSON, other sources, other API calls, failed calls that carry an
``errorCode``) is None: the caller deletes it and logs it once at debug level.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple

SOURCE = "aws.secretsmanager"
LABEL_UPDATED = "Secret Label Updated"
API_CALL = "AWS API Call via CloudTrail"
SERVICE_EVENT = "AWS Service Event via CloudTrail"

# CloudTrail event names, not credentials (S105 keys on "SECRET" in the name)
PUT_SECRET_VALUE = "PutSecretValue"  # noqa: S105
UPDATE_SECRET = "UpdateSecret"  # noqa: S105
UPDATE_SECRET_VERSION_STAGE = "UpdateSecretVersionStage"  # noqa: S105
RESTORE_SECRET = "RestoreSecret"  # noqa: S105
ROTATE_SECRET = "RotateSecret"  # noqa: S105
ROTATION_SUCCEEDED = "RotationSucceeded"

API_CALLS = (
    PUT_SECRET_VALUE,
    UPDATE_SECRET,
    UPDATE_SECRET_VERSION_STAGE,
    RESTORE_SECRET,
    ROTATE_SECRET,
)
SERVICE_EVENTS = (ROTATION_SUCCEEDED,)
DETAIL_TYPES = (LABEL_UPDATED, API_CALL, SERVICE_EVENT)
_CURRENT = "AWSCURRENT"

# Secrets Manager appends "-" and six random characters to a secret's name to form its ARN.
_ARN_SUFFIX = re.compile(r"-[A-Za-z0-9]{6}$")


@dataclass(frozen=True)
class SecretEvent:
    """One change to one secret, as far as the event tells.

    ``kind`` is ``Secret Label Updated`` or the CloudTrail event name. ``secret_ids`` holds every
    way the event names the secret (ARNs and/or names). ``awscurrent_moved`` is True/False when
    the event says whether the AWSCURRENT label moved, None when it does not say.
    """

    kind: str
    secret_ids: Tuple[str, ...]
    awscurrent_moved: Optional[bool] = None
    version_id: Optional[str] = None
    region: Optional[str] = None
    event_id: Optional[str] = None

    @property
    def may_change_current(self) -> bool:
        """False only when the event says AWSCURRENT did not move (e.g. a custom label moved)."""
        return self.awscurrent_moved is not False

    def describe(self) -> str:
        """One line for the log: kind and secret, no payload."""
        return f"{self.kind} for {', '.join(self.secret_ids)}"


def parse_message(body: str) -> Optional[SecretEvent]:
    """Parse an SQS message body; None for anything that is not a Secrets Manager change."""
    event = _loads_object(body)
    if event is None:
        return None
    if event.get("Type") == "Notification" and isinstance(event.get("Message"), str):
        event = _loads_object(event["Message"])
        if event is None:
            return None
    return parse_event(event)


def parse_event(event: Mapping[str, Any]) -> Optional[SecretEvent]:
    """Parse one EventBridge event (already decoded)."""
    if event.get("source") != SOURCE:
        return None
    detail = event.get("detail")
    if not isinstance(detail, dict):
        return None
    detail_type = event.get("detail-type")
    region = _str(event.get("region"))
    event_id = _str(event.get("id"))
    if detail_type == LABEL_UPDATED:
        return _label_updated(event, detail, region, event_id)
    if detail_type in (API_CALL, SERVICE_EVENT):
        return _cloudtrail(detail, region, event_id)
    return None


def _label_updated(
    event: Mapping[str, Any],
    detail: Mapping[str, Any],
    region: Optional[str],
    event_id: Optional[str],
) -> Optional[SecretEvent]:
    ids = _ids(*_str_list(event.get("resources")), _str(detail.get("name")))
    if not ids:
        return None
    label = _str(detail.get("labelUpdated"))
    return SecretEvent(
        kind=LABEL_UPDATED,
        secret_ids=ids,
        awscurrent_moved=None if label is None else label == _CURRENT,
        version_id=_str(detail.get("versionId")),
        region=region,
        event_id=event_id,
    )


def _cloudtrail(
    detail: Mapping[str, Any], region: Optional[str], event_id: Optional[str]
) -> Optional[SecretEvent]:
    name = detail.get("eventName")
    if detail.get("eventSource") not in (None, "secretsmanager.amazonaws.com"):
        return None
    if name not in API_CALLS + SERVICE_EVENTS:
        return None
    if detail.get("errorCode"):  # the call failed: nothing changed
        return None
    request = _dict(detail.get("requestParameters"))
    response = _dict(detail.get("responseElements"))
    additional = _dict(detail.get("additionalEventData"))
    service = _dict(detail.get("serviceEventDetails"))
    resource_arns = [
        _str(r.get("ARN") or r.get("arn"))
        for r in detail.get("resources") or []
        if isinstance(r, dict) and "secretsmanager" in str(r.get("ARN") or r.get("arn") or "")
    ]
    ids = _ids(
        _str(response.get("arn") or response.get("aRN") or response.get("ARN")),
        _str(additional.get("SecretId") or additional.get("secretId")),
        _str(service.get("SecretId") or service.get("secretId") or service.get("arn")),
        *resource_arns,
        _str(request.get("secretId") or request.get("SecretId")),
        _str(response.get("name")),
    )
    if not ids:
        return None
    moved: Optional[bool] = None
    version_id = _str(response.get("versionId"))
    if name == PUT_SECRET_VALUE:
        stages = response.get("versionStages") or request.get("versionStages")
        # Without VersionStages, PutSecretValue moves AWSCURRENT to the new version.
        moved = True if stages is None else _CURRENT in _str_list(stages)
    elif name == UPDATE_SECRET and version_id is not None:
        moved = True  # a new value: Secrets Manager moved AWSCURRENT to it
    elif name == UPDATE_SECRET_VERSION_STAGE:
        stage = _str(request.get("versionStage"))
        target = _str(request.get("moveToVersionId"))
        moved = stage == _CURRENT and target is not None
        version_id = target
    return SecretEvent(
        kind=str(name),
        secret_ids=ids,
        awscurrent_moved=moved,
        version_id=version_id,
        region=_str(detail.get("awsRegion")) or region,
        event_id=event_id,
    )


def match_certs(event: SecretEvent, certs: Mapping[str, str]) -> List[str]:
    """Names of the certificates (name -> configured secret ARN) that the event is about.

    Matches by full ARN, by ARN with or without the six-character random suffix (partial ARNs
    on either side), or by secret name when the event carries only a name (and, if the event
    names its region, the region matches).
    """
    matched = []
    for cert_name, configured in certs.items():
        if any(_same_secret(secret_id, configured, event.region) for secret_id in event.secret_ids):
            matched.append(cert_name)
    return sorted(matched)


def _same_secret(secret_id: str, configured: str, event_region: Optional[str]) -> bool:
    if secret_id == configured:
        return True
    if secret_id.startswith("arn:") and configured.startswith("arn:"):
        return _strip_suffix(secret_id) == configured or secret_id == _strip_suffix(configured)
    if secret_id.startswith("arn:"):  # configured by name, event has the ARN
        resource = _secret_name_part(secret_id)
        return configured in (resource, _strip_suffix(resource))
    if configured.startswith("arn:"):  # event has only the name
        if event_region and _arn_region(configured) not in (None, event_region):
            return False
        resource = _secret_name_part(configured)
        return secret_id in (resource, _strip_suffix(resource))
    return False


def _strip_suffix(arn_or_name: str) -> str:
    return _ARN_SUFFIX.sub("", arn_or_name)


def _secret_name_part(arn: str) -> str:
    _, _, resource = arn.partition(":secret:")
    return resource


def _arn_region(arn: str) -> Optional[str]:
    parts = arn.split(":")
    return parts[3] if len(parts) > 3 and parts[3] else None


def _loads_object(text: str) -> Optional[Dict[str, Any]]:
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _ids(*candidates: Optional[str]) -> Tuple[str, ...]:
    seen: List[str] = []
    for candidate in candidates:
        if candidate and candidate not in seen:
            seen.append(candidate)
    return tuple(seen)


def _str(value: Any) -> Optional[str]:
    return value if isinstance(value, str) and value else None


def _str_list(value: Any) -> List[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str) and v]
    return []


def _dict(value: Any) -> Dict[str, Any]:
    return value if isinstance(value, dict) else {}
