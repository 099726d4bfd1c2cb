"""The fleet in one view: this host's certificates (from ``state.json``) as an SSM Inventory custom
type and as a Prometheus textfile for node_exporter.

Pure: ``State`` and the time in, text out; writing the files is ``fleet_files.py``.

SSM Inventory. The SSM agent reads every ``*.json`` file under
``/var/lib/amazon/ssm/<instance-id>/inventory/custom/`` when its inventory association runs
(AWS-GatherSoftwareInventory with customInventory enabled, every 30 minutes at most) and uploads
it with the node's inventory: free for EC2 instances, queryable fleet-wide with ``aws ssm
get-inventory`` or a Resource Data Sync to S3 and Athena. The documented format, as the agent
checks it: ``{"SchemaVersion": "1.0", "TypeName": "Custom:...", "Content": [{...}, ...]}``;
TypeName at most 100 characters and starting ``Custom:``; SchemaVersion like ``1.0``; each
Content entry at most 50 attributes, names 1-64 characters, values strings of at most 4096; at
most 20 custom types per account. One entry per certificate, type ``Custom:CertpullCertificate``.

Prometheus. Text exposition format 0.0.4 for node_exporter's textfile collector: one gauge family
per fact, units in the names (``_timestamp_seconds`` are Unix times), the certificate's name as
the ``name`` label; identity (serial, SHA-256, version id) on ``certpull_certificate_info``.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional, Tuple

from certpull.state import CertState, State

INVENTORY_TYPE = "Custom:CertpullCertificate"
INVENTORY_SCHEMA_VERSION = "1.0"
INVENTORY_FILE = "CertpullCertificate.json"
MAX_ATTRIBUTES = 50
MAX_NAME_CHARS = 64
MAX_VALUE_CHARS = 4096
MAX_ENTRIES = 10000


# --- SSM Inventory ------------------------------------------------------------------------------


def inventory_entry(name: str, cert: CertState, agent_version: str) -> Dict[str, str]:
    """One certificate as a Content entry: strings only, empty for what is not known."""
    installed = cert.installed
    entry = {
        "Name": name,
        "SecretArn": cert.secret_arn,
        "VersionId": installed.version_id if installed else "",
        "Serial": installed.serial if installed else "",
        "FingerprintSha256": installed.fingerprint_sha256 if installed else "",
        "Subject": installed.subject if installed else "",
        "DnsNames": ", ".join(str(n) for n in installed.names) if installed else "",
        "NotBefore": _iso_text(installed.not_before) if installed else "",
        "NotAfter": _iso_text(installed.not_after) if installed else "",
        "KeyType": installed.key_type if installed else "",
        "CertificateArn": (installed.certificate_arn or "") if installed else "",
        "InstalledAt": _iso(installed.installed_at) if installed else "",
        "LastCheckAt": _iso(cert.last_check_at),
        "LastChangeAt": _iso(cert.last_change_at),
        "LastError": _one_line(cert.last_error),
        "LastErrorAt": _iso(cert.last_error_at),
        "ConsecutiveFailures": str(cert.consecutive_failures),
        "ServedMatches": _tristate(cert.last_verify_ok),
        "LastVerifyAt": _iso(cert.last_verify_at),
        "PendingVersionId": cert.pending.version_id if cert.pending else "",
        "HeldVersionId": cert.held_version_id or "",
        "AgentVersion": agent_version,
    }
    return {key: value[:MAX_VALUE_CHARS] for key, value in entry.items()}


def inventory_document(state: State, agent_version: str) -> Dict[str, Any]:
    """The custom inventory file's JSON document (certificates in name order)."""
    content = [
        inventory_entry(name, cert, agent_version)
        for name, cert in sorted(state.certs.items())[:MAX_ENTRIES]
    ]
    return {
        "SchemaVersion": INVENTORY_SCHEMA_VERSION,
        "TypeName": INVENTORY_TYPE,
        "Content": content,
    }


def inventory_json(state: State, agent_version: str) -> str:
    return json.dumps(inventory_document(state, agent_version), indent=1, sort_keys=True) + "\n"


# --- Prometheus textfile ------------------------------------------------------------------------

