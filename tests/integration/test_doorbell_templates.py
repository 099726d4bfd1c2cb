"""The doorbell's CloudFormation (doorbell.yaml in the hosts' accounts, doorbell-forwarder.yaml in
the secrets' account): cfn-lint, and what the pieces do with a real Secret Label Updated event.

moto delivers neither EventBridge to SSM nor Automation, so the event's path is checked piece by
piece: the rule's pattern against the documented event, the input transformer's output against
the runbook's parameter pattern, the Run Command document's shell line (as SSM substitutes it)
against `certpull check-now`'s own parser, and the roles' statements.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
from typing import Any, Dict, List

import pytest

from certpull.check_now import add_parser
from tests.integration.test_packaging import TEMPLATES, cfn_lint, run, template

pytestmark = pytest.mark.integration

ARN = "arn:aws:secretsmanager:us-west-2:012345678901:secret:mySecret-a1b2c3"
# The example event of Secrets Manager's user guide ("Secret Label Updated event").
EVENT: Dict[str, Any] = {
    "version": "0",
    "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
    "detail-type": "Secret Label Updated",
    "source": "aws.secretsmanager",
    "account": "012345678901",
    "time": "2024-02-06T16:43:48Z",
    "region": "us-west-2",
    "resources": [ARN],
    "detail": {
        "name": "mySecret",
        "labelUpdated": "AWSCURRENT",
        "versionId": "a1b2c3d4-5678-90ab-cdef-EXAMPLE11111",
    },
}


def resources(name: str) -> Dict[str, Any]:
    found: Dict[str, Any] = template(name)["Resources"]
    return found


def matches(pattern: Dict[str, Any], event: Dict[str, Any], secret_arns: List[str]) -> bool:
    """EventBridge's matching for the pattern shapes used here (lists of exact values)."""
    for key, spec in pattern.items():
        value = event.get(key)
        wanted = secret_arns if spec == {"Ref": "SecretArns"} else spec
        if isinstance(wanted, dict):
            if not isinstance(value, dict) or not matches(wanted, value, secret_arns):
                return False
            continue
        values = value if isinstance(value, list) else [value]
        if not any(v in wanted for v in values):
            return False
    return True


def runbook() -> Dict[str, Any]:
    content: Dict[str, Any] = resources("doorbell.yaml")["RolloutRunbook"]["Properties"]["Content"]
    return content


def command_document() -> Dict[str, Any]:
    content: Dict[str, Any] = resources("doorbell.yaml")["CheckNowDocument"]["Properties"][
        "Content"
    ]
    return content


def test_cfn_lint_is_clean_on_the_doorbell_templates() -> None:
    paths = [str(TEMPLATES / "doorbell.yaml"), str(TEMPLATES / "doorbell-forwarder.yaml")]
    result = run([cfn_lint(), *paths])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", ["doorbell.yaml", "doorbell-forwarder.yaml"])
def test_the_rules_match_awscurrent_moving_and_nothing_else(name: str) -> None:
    rules = [r for r in resources(name).values() if isinstance(r, dict) and "Type" in r]
    if name == "doorbell-forwarder.yaml":
        _, _, body = resources(name)["Fn::ForEach::ForwardRules"]
        rules = list(body.values())
    (rule,) = [r for r in rules if r["Type"] == "AWS::Events::Rule"]
    pattern = rule["Properties"]["EventPattern"]
    assert matches(pattern, EVENT, [ARN])
    other_label = {**EVENT, "detail": {**EVENT["detail"], "labelUpdated": "MYLABEL"}}
    assert not matches(pattern, other_label, [ARN])
    assert not matches(pattern, EVENT, [ARN.replace("mySecret", "other")])
    cloudtrail = {**EVENT, "detail-type": "AWS API Call via CloudTrail"}
    assert not matches(pattern, cloudtrail, [ARN])


