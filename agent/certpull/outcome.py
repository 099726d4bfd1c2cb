"""What one pass did for each certificate: a status from a closed set, a one-line message.

The status strings are the contract of logs, `sync` output and JSON; the enum only names them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import List, Optional


class Status(str, enum.Enum):
    CURRENT = "current"  # installed == AWSCURRENT, nothing to do
    INSTALLED = "installed"  # a new certificate is installed, served and verified
    UNCHANGED = "unchanged"  # AWSCURRENT moved but carries the same certificate and key bytes
    WOULD_INSTALL = "would-install"  # dry run: this would be installed
    HELD = "held"  # the operator rolled this version back; waiting for a new one
    PENDING = "pending"  # validated, waiting for the install window
    FAILED = "failed"  # nothing changed on disk (or it was rolled back); see message
    DEFERRED = "deferred"  # not checked: the pass reached its deadline first (the daemon's)

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Outcome:
    name: str
    status: Status
    message: str
    version_id: Optional[str] = None
    transient: Optional[bool] = None
    due_at: Optional[float] = None  # wall-clock time worth checking again at (a notBefore)

    @property
    def ok(self) -> bool:
        return self.status is not Status.FAILED


@dataclass
class PassReport:
    outcomes: List[Outcome] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(outcome.ok for outcome in self.outcomes)
