"""docs/migration.md's AWS CLI commands, run as written against moto, on an account left by the sample.

The guide marks its runnable blocks with ``<!-- migration-test: NAME -->``: ``variables`` (the
test supplies its own value for every variable named there), ``file NAME`` (written to that file),
``host-config`` (a host's certpull.conf, exercised by test_migration_host.py), and command blocks, run in order by bash (``set -euo pipefail``) with the real AWS CLI from PyPI
and ``AWS_ENDPOINT_URL`` at moto's server. Shell variables a block sets carry over to the next.

The account is prepared the way the sample leaves one: a secret filled by the sample's rotation
function (``tests/sample_lambda.py``) whose rotation names that function, the ``RunUpdateTLS``
document run by a maintenance window and by an EventBridge rule, plus a window and a rule target
that have nothing to do with it (they must survive). Between ``rotate`` and ``check`` the test does
what Secrets Manager does on AWS: it runs the four steps of certpull's rotation function.

moto gaps: its Lambda runs no code (so the steps are run here); its CloudFormation creates the
function and role of rotation.yaml but not the example secret and schedule.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest
from botocore.exceptions import ClientError
from cryptography import x509

from certpull.rotation.issuers import AwsIssuers
from certpull.rotation.steps import STEPS, Rotation
from tests.aws_local import MOTO_VERSION, LocalAws
from tests.sample_lambda import SampleLambda, sample_settings, settings_of

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        MOTO_VERSION < (5, 2),
        reason="moto < 5.2 (the last for Python 3.9) does not create rotation.yaml's function",
    ),
]

REPO = Path(__file__).resolve().parents[2]
GUIDE = REPO / "docs" / "migration.md"
MARK = re.compile(
    r"^<!-- migration-test: (?P<name>[^>]+?) -->\n```[a-z]*\n(?P<body>.*?)^```", re.M | re.S
)
ASSIGNMENT = re.compile(r"^\s*(?:export\s+)?([A-Z][A-Z0-9_]*)=", re.M)
REGION = "us-east-1"
OLD_FUNCTION = "sample-rotate-function"
CN = "www.example.com"


def blocks() -> List[Tuple[str, str]]:
    """(name, body) of every marked block of the guide, in order."""
    return [(m.group("name"), m.group("body")) for m in MARK.finditer(GUIDE.read_text())]


def aws_cli() -> str:
    for candidate in (Path(sys.executable).parent / "aws", REPO / ".venv" / "bin" / "aws"):
        if candidate.is_file():
            return str(candidate.parent)
    found = shutil.which("aws")
    assert found, "the AWS CLI is not installed (pip install awscli; it is in the test extras)"
    return str(Path(found).parent)


class Guide:
    """Runs the guide's blocks in one working directory, carrying shell variables across."""

    def __init__(self, aws: LocalAws, cwd: Path, values: Dict[str, str]) -> None:
        self.cwd = cwd
        self.values = values
        self.names = sorted({n for _, body in blocks() for n in ASSIGNMENT.findall(body)})
        self.state = cwd / ".guide-state.sh"
        self.env = dict(os.environ)
        self.env.update(
            {
                "AWS_ENDPOINT_URL": aws.endpoint_url,
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": REGION,
                "AWS_PAGER": "",
                "PATH": aws_cli() + os.pathsep + self.env.get("PATH", ""),
            }
        )

    def variables(self, body: str) -> None:
        named = ASSIGNMENT.findall(body)
        missing = [n for n in named if n not in self.values]
        assert not missing, f"the guide's variables block names {missing}: give the test values"
        self.state.write_text("".join(f"export {n}={json.dumps(self.values[n])}\n" for n in named))

    def run(self, name: str, body: str) -> str:
        script = (
            "set -euo pipefail\n"
            f"source {self.state}\n"
            f"{body}\n"
            f"declare -p {' '.join(self.names)} 2>/dev/null > {self.state}.new || true\n"
            f"mv {self.state}.new {self.state}\n"
        )
        done = subprocess.run(
            ["bash", "-c", script],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, f"guide block {name!r} failed:\n{done.stdout}\n{done.stderr}"
        return done.stdout


# --- the account the sample leaves --------------------------------------------------------------


def noop_function(aws: LocalAws, name: str) -> str:
    iam = aws.client("iam")
    role = iam.create_role(
        RoleName=f"{name}-role",
        AssumeRolePolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "lambda.amazonaws.com"},
                        "Action": "sts:AssumeRole",
                    }
                ],
            }
        ),
    )["Role"]["Arn"]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("sm_rotate_secrets.py", "def lambda_handler(event, context):\n    pass\n")
    arn: str = aws.client("lambda").create_function(
        FunctionName=name,
        Runtime="python3.8",
        Role=role,
        Handler="sm_rotate_secrets.lambda_handler",
        Code={"ZipFile": buffer.getvalue()},
    )["FunctionArn"]
    return arn