_FAMILIES: Tuple[Tuple[str, str, str], ...] = (
    ("certpull_certificate_info", "gauge", "Installed certificate's identity (value is 1)."),
    (
        "certpull_certificate_not_after_timestamp_seconds",
        "gauge",
        "Installed leaf's notAfter, Unix time.",
    ),
    (
        "certpull_certificate_not_before_timestamp_seconds",
        "gauge",
        "Installed leaf's notBefore, Unix time.",
    ),
    (
        "certpull_certificate_installed_timestamp_seconds",
        "gauge",
        "When the installed version was installed, Unix time.",
    ),
    ("certpull_last_check_timestamp_seconds", "gauge", "Last check against the secret, Unix time."),
    (
        "certpull_last_change_timestamp_seconds",
        "gauge",
        "Last time a new certificate was installed, Unix time.",
    ),
    ("certpull_last_check_success", "gauge", "1 if the last check succeeded, else 0."),
    ("certpull_consecutive_failures", "gauge", "Failed checks in a row."),
    (
        "certpull_served_matches_installed",
        "gauge",
        "1 if the served leaf equalled the installed one at the last verify, else 0.",
    ),
    ("certpull_pending_install", "gauge", "1 if a validated version waits for the install window."),
    ("certpull_version_held", "gauge", "1 if a rolled-back version is held back."),
    ("certpull_drift_total", "counter", "Changes to the live files made by someone else."),
    (
        "certpull_daemon_heartbeat_timestamp_seconds",
        "gauge",
        "The agent's last heartbeat, Unix time.",
    ),
)


def prometheus_text(state: State) -> str:
    """node_exporter textfile contents (exposition format 0.0.4)."""
    samples: Dict[str, List[Tuple[Dict[str, str], float]]] = {name: [] for name, _, _ in _FAMILIES}
    for name, cert in sorted(state.certs.items()):
        label = {"name": name}
        installed = cert.installed
        if installed is not None:
            info = {
                "name": name,
                "serial": installed.serial,
                "sha256": installed.fingerprint_sha256,
                "version_id": installed.version_id,
                "subject": installed.subject,
            }
            samples["certpull_certificate_info"].append((info, 1.0))
            _add(
                samples,
                "certpull_certificate_not_after_timestamp_seconds",
                label,
                _epoch(installed.not_after),
            )
            _add(
                samples,
                "certpull_certificate_not_before_timestamp_seconds",
                label,
                _epoch(installed.not_before),
            )
            _add(
                samples,
                "certpull_certificate_installed_timestamp_seconds",
                label,
                installed.installed_at or None,
            )
        _add(samples, "certpull_last_check_timestamp_seconds", label, cert.last_check_at)
        _add(samples, "certpull_last_change_timestamp_seconds", label, cert.last_change_at)
        if cert.last_check_at is not None:
            _add(samples, "certpull_last_check_success", label, 0.0 if cert.last_error else 1.0)
        _add(samples, "certpull_consecutive_failures", label, float(cert.consecutive_failures))
        if cert.last_verify_ok is not None:
            _add(samples, "certpull_served_matches_installed", label, float(cert.last_verify_ok))
        _add(samples, "certpull_pending_install", label, 1.0 if cert.pending else 0.0)
        _add(samples, "certpull_version_held", label, 1.0 if cert.held_version_id else 0.0)
        _add(samples, "certpull_drift_total", label, float(cert.drift_count))
    _add(samples, "certpull_daemon_heartbeat_timestamp_seconds", {}, state.daemon.heartbeat_at)
    lines: List[str] = []
    for family, kind, help_text in _FAMILIES:
        if not samples[family]:
            continue
        lines.append(f"# HELP {family} {help_text}")
        lines.append(f"# TYPE {family} {kind}")
        for labels, value in samples[family]:
            lines.append(f"{family}{_labels(labels)} {_number(value)}")
    return "\n".join(lines) + "\n" if lines else ""


def _add(
    samples: Dict[str, List[Tuple[Dict[str, str], float]]],
    family: str,
    labels: Dict[str, str],
    value: Optional[float],
) -> None:
    if value is not None and math.isfinite(value):
        samples[family].append((labels, float(value)))


def _labels(labels: Dict[str, str]) -> str:
    if not labels:
        return ""
    body = ",".join(f'{key}="{_escape(value)}"' for key, value in labels.items())
    return "{" + body + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


# --- shared -------------------------------------------------------------------------------------


def _epoch(text: str) -> Optional[float]:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _iso(epoch: Optional[float]) -> str:
    if epoch is None:
        return ""
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _iso_text(text: str) -> str:
    epoch = _epoch(text)
    return _iso(epoch) if epoch is not None else text


def _one_line(text: Optional[str]) -> str:
    return " ".join((text or "").split())


def _tristate(value: Optional[bool]) -> str:
    return "" if value is None else ("true" if value else "false")
