"""`certpull doctor`'s report: one line per check, and under each failure the reason and the fix.

A check passed, failed, or does not apply on this host (no IMDS, no SELinux, not under systemd,
no `verify` target...); only a failure makes the exit code 1. A fix says where to change what
(which account, which policy), gives the statement to add with the real ARNs in it and the
commands, and says when it is inferred from a denial rather than read from the policy itself.
Pure: values in, text or a JSON-ready dict out.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

EXIT_ALL_PASSED, EXIT_FAILED = 0, 1
_TITLE_WIDTH = 28


class Result(str, enum.Enum):
    PASSED = "passed"
    FAILED = "failed"
    NOT_APPLICABLE = "does not apply"

    def __str__(self) -> str:
        return self.value


_MARK = {Result.PASSED: "ok  ", Result.FAILED: "FAIL", Result.NOT_APPLICABLE: "n/a "}


@dataclass(frozen=True)
class Fix:
    """One change that makes a failed check pass."""

    where: str  # what to do and where, e.g. "add this statement to the secret's resource policy"
    statement: Optional[Mapping[str, Any]] = None  # an IAM policy statement, ARNs filled in
    commands: Tuple[str, ...] = ()  # shell commands, shown after "$ "
    lines: Tuple[str, ...] = ()  # configuration lines to write, shown as they are
    inferred_from: Optional[str] = None  # why the statement is a guess, e.g. "the denial"

    def to_dict(self) -> Dict[str, Any]:
        return {
            "where": self.where,
            "statement": dict(self.statement) if self.statement is not None else None,
            "commands": list(self.commands),
            "lines": list(self.lines),
            "inferred": self.inferred_from is not None,
            "inferred_from": self.inferred_from,
        }


@dataclass(frozen=True)
class Check:
    """The result of one check; ``facts`` and ``fixes`` matter for failures."""

    id: str  # stable, for --json: "identity", "www.get_secret_value", ...
    title: str
    result: Result
    detail: str  # one line
    cert: Optional[str] = None
    cause: Optional[str] = None  # doctor_causes.Kind value, when AWS refused
    facts: Tuple[Tuple[str, str], ...] = ()  # (label, value): principal, action, AWS's words...
    fixes: Tuple[Fix, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.cert}: {self.title}" if self.cert else self.title

    def to_dict(self) -> Dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "cert": self.cert,
            "result": self.result.value,
            "detail": self.detail,
            "cause": self.cause,
            "facts": dict(self.facts),
            "fixes": [fix.to_dict() for fix in self.fixes],
        }


def passed(id: str, title: str, detail: str, cert: Optional[str] = None) -> Check:
    return Check(id, title, Result.PASSED, detail, cert)


def not_applicable(id: str, title: str, detail: str, cert: Optional[str] = None) -> Check:
    return Check(id, title, Result.NOT_APPLICABLE, detail, cert)


def failed(
    id: str,
    title: str,
    detail: str,
    cert: Optional[str] = None,
    *,
    cause: Optional[str] = None,
    facts: Tuple[Tuple[str, str], ...] = (),
    fixes: Tuple[Fix, ...] = (),
) -> Check:
    return Check(id, title, Result.FAILED, detail, cert, cause, facts, fixes)


@dataclass
class Report:
    checks: List[Check] = field(default_factory=list)

    def count(self, result: Result) -> int:
        return sum(1 for check in self.checks if check.result is result)

    @property
    def exit_code(self) -> int:
        return EXIT_FAILED if self.count(Result.FAILED) else EXIT_ALL_PASSED

    def summary(self) -> str:
        failed_n = self.count(Result.FAILED)
        return (
            f"certpull doctor: {'FAILED' if failed_n else 'OK'} - {len(self.checks)} checks: "
            f"{self.count(Result.PASSED)} passed, {failed_n} failed, "
            f"{self.count(Result.NOT_APPLICABLE)} do not apply"
        )

    def to_dict(self) -> Dict[str, Any]:
        return {
            "status": "failed" if self.count(Result.FAILED) else "ok",
            "exit_code": self.exit_code,
            "counts": {r.name.lower(): self.count(r) for r in Result},
            "checks": [check.to_dict() for check in self.checks],
        }


def render_text(report: Report) -> str:
    """The summary line, one line per check, and under each failure its facts and fixes."""
    lines = [report.summary()]
    for check in report.checks:
        lines.append(f"{_MARK[check.result]} {check.label:<{_TITLE_WIDTH}} {check.detail}")
        if check.result is not Result.FAILED:
            continue
        for label, value in check.facts:
            lines.append(f"{'':7}{label + ':':<11}{value}")
        several = len(check.fixes) > 1
        for number, fix in enumerate(check.fixes, 1):
            lines.extend(_fix_lines(fix, f"fix {number}:" if several else "fix:"))
    return "\n".join(lines) + "\n"


def _fix_lines(fix: Fix, head: str) -> List[str]:
    lines = [f"{'':7}{head:<11}{fix.where}"]
    pad = " " * 18
    if fix.inferred_from:
        lines.append(f"{pad}inferred from {fix.inferred_from}")
    if fix.statement is not None:
        text = json.dumps(dict(fix.statement), indent=2)
        lines.extend(pad + line for line in text.splitlines())
    lines.extend(pad + line for line in fix.lines)
    lines.extend(f"{pad}$ {command}" for command in fix.commands)
    return lines
