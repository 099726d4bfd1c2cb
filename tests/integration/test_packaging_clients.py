"""Every AWS client certpull builds works from the INSTALLED tree on Python 3.9, trimmed as shipped.

The RPM keeps only the botocore service models listed in packaging/rpm/botocore-services.txt
(packaging/rpm/trim_bundle.py removes the rest, and cffi's and pycparser's build-time code). Here
the built RPM is unpacked with rpm2cpio | cpio into a scratch root, and a CPython 3.9 in isolated
mode without its own site-packages (`-I -S`), with only that tree's agent/ and site-packages/ on
sys.path as the shipped launcher puts them, creates a client of every listed service against
moto's server and makes one real call with each; then `certpull --help`, `check-config` with the
shipped default config, and a real `certpull sync` (Secrets Manager and cryptography) run from the
tree. The services come from the same file the build reads, so the list cannot drift.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

from tests.aws_local import LocalAws
from tests.pki import Pki
from tests.rpm_build import LIB, bundled_services, extract_rpm, launcher_argv, run, trim_bundle

pytestmark = pytest.mark.integration

SERVICES = bundled_services()
REGION = "us-east-1"
BOTOCORE_OWN_FILES = (
    "endpoints.json",
    "partitions.json",
    "_retry.json",
    "sdk-default-configuration.json",
)

# Runs on the tree's Python 3.9: argv = tree (…/usr/lib/certpull), endpoint, {service: [op, params]}.
# Prints one JSON document: where boto3 and botocore came from, and per service the call's result.
PROBE = """
import json, sys
tree, endpoint, calls = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
sys.dont_write_bytecode = True
sys.path[0:0] = [tree + "/agent", tree + "/site-packages"]
import boto3, botocore.config, botocore.exceptions
config = botocore.config.Config(retries={"mode": "standard", "total_max_attempts": 1})
session = boto3.session.Session()
out = {"files": [boto3.__file__, botocore.__file__], "results": {}}
for service, (operation, params) in calls.items():
    try:
        client = session.client(service, region_name="us-east-1", endpoint_url=endpoint, config=config)
        out["results"][service] = {"ok": True, "response": getattr(client, operation)(**params)}
    except Exception as exc:
        out["results"][service] = {"ok": False, "error": type(exc).__name__ + ": " + str(exc)}
try:
    session.client("s3", region_name="us-east-1", endpoint_url=endpoint)
    out["unlisted"] = "created"
except botocore.exceptions.UnknownServiceError:
    out["unlisted"] = "UnknownServiceError"