def test_the_rule_hands_the_runbook_a_secret_arn_it_accepts() -> None:
    (target,) = resources("doorbell.yaml")["DoorbellRule"]["Properties"]["Targets"]
    assert ":automation-definition/${RolloutRunbook}:$DEFAULT" in target["Arn"]["Fn::Sub"]
    assert target["RoleArn"] == {"Fn::GetAtt": "EventsRole.Arn"}
    transformer = target["InputTransformer"]
    assert transformer["InputPathsMap"] == {"secret": "$.resources[0]"}
    # EventBridge puts a string value in quotes where a placeholder stands outside quotes.
    rendered = transformer["InputTemplate"].replace("<secret>", json.dumps(EVENT["resources"][0]))
    parameters = json.loads(rendered)
    assert set(parameters) <= set(runbook()["parameters"])
    pattern = runbook()["parameters"]["SecretArn"]["allowedPattern"]
    (arn,) = parameters["SecretArn"]
    assert re.match(pattern, arn)


def test_the_runbook_runs_a_canary_wave_a_soak_then_the_fleet() -> None:
    steps = runbook()["mainSteps"]
    assert [(s["name"], s["action"]) for s in steps] == [
        ("canaryWave", "aws:runCommand"),
        ("soak", "aws:sleep"),
        ("fleetWave", "aws:runCommand"),
    ]
    canary, soak, fleet = steps
    assert canary["onFailure"] == "Abort" and canary["isCritical"] is True
    assert canary["nextStep"] == "soak" and soak["nextStep"] == "fleetWave"
    assert fleet["onFailure"] == "Abort" and fleet.get("isEnd") is True
    assert soak["inputs"]["Duration"] == {"Ref": "SoakDuration"}
    for step, concurrency, errors in (
        (canary, "CanaryMaxConcurrency", "CanaryMaxErrors"),
        (fleet, "FleetMaxConcurrency", "FleetMaxErrors"),
    ):
        inputs = step["inputs"]
        assert inputs["DocumentName"] == {"Ref": "CheckNowDocument"}
        assert inputs["MaxConcurrency"] == {"Ref": concurrency}
        assert inputs["MaxErrors"] == {"Ref": errors}
        assert inputs["Parameters"]["SecretArn"] == ["{{ SecretArn }}"]
    fleet_targets = fleet["inputs"]["Targets"]
    assert fleet_targets == [{"Key": "tag:certpull:fleet", "Values": [{"Ref": "FleetTagValue"}]}]
    # The canary is the fleet AND the canary tag: a subset of the second wave, never a stranger.
    assert canary["inputs"]["Targets"] == [
        *fleet_targets,
        {"Key": "tag:certpull:wave", "Values": [{"Ref": "CanaryTagValue"}]},
    ]


def test_a_canary_failure_stops_the_rollout_by_default() -> None:
    parameters = template("doorbell.yaml")["Parameters"]
    assert parameters["CanaryMaxErrors"]["Default"] == "0"
    for name in ("CanaryMaxConcurrency", "CanaryMaxErrors", "FleetMaxConcurrency", "SoakDuration"):
        spec = parameters[name]
        assert re.match(spec["AllowedPattern"], spec["Default"]), name
    assert not re.match(parameters["SoakDuration"]["AllowedPattern"], "10 minutes")


def command_line(secret_arn: str, timeout: str = "120") -> str:
    """The document's shell line as SSM renders it ({{ name }} replaced by the value)."""
    (step,) = command_document()["mainSteps"]
    (line,) = step["inputs"]["runCommand"]
    return line.replace("{{ SecretArn }}", secret_arn).replace("{{ TimeoutSeconds }}", timeout)


def test_the_host_command_is_check_now_with_the_secret() -> None:
    argv = shlex.split(command_line(ARN))
    assert argv[:2] == ["certpull", "check-now"]
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv[1:])
    assert (args.secret, args.timeout_s, args.names) == (ARN, 120.0, [])
    (step,) = command_document()["mainSteps"]
    assert step["action"] == "aws:runShellScript"
    assert int(step["inputs"]["timeoutSeconds"]) > 120  # the plugin outlives check-now's wait


@pytest.mark.parametrize(
    "value",
    [
        ARN + "'; rm -rf / #",
        ARN + "$(id)",
        ARN + " --no-fallback",
        ARN + "\nreboot",
        "`id`",
        "arn:aws:secretsmanager:us-west-2:012345678901:secret:a b",
    ],
)
def test_the_secret_parameter_cannot_break_out_of_its_shell_word(value: str) -> None:
    pattern = command_document()["parameters"]["SecretArn"]["allowedPattern"]
    assert not re.match(pattern, value)
    assert re.match(pattern, ARN)
    assert re.match(
        pattern, "arn:aws-us-gov:secretsmanager:us-gov-west-1:012345678901:secret:a/b_c+d=e.f@g-h"
    )


