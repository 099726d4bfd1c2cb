"""The RPM's botocore service list covers every client the agent's code creates, and its parser.

packaging/rpm/botocore-services.txt decides which botocore models the RPM ships; a client of any
other service fails on the host with UnknownServiceError. This reads the agent's source (the
rotation package runs in Lambda with its own boto3, not from the RPM) for `.client("NAME", ...)` and
`.create_client("NAME", ...)` (and aws.py's `._new_client("NAME", ...)`) calls and checks each NAME is listed.
"""

from __future__ import annotations

import ast
import gzip
import json
from pathlib import Path
from typing import List, Set, Tuple

import pytest

from tests.rpm_build import REPO, bundled_services, trim_bundle

AGENT = REPO / "agent" / "certpull"
CLIENT_FACTORIES = ("client", "create_client", "_new_client")  # aws.py's helper is the last


def created_clients() -> List[Tuple[str, str]]:
    """(file:line, service) of every client created with a literal service name in the agent."""
    found = []
    for path in sorted(AGENT.rglob("*.py")):
        if "rotation" in path.relative_to(AGENT).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in CLIENT_FACTORIES
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                found.append((f"{path.relative_to(REPO)}:{node.lineno}", node.args[0].value))
    return found


def test_the_scan_finds_the_agents_clients() -> None:
    # Guards the scan itself: aws.py builds the Secrets Manager and SQS clients by name.
    services: Set[str] = {service for _, service in created_clients()}
    assert {"secretsmanager", "sqs"} <= services


def test_every_client_the_agent_creates_is_in_the_rpm() -> None:
    listed = set(bundled_services())
    missing = [(where, s) for where, s in created_clients() if s not in listed]
    assert missing == [], "add these to packaging/rpm/botocore-services.txt"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sqs\n", ["sqs"]),
        ("# comment only\n\n", []),
        ("  kms   # doctor: DescribeKey\nsts\n", ["kms", "sts"]),
    ],
)
def test_services_file_parser(tmp_path: Path, text: str, expected: List[str]) -> None:
    path = tmp_path / "services.txt"
    path.write_text(text)
    assert trim_bundle().read_services(path) == expected


def fake_site(root: Path) -> Path:
    """A site-packages shaped like the wheels' (two services, the packages trim_bundle removes)."""
    data = root / "botocore" / "data"
    for service, prefix in (("secretsmanager", "secretsmanager"), ("s3", "s3")):
        version = data / service / "2020-01-01"
        version.mkdir(parents=True)
        model = json.dumps({"metadata": {"endpointPrefix": prefix}}).encode()
        (version / "service-2.json.gz").write_bytes(gzip.compress(model))
    services = {"secretsmanager": {"endpoints": {}}, "s3": {"endpoints": {}}}
    partition = {"partition": "aws", "regions": {"us-east-1": {}}, "services": services}
    (data / "endpoints.json").write_text(json.dumps({"partitions": [partition], "version": 3}))
    (data / "partitions.json").write_text("{}")
    for relative, _why in trim_bundle().REMOVED:
        (root / relative).mkdir(parents=True, exist_ok=True)
        (root / relative / "x.py").write_text("")
    for dist, files in (
        (
            "botocore-1",
            ["botocore/data/endpoints.json", "botocore/data/s3/2020-01-01/service-2.json.gz"],
        ),
        ("cffi-2", ["cffi/x.py", "_cffi_backend.so"]),
        ("pycparser-2", ["pycparser/x.py"]),
    ):
        info = root / f"{dist}.dist-info"
        info.mkdir()
        rows = [f"{f},sha256=stale,1" for f in files] + [f"{dist}.dist-info/RECORD,,"]
        (info / "RECORD").write_text("\n".join(rows) + "\n")
    (root / "_cffi_backend.so").write_bytes(b"\x7fELF")
    return root


def test_trim_keeps_only_the_listed_services_and_a_consistent_record(tmp_path: Path) -> None:
    site = fake_site(tmp_path / "site")
    services = tmp_path / "services.txt"
    services.write_text("secretsmanager  # agent\n")

    assert trim_bundle().main(["trim_bundle.py", str(site), str(services)]) == 0

    data = site / "botocore" / "data"
    assert sorted(p.name for p in data.iterdir()) == [
        "endpoints.json",
        "partitions.json",
        "secretsmanager",
    ]
    endpoints = json.loads((data / "endpoints.json").read_text())
    assert list(endpoints["partitions"][0]["services"]) == ["secretsmanager"]
    assert endpoints["partitions"][0]["regions"] == {"us-east-1": {}}
    for relative, _why in trim_bundle().REMOVED:
        assert not (site / relative).exists()
    assert not list(site.glob("pycparser-*.dist-info"))
    record = (site / "botocore-1.dist-info/RECORD").read_text().splitlines()
    assert [r.split(",")[0] for r in record] == [
        "botocore/data/endpoints.json",
        "botocore-1.dist-info/RECORD",
    ]
    size = (data / "endpoints.json").stat().st_size
    assert record[0].endswith(f",{size}") and "stale" not in record[0]
    cffi_record = (site / "cffi-2.dist-info/RECORD").read_text()
    assert "cffi/x.py" not in cffi_record and "_cffi_backend.so" in cffi_record


def test_trim_refuses_a_service_botocore_does_not_have(tmp_path: Path) -> None:
    site = fake_site(tmp_path / "site")
    services = tmp_path / "services.txt"
    services.write_text("secretsmanager\nsecretmanager\n")
    with pytest.raises(SystemExit, match="secretmanager"):
        trim_bundle().main(["trim_bundle.py", str(site), str(services)])
    assert (site / "botocore" / "data" / "s3").is_dir()  # nothing removed


def test_trim_drops_the_kept_models_documentation_and_examples_but_no_member(
    tmp_path: Path,
) -> None:
    site = fake_site(tmp_path / "site")
    version = site / "botocore" / "data" / "secretsmanager" / "2020-01-01"
    model = {
        "metadata": {"endpointPrefix": "secretsmanager", "documentation": "<p>about</p>"},
        "documentation": "<p>the service</p>",
        "operations": {"DescribeSecret": {"name": "DescribeSecret", "documentation": "<p>x</p>"}},
        "shapes": {
            "Req": {
                "type": "structure",
                "members": {
                    "SecretId": {"shape": "Id", "documentation": "<p>which</p>"},
                    "documentation": {"shape": "Id"},  # a member named so is no doc string
                },
                "documentationUrl": "https://docs.aws.amazon.com/",
            },
            "Id": {"type": "string"},
        },
    }
    (version / "service-2.json.gz").write_bytes(gzip.compress(json.dumps(model).encode()))
    (version / "examples-1.json").write_text('{"examples": {}}')
    services = tmp_path / "services.txt"
    services.write_text("secretsmanager\n")

    assert trim_bundle().main(["trim_bundle.py", str(site), str(services)]) == 0

    kept = json.loads(gzip.decompress((version / "service-2.json.gz").read_bytes()))
    assert kept == {
        "metadata": {"endpointPrefix": "secretsmanager"},
        "operations": {"DescribeSecret": {"name": "DescribeSecret"}},
        "shapes": {
            "Req": {
                "type": "structure",
                "members": {"SecretId": {"shape": "Id"}, "documentation": {"shape": "Id"}},
            },
            "Id": {"type": "string"},
        },
    }
    assert not (version / "examples-1.json").exists()
