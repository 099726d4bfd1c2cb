"""The fleet view: the SSM custom inventory document checked against the rules the SSM agent's
custom-inventory gatherer enforces, the Prometheus textfile parsed by prometheus_client's parser,
and the atomic writes on real files in tmp_path."""

from __future__ import annotations

import json
import os
import re
import stat
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List

import pytest
from prometheus_client.parser import text_string_to_metric_families

from certpull.fleet_files import FleetFiles, inventory_dir, write_atomic
from certpull.fleet_view import INVENTORY_FILE, inventory_document, inventory_json, prometheus_text
from certpull.state import Installed, Pending, State

ARN = "arn:aws:secretsmanager:us-east-1:111122223333:secret:www-tls-AbCdEf"


def agent_rules(document: Dict[str, Any]) -> List[str]:
    """What amazon-ssm-agent's custom gatherer (plugins/inventory/gatherers/custom) and
    PutInventory refuse: TypeName "Custom:" and <= 100 chars, SchemaVersion ^\\d{1,6}\\.\\d{1,6}$,
    Content an object or a list of objects, <= 50 attributes each, names 1-64 chars, values
    strings of <= 4096 chars, <= 10,000 entries."""
    problems = []
    type_name = document.get("TypeName")
    if (
        not isinstance(type_name, str)
        or not type_name.startswith("Custom:")
        or len(type_name) > 100
    ):
        problems.append("TypeName")
    if not re.match(r"^([0-9]{1,6})(\.[0-9]{1,6})$", str(document.get("SchemaVersion", ""))):
        problems.append("SchemaVersion")
    content = document.get("Content")
    entries = content if isinstance(content, list) else [content]
    if not isinstance(content, (list, dict)) or len(entries) > 10_000:
        problems.append("Content")
    for entry in entries:
        if not isinstance(entry, dict) or len(entry) > 50:
            problems.append("entry")
            continue
        for key, value in entry.items():
            if not 1 <= len(key) <= 64 or not isinstance(value, str) or len(value) > 4096:
                problems.append(f"attribute {key[:70]}")
    return problems


def installed(**overrides: Any) -> Installed:
    values: Dict[str, Any] = {
        "version_id": "v-2",
        "store_version": "..2026_11_29",
        "serial": "0x1a2b3c",
        "fingerprint_sha256": "ab" * 32,
        "subject": "CN=www.example.com",
        "names": ["www.example.com", "127.0.0.1"],
        "not_before": "2026-11-01T00:00:00+00:00",
        "not_after": "2027-11-01T00:00:00+00:00",
        "key_type": "EC P-256",
        "certificate_arn": "arn:aws:acm-pca:us-east-1:111122223333:certificate-authority/x/certificate/y",
        "installed_at": 1_795_000_000.0,
    }
    values.update(overrides)
    return Installed(**values)


def sample_state() -> State:
    state = State()
    www = state.cert("www")
    www.secret_arn = ARN
    www.installed = installed()
    www.last_check_at = 1_796_000_000.0
    www.last_change_at = 1_795_000_000.0
    www.last_verify_ok = True
    www.last_verify_at = 1_795_000_001.5
    www.drift_count = 2
    api = state.cert("api")
    api.secret_arn = ARN.replace("www", "api")
    api.last_check_at = 1_796_000_100.0
    api.last_error = 'api (arn:...): PRIVATE_KEY_PEM does not match\nCERTIFICATE_PEM "x"'
    api.last_error_at = 1_796_000_100.0
    api.consecutive_failures = 3
    api.pending = Pending(version_id="v-9", serial="0x9", not_after="", found_at=1.0)
    api.held_version_id = "v-8"
    state.daemon.heartbeat_at = 1_796_000_200.0
    return state


# --- SSM Inventory ------------------------------------------------------------------------------