def sample_account(aws: LocalAws, bucket: str) -> Dict[str, Any]:
    """What the sample's stacks and rotations leave in an account (and two things of others)."""
    ca_arn = aws.create_private_ca(common_name="migration root", key_algorithm="RSA_2048")
    sm = aws.client("secretsmanager")
    secret_arn = sm.create_secret(
        Name="www-tls", SecretString=json.dumps(sample_settings(ca_arn, CN))
    )["ARN"]
    old_arn = noop_function(aws, OLD_FUNCTION)
    token = sm.rotate_secret(
        SecretId=secret_arn, RotationLambdaARN=old_arn, RotationRules={"AutomaticallyAfterDays": 30}
    )["VersionId"]
    SampleLambda(sm, aws.client("acm-pca")).rotate(secret_arn, token)  # a CN-only leaf

    ssm = aws.client("ssm")
    ssm.create_document(  # stands for the sample's document (its steps are not run by moto)
        Name="RunUpdateTLS",
        DocumentType="Command",
        Content=json.dumps(
            {
                "schemaVersion": "2.2",
                "description": "UpdateTLS on Apache Instance",
                "parameters": {"SecretARN": {"type": "String"}},
                "mainSteps": [
                    {
                        "action": "aws:runShellScript",
                        "name": "UpdateApacheFiles",
                        "inputs": {"runCommand": ["echo copy the secret, then restart httpd"]},
                    }
                ],
            }
        ),
    )
    windows = {}
    for window_name, task in (("tls-update", "RunUpdateTLS"), ("patching", "AWS-RunPatchBaseline")):
        window_id = ssm.create_maintenance_window(
            Name=window_name,
            Schedule="cron(0 2 ? * SUN *)",
            Duration=2,
            Cutoff=1,
            AllowUnassociatedTargets=False,
        )["WindowId"]
        target_id = ssm.register_target_with_maintenance_window(
            WindowId=window_id,
            ResourceType="INSTANCE",
            Targets=[{"Key": "tag:Role", "Values": ["web"]}],
        )["WindowTargetId"]
        ssm.register_task_with_maintenance_window(
            WindowId=window_id,
            TaskArn=task,
            TaskType="RUN_COMMAND",
            Targets=[{"Key": "WindowTargetIds", "Values": [target_id]}],
            MaxConcurrency="1",
            MaxErrors="1",
        )
        windows[window_name] = window_id

    events = aws.client("events")
    account = aws.client("sts").get_caller_identity()["Account"]
    doc_arn = f"arn:aws:ssm:{REGION}:{account}:document/RunUpdateTLS"
    events.put_rule(
        Name="run-update-tls", EventPattern=json.dumps({"source": ["aws.secretsmanager"]})
    )
    queue_url = aws.client("sqs").create_queue(QueueName="audit")["QueueUrl"]
    queue_arn = aws.client("sqs").get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["QueueArn"]
    )["Attributes"]["QueueArn"]
    events.put_targets(
        Rule="run-update-tls",
        Targets=[
            {
                "Id": "update-tls",
                "Arn": doc_arn,
                "RoleArn": f"arn:aws:iam::{account}:role/run-command",
                "RunCommandParameters": {
                    "RunCommandTargets": [{"Key": "tag:Role", "Values": ["web"]}]
                },
            },
            {"Id": "audit", "Arn": queue_arn},
        ],
    )
    aws.client("s3").create_bucket(Bucket=bucket)
    return {"ca_arn": ca_arn, "secret_arn": secret_arn, "old_arn": old_arn, "windows": windows}


