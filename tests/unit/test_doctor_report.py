"""doctor_report: the text an operator reads, the JSON automation reads, the exit code."""

from __future__ import annotations

import json

from certpull.doctor_report import (
    EXIT_ALL_PASSED,
    EXIT_FAILED,
    Fix,
    Report,
    failed,
    not_applicable,
    passed,
    render_text,
)

STATEMENT = {
    "Effect": "Allow",
    "Action": "kms:Decrypt",
    "Resource": "arn:aws:kms:us-east-1:111122223333:key/k",
}


def report() -> Report:
    return Report(
        [
            passed(
                "identity", "identity", "arn:aws:iam::123456789012:user/web (account 123456789012)"
            ),
            not_applicable("imds", "IMDSv2", "the credentials come from environment variables"),
            failed(
                "www.get_value",
                "GetSecretValue",
                "Secrets Manager may not use the secret's KMS key for this principal",
                "www",
                cause="kms_denied",
                facts=(
                    ("principal", "arn:aws:iam::123456789012:user/web"),
                    ("AWS said", "AccessDeniedException: Access to KMS is not allowed"),
                ),
                fixes=(
                    Fix(
                        "add this statement to the identity policy of user web (account 123456789012)",
                        statement=STATEMENT,
                        commands=("aws iam put-user-policy --user-name web ...",),
                        inferred_from="the denial",
                    ),
                ),
            ),
        ]
    )


def test_exit_code_is_one_only_when_a_check_failed() -> None:
    assert report().exit_code == EXIT_FAILED
    only_good = Report([c for c in report().checks if c.result.value != "failed"])
    assert only_good.exit_code == EXIT_ALL_PASSED


def test_text_has_a_summary_one_line_per_check_and_the_fix_under_the_failure() -> None:
    lines = render_text(report()).splitlines()
    assert lines[0] == "certpull doctor: FAILED - 3 checks: 1 passed, 1 failed, 1 do not apply"
    assert lines[1].startswith("ok   identity ")
    assert lines[2].startswith("n/a  IMDSv2 ")
    assert lines[3].startswith("FAIL www: GetSecretValue ")
    rest = "\n".join(lines[4:])
    assert "principal: arn:aws:iam::123456789012:user/web" in rest
    assert "fix:       add this statement to the identity policy of user web" in rest
    assert "\n                  inferred from the denial\n" in rest
    start = rest.index("{")
    end = rest.index("}", start) + 1
    assert json.loads(rest[start:end]) == STATEMENT  # the statement can be copied as it is
    assert "$ aws iam put-user-policy --user-name web ..." in rest


def test_passing_checks_show_no_fix() -> None:
    text = render_text(Report([passed("clock", "clock", "within 1 s of AWS's clock")]))
    assert text == "certpull doctor: OK - 1 checks: 1 passed, 0 failed, 0 do not apply\n" + (
        "ok   clock                        within 1 s of AWS's clock\n"
    )


def test_json_keeps_every_field() -> None:
    data = json.loads(json.dumps(report().to_dict()))
    assert data["status"] == "failed" and data["exit_code"] == 1
    assert data["counts"] == {"passed": 1, "failed": 1, "not_applicable": 1}
    check = data["checks"][2]
    assert (
        check["id"] == "www.get_value" and check["cert"] == "www" and check["cause"] == "kms_denied"
    )
    assert check["result"] == "failed"
    assert check["fixes"][0]["statement"] == STATEMENT
    assert check["fixes"][0]["inferred"] is True
    assert data["checks"][1]["result"] == "does not apply"