def test_the_inventory_document_passes_the_agents_rules() -> None:
    document = inventory_document(sample_state(), "0.1.0")
    assert agent_rules(document) == []
    assert document["TypeName"] == "Custom:CertpullCertificate"
    assert document["SchemaVersion"] == "1.0"
    api, www = document["Content"]
    assert www["Name"] == "www" and api["Name"] == "api"
    assert www["Serial"] == "0x1a2b3c" and www["FingerprintSha256"] == "ab" * 32
    assert www["NotAfter"] == "2027-11-01T00:00:00Z" and www["VersionId"] == "v-2"
    assert www["ServedMatches"] == "true" and www["LastError"] == ""
    assert www["LastCheckAt"] == datetime.fromtimestamp(1_796_000_000, timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    assert api["Serial"] == "" and api["ServedMatches"] == ""
    assert api["LastError"] == 'api (arn:...): PRIVATE_KEY_PEM does not match CERTIFICATE_PEM "x"'
    assert api["ConsecutiveFailures"] == "3"
    assert (api["PendingVersionId"], api["HeldVersionId"]) == ("v-9", "v-8")


def test_long_values_are_cut_to_the_limit() -> None:
    state = State()
    state.cert("www").installed = installed(names=[f"host{i}.example.com" for i in range(500)])
    document = inventory_document(state, "0.1.0")
    assert agent_rules(document) == []
    assert len(document["Content"][0]["DnsNames"]) == 4096


def test_no_certificates_is_an_empty_content_list() -> None:
    document = json.loads(inventory_json(State(), "0.1.0"))
    assert document["Content"] == [] and agent_rules(document) == []


@pytest.mark.parametrize(
    "bad",
    [
        {"SchemaVersion": "1.0", "TypeName": "AWS:Certs", "Content": []},
        {"SchemaVersion": "v1", "TypeName": "Custom:Certs", "Content": []},
        {"SchemaVersion": "1.0", "TypeName": "Custom:Certs", "Content": [{"Days": 30}]},
        {
            "SchemaVersion": "1.0",
            "TypeName": "Custom:Certs",
            "Content": [{f"a{i}": "" for i in range(51)}],
        },
        {"SchemaVersion": "1.0", "TypeName": "Custom:Certs", "Content": [{"x" * 65: ""}]},
    ],
)
def test_the_rules_catch_what_the_agent_refuses(bad: Dict[str, Any]) -> None:
    assert agent_rules(bad)


# --- Prometheus ---------------------------------------------------------------------------------


def families(text: str) -> Dict[str, Any]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def test_the_textfile_parses_and_says_what_the_state_says() -> None:
    text = prometheus_text(sample_state())
    found = families(text)
    info = found["certpull_certificate_info"]
    (sample,) = info.samples
    assert sample.labels == {
        "name": "www",
        "serial": "0x1a2b3c",
        "sha256": "ab" * 32,
        "version_id": "v-2",
        "subject": "CN=www.example.com",
    }

    def value(family: str, name: str) -> float:
        (s,) = [s for s in found[family].samples if s.labels.get("name") == name]
        return float(s.value)

    not_after = datetime(2027, 11, 1, tzinfo=timezone.utc).timestamp()
    assert value("certpull_certificate_not_after_timestamp_seconds", "www") == not_after
    assert (
        value("certpull_last_check_success", "www") == 1
        and value("certpull_last_check_success", "api") == 0
    )
    assert value("certpull_consecutive_failures", "api") == 3
    assert value("certpull_served_matches_installed", "www") == 1
    assert (
        value("certpull_pending_install", "api") == 1 and value("certpull_version_held", "api") == 1
    )
    assert found["certpull_drift"].type == "counter" and value("certpull_drift", "www") == 2
    (beat,) = found["certpull_daemon_heartbeat_timestamp_seconds"].samples
    assert beat.value == 1_796_000_200.0
    assert not [
        s
        for s in found["certpull_certificate_not_after_timestamp_seconds"].samples
        if s.labels["name"] == "api"
    ]


def test_every_family_has_help_type_and_a_unit_in_its_name() -> None:
    text = prometheus_text(sample_state())
    lines = text.splitlines()
    declared = [line.split()[2] for line in lines if line.startswith("# TYPE ")]
    assert declared == sorted(set(declared), key=declared.index)  # each once
    for name in declared:
        assert f"# HELP {name} " in text
        assert re.match(r"^certpull_[a-z_]+$", name)
        assert name.endswith(
            (
                "_seconds",
                "_total",
                "_info",
                "_success",
                "_failures",
                "_installed",
                "_install",
                "_held",
            )
        ), name
    for line in lines:
        if not line.startswith("#"):
            assert re.match(r'^[a-z_]+(\{([a-z0-9_]+="([^"\\]|\\.)*",?)+\})? -?[0-9.e+]+$', line), (
                line
            )


def test_label_values_are_escaped() -> None:
    state = State()
    state.cert("www").installed = installed(subject='CN=a "quoted" \\ name\nnext')
    (sample,) = families(prometheus_text(state))["certpull_certificate_info"].samples
    assert sample.labels["subject"] == 'CN=a "quoted" \\ name\nnext'


def test_nothing_known_is_an_empty_textfile() -> None:
    assert prometheus_text(State()) == ""


# --- writing ------------------------------------------------------------------------------------


def test_write_atomic_replaces_whole_and_skips_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "certpull.prom"
    assert write_atomic(str(path), b"a 1\n") is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    before = path.stat().st_ino
    assert write_atomic(str(path), b"a 1\n") is False
    assert path.stat().st_ino == before  # not rewritten
    assert write_atomic(str(path), b"a 2\n") is True
    assert path.read_bytes() == b"a 2\n" and path.stat().st_ino != before  # a new file, renamed
    assert sorted(os.listdir(tmp_path)) == ["certpull.prom"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "certpull.prom"
    path.write_bytes(b"old 1\n")
    with pytest.raises(TypeError):
        write_atomic(str(path), "not bytes")  # type: ignore[arg-type]
    assert path.read_bytes() == b"old 1\n"
    assert sorted(os.listdir(tmp_path)) == ["certpull.prom"]


def test_publish_writes_where_the_readers_look(tmp_path: Path) -> None:
    ssm = tmp_path / "ssm"
    custom = Path(inventory_dir("i-0123456789abcdef0", str(ssm)))
    custom.mkdir(parents=True)
    textfiles = tmp_path / "textfile_collector"
    textfiles.mkdir()
    files = FleetFiles(inventory_dir=str(custom), prometheus_dir=str(textfiles))
    assert files.publish(sample_state(), "0.1.0") == []
    assert custom == ssm / "i-0123456789abcdef0" / "inventory" / "custom"
    document = json.loads((custom / INVENTORY_FILE).read_text())
    assert INVENTORY_FILE.endswith(".json") and agent_rules(document) == []
    assert "certpull_certificate_info" in families((textfiles / "certpull.prom").read_text())


def test_publish_without_an_ssm_agent_writes_no_inventory(tmp_path: Path) -> None:
    absent = tmp_path / "ssm" / "i-0123456789abcdef0" / "inventory" / "custom"
    assert FleetFiles(inventory_dir=str(absent)).publish(sample_state(), "0.1.0") == []
    assert not (tmp_path / "ssm").exists()


def test_publish_reports_a_failure_in_one_line(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    (problem,) = FleetFiles(prometheus_dir=str(not_a_dir)).publish(sample_state(), "0.1.0")
    assert problem.startswith(f"Prometheus textfile: cannot write {not_a_dir}/certpull.prom: ")
    assert "\n" not in problem