def current_doc(aws: LocalAws, secret_arn: str) -> Dict[str, Any]:
    got = aws.client("secretsmanager").get_secret_value(
        SecretId=secret_arn, VersionStage="AWSCURRENT"
    )
    doc: Dict[str, Any] = json.loads(got["SecretString"])
    return doc


def test_the_guides_aws_commands_migrate_a_sample_account(
    tmp_path: Path, local_aws: LocalAws
) -> None:
    bucket = "certpull-migration-artifacts"
    account = sample_account(local_aws, bucket)
    before = current_doc(local_aws, account["secret_arn"])
    (tmp_path / "packaging").symlink_to(REPO / "packaging")
    (tmp_path / "dist").mkdir()
    (tmp_path / "dist" / "certpull-rotation.zip").write_bytes(b"PK\x05\x06" + b"\0" * 18)
    guide = Guide(
        local_aws,
        tmp_path,
        {
            "AWS_REGION": REGION,
            "SECRET_ARN": account["secret_arn"],
            "OLD_FUNCTION": OLD_FUNCTION,
            "CA_ARN": account["ca_arn"],
            "CODE_BUCKET": bucket,
        },
    )
    ssm = local_aws.client("ssm")
    sm = local_aws.client("secretsmanager")
    ran = []
    for name, body in blocks():
        ran.append(name)
        if name == "variables":
            guide.variables(body)
            continue
        if (
            name == "host-config"
        ):  # a host's certpull.conf: tests/integration/test_migration_host.py
            continue
        if name.startswith("file "):
            (tmp_path / name.split(" ", 1)[1]).write_text(body)
            continue
        out = guide.run(name, body)

        if name == "retire":
            assert "cron(0 2 ? * SUN *)" in out  # the schedule to carry into install_window
            with pytest.raises(ClientError):
                ssm.describe_document(Name="RunUpdateTLS")
            windows = ssm.describe_maintenance_windows()["WindowIdentities"]
            assert [w["Name"] for w in windows] == ["patching"]  # only the other window is left
            (task,) = ssm.describe_maintenance_window_tasks(WindowId=windows[0]["WindowId"])[
                "Tasks"
            ]
            assert task["TaskArn"] == "AWS-RunPatchBaseline"
            targets = local_aws.client("events").list_targets_by_rule(Rule="run-update-tls")
            assert [t["Id"] for t in targets["Targets"]] == ["audit"]
        elif name == "fleet":
            commands = ssm.list_commands()["Commands"]
            assert [(c["MaxConcurrency"], c["MaxErrors"]) for c in commands] == [
                ("1", "0"),
                ("10%", "0"),
            ]
            script = commands[0]["Parameters"]["commands"]
            assert "certpull sync" in script and "update-ca-trust extract" in script
        elif name == "deploy":
            assert account["secret_arn"] in out  # listed as a secret the sample rotates
        elif name == "rotate":
            # Secrets Manager now calls the new function with the pending version's token.
            stages = sm.describe_secret(SecretId=account["secret_arn"])["VersionIdsToStages"]
            (token,) = [v for v, s in stages.items() if s == ["AWSPENDING"]]
            rotation = Rotation(sm, AwsIssuers(local_aws.client))
            for step in STEPS:
                rotation.run(account["secret_arn"], token, step)
        elif name == "check":
            assert "certpull-rotation-rotation" in out  # the new RotationLambdaARN
            assert f"DNS:{CN}" in out  # the leaf has a subjectAltName now
            assert out.rstrip().endswith("settings unchanged")
        elif name == "cleanup":
            assert ":secretsmanager:" not in out  # no secret names the sample's function any more
            with pytest.raises(ClientError):
                local_aws.client("lambda").get_function(FunctionName=OLD_FUNCTION)

    assert ran == [
        "variables",
        "retire",
        "host-config",
        "file install-certpull.json",
        "fleet",
        "deploy",
        "rotate",
        "check",
        "cleanup",
    ]
    after = current_doc(local_aws, account["secret_arn"])
    assert settings_of(after) == settings_of(before)
    cert = x509.load_pem_x509_certificate(after["CERTIFICATE_PEM"].encode())
    assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert after["PRIVATE_KEY_PEM"] != before["PRIVATE_KEY_PEM"]