print(json.dumps(out, default=str))
"""


@pytest.fixture(scope="module")
def tree(rpm_package: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """/usr/lib/certpull of the unpacked package."""
    root = extract_rpm(rpm_package, tmp_path_factory.mktemp("rpmtree"))
    return root / LIB.lstrip("/")


def one_call_each(aws: LocalAws) -> Tuple[Dict[str, List[Any]], Dict[str, Any]]:
    """{service: [operation, params]} for the probe, and what each response must hold.

    The resources are made here (this interpreter's boto3); the probe only reads them.
    """
    secret_arn = aws.client("secretsmanager").create_secret(
        Name=f"packaging-{os.getpid()}", SecretString="{}"
    )["ARN"]
    queue_url = aws.client("sqs").create_queue(QueueName=f"packaging-{os.getpid()}")["QueueUrl"]
    aws.client("sqs").send_message(QueueUrl=queue_url, MessageBody="rotated")
    key_id = aws.client("kms").create_key()["KeyMetadata"]["KeyId"]
    topic_arn = aws.client("sns").create_topic(Name=f"packaging-{os.getpid()}")["TopicArn"]
    calls: Dict[str, List[Any]] = {
        "secretsmanager": ["describe_secret", {"SecretId": secret_arn}],
        "sts": ["get_caller_identity", {}],
        "sqs": ["receive_message", {"QueueUrl": queue_url, "WaitTimeSeconds": 0}],
        "kms": ["describe_key", {"KeyId": key_id}],
        "sns": ["get_topic_attributes", {"TopicArn": topic_arn}],
    }
    expected: Dict[str, Any] = {
        "secretsmanager": lambda r: r["ARN"] == secret_arn,
        "sts": lambda r: r["Account"].isdigit(),
        "sqs": lambda r: [m["Body"] for m in r["Messages"]] == ["rotated"],
        "kms": lambda r: r["KeyMetadata"]["KeyId"] == key_id,
        "sns": lambda r: r["Attributes"]["TopicArn"] == topic_arn,
    }
    return calls, expected


@pytest.fixture(scope="module")
def probed(tree: Path, python39: str, local_aws: LocalAws) -> Dict[str, Any]:
    calls, expected = one_call_each(local_aws)
    unknown = sorted(set(SERVICES) - set(calls))
    assert not unknown, f"add one real call for {unknown} to one_call_each()"
    listed = {service: calls[service] for service in SERVICES}
    result = run(
        [python39, "-I", "-S", "-c", PROBE, str(tree), local_aws.endpoint_url, json.dumps(listed)]
    )
    assert result.returncode == 0, result.stderr
    out: Dict[str, Any] = json.loads(result.stdout)
    out["expected"] = expected
    return out


def run_launcher(python39: str, tree: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The shipped /usr/bin/certpull with its shebang's flags, also without the interpreter's site."""
    return run([*launcher_argv(python39, tree.parents[2], "-S"), *args])


def test_services_file_lists_the_agents_services() -> None:
    assert {"secretsmanager", "sts", "sqs", "kms"} <= set(SERVICES)
    assert len(SERVICES) == len(set(SERVICES))


def test_installed_botocore_data_holds_exactly_the_listed_services(tree: Path) -> None:
    data = tree / "site-packages/botocore/data"
    assert sorted(p.name for p in data.iterdir() if p.is_dir()) == sorted(SERVICES)
    for name in BOTOCORE_OWN_FILES:
        assert (data / name).is_file(), name
    endpoints = json.loads((data / "endpoints.json").read_text())
    aws = next(p for p in endpoints["partitions"] if p["partition"] == "aws")
    assert set(aws["services"]) == set(SERVICES)  # their endpoint prefixes equal their names
    assert "us-east-1" in aws["regions"]


def test_installed_tree_has_none_of_the_removed_packages(tree: Path) -> None:
    site = tree / "site-packages"
    for relative, _why in trim_bundle().REMOVED:
        assert not (site / relative).exists(), relative
    assert list(site.glob("_cffi_backend*.so")), "cryptography needs cffi's _cffi_backend"


@pytest.mark.parametrize("service", SERVICES)
def test_client_is_created_and_called_from_the_installed_tree(
    probed: Dict[str, Any], tree: Path, service: str
) -> None:
    for path in probed["files"]:
        assert path.startswith(str(tree)), path
    result = probed["results"][service]
    assert result["ok"], result.get("error")
    assert probed["expected"][service](result["response"]), result["response"]


def test_a_client_of_an_unlisted_service_is_refused(probed: Dict[str, Any]) -> None:
    # Proves the probe ran on the trimmed botocore: s3's model is not shipped.
    assert probed["unlisted"] == "UnknownServiceError"


def test_installed_help_lists_the_commands(tree: Path, python39: str) -> None:
    result = run_launcher(python39, tree, "--help")
    assert result.returncode == 0, result.stderr
    for command in ("run", "sync", "status", "check-config", "verify", "rollback"):
        assert command in result.stdout


def test_installed_check_config_accepts_the_shipped_config(tree: Path, python39: str) -> None:
    config = tree.parents[2] / "etc/certpull/certpull.conf"
    result = run_launcher(python39, tree, "-c", str(config), "check-config")
    assert result.returncode == 0, result.stdout + result.stderr


def test_installed_sync_installs_a_secret(
    tree: Path, python39: str, local_aws: LocalAws, pki: Pki, tmp_path: Path
) -> None:
    # A whole pass on the trimmed tree: GetSecretValue, cryptography's validation without cffi's
    # Python package, the ..data store, state.json. No httpd: the pid file is absent.
    leaf = pki.leaf()
    arn = local_aws.client("secretsmanager").create_secret(
        Name=f"packaging-sync-{os.getpid()}", SecretString=pki.secret_string(leaf)
    )["ARN"]
    config = tmp_path / "certpull.conf"
    config.write_text(
        "[agent]\n"
        f"endpoint_url = {local_aws.endpoint_url}\n"
        f"live_dir = {tmp_path / 'live'}\n"
        f"state_dir = {tmp_path / 'state'}\n"
        f"httpd_pid_file = {tmp_path / 'no-httpd.pid'}\n"
        "reload_command = /bin/true\n"
        "configtest_command = /bin/true\n"
        "start_command = /bin/true\n"
        f"\n[cert:www]\nsecret_arn = {arn}\nserver_name = www.example.com\n"
    )
    result = run_launcher(python39, tree, "-c", str(config), "sync")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "live/www/cert.pem").read_text().strip() == leaf.pem.strip()