def policy_statements(role: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    return {
        s["Sid"]: s
        for policy in role["Properties"]["Policies"]
        for s in policy["PolicyDocument"]["Statement"]
    }


def test_the_automation_role_may_send_only_check_now_to_the_fleet() -> None:
    role = resources("doorbell.yaml")["AutomationRole"]
    trust = role["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]
    assert trust["Principal"] == {"Service": "ssm.amazonaws.com"}
    statements = policy_statements(role)
    document = statements["SendCheckNowDocument"]
    assert document["Action"] == "ssm:SendCommand"
    assert ":document/${CheckNowDocument}" in document["Resource"]["Fn::Sub"]
    instances = statements["SendToFleetInstances"]
    assert instances["Resource"]["Fn::Sub"].endswith(":instance/*")
    assert instances["Condition"] == {
        "StringEquals": {"ssm:resourceTag/certpull:fleet": {"Ref": "FleetTagValue"}}
    }
    assert all(
        s["Resource"] != "*" for s in statements.values() if "ssm:SendCommand" in s["Action"]
    )


def test_the_events_role_may_start_only_the_runbook_and_pass_only_its_role() -> None:
    role = resources("doorbell.yaml")["EventsRole"]
    trust = role["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]
    assert trust["Principal"] == {"Service": "events.amazonaws.com"}
    statements = policy_statements(role)
    assert set(statements) == {"StartRolloutRunbook", "PassAutomationRole"}
    start = statements["StartRolloutRunbook"]
    assert ":automation-definition/${RolloutRunbook}:*" in start["Resource"]["Fn::Sub"]
    passing = statements["PassAutomationRole"]
    assert passing["Resource"] == {"Fn::GetAtt": "AutomationRole.Arn"}
    assert passing["Condition"] == {"StringEquals": {"iam:PassedToService": "ssm.amazonaws.com"}}


def test_the_bus_accepts_only_secret_label_events_from_the_owner_accounts() -> None:
    policy = resources("doorbell.yaml")["OwnerAccountsPutEvents"]
    assert policy["Condition"] == "HasOwnerAccounts"
    statement = policy["Properties"]["Statement"]
    assert statement["Principal"] == {"AWS": {"Ref": "SecretOwnerAccountIds"}}
    assert statement["Action"] == "events:PutEvents"
    assert statement["Condition"]["StringEquals"] == {
        "events:source": "aws.secretsmanager",
        "events:detail-type": "Secret Label Updated",
    }


def test_the_forwarder_sends_to_each_consumers_default_bus_with_a_scoped_role() -> None:
    found = resources("doorbell-forwarder.yaml")
    _, collection, body = found["Fn::ForEach::ForwardRules"]
    assert collection == {"Ref": "ConsumerAccountIds"}
    ((logical_id, rule),) = body.items()
    assert "${AccountId}" in logical_id
    (target,) = rule["Properties"]["Targets"]
    arn_template, _ = target["Arn"]["Fn::Sub"]
    assert arn_template.endswith(":${AccountId}:event-bus/default")
    assert target["RoleArn"] == {"Fn::GetAtt": "ForwardRole.Arn"}
    (statement,) = policy_statements(found["ForwardRole"]).values()
    assert statement["Action"] == "events:PutEvents"
    assert statement["Condition"] == {
        "StringEquals": {"aws:ResourceAccount": {"Ref": "ConsumerAccountIds"}}
    }


def test_the_inventory_association_collects_custom_inventory() -> None:
    association = resources("doorbell.yaml")["InventoryAssociation"]
    assert association["Condition"] == "CreateInventoryAssociation"
    properties = association["Properties"]
    assert properties["Name"] == "AWS-GatherSoftwareInventory"
    assert properties["Parameters"]["customInventory"] == ["Enabled"]
    assert properties["Targets"] == [
        {"Key": "tag:certpull:fleet", "Values": [{"Ref": "FleetTagValue"}]}
    ]
