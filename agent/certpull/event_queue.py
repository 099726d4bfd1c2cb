"""The SQS queue that EventBridge (directly, or through SNS) feeds with Secrets Manager events.

An adapter around an injected boto3 SQS client: long-poll receive, batch delete, and AWS errors
turned into ``SourceError(transient=...)`` so the run loop backs off and keeps going. It knows
nothing about what the messages mean (``events.py`` does).

Each host needs its own queue (SQS hands a message to one consumer): fan out through an SNS
topic with one subscribed queue per host.

Sizing ``event_splay_s`` for a fleet: when an event arrives, every host checks the secret within
the splay (DescribeSecret, then GetSecretValue and the KMS Decrypt behind it). Secrets Manager
and KMS each allow on the order of 10,000 requests per second per account and region, so the
splay must spread the fleet below that: ``event_splay_s >= hosts / 10,000`` is the floor
(100,000 hosts -> at least 10 s) and twice that leaves room for everything else in the account.
The default of 5 s suits up to ~25,000 hosts. Throttled calls are retried by botocore with
backoff, so an undersized splay slows the rollout rather than breaking it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence

from certpull.errors import SourceError

log = logging.getLogger(__name__)

MAX_WAIT_S = 20  # SQS's long-poll maximum
MAX_BATCH = 10  # SQS's receive and delete-batch maximum
_READ_TIMEOUT_MARGIN_S = 5.0

_PERMANENT_CODES = frozenset(
    {
        "AWS.SimpleQueueService.NonExistentQueue",
        "QueueDoesNotExist",
        "AccessDenied",
        "AccessDeniedException",
        "InvalidAddress",
        "InvalidParameterValue",
        "InvalidClientTokenId",
        "KMS.AccessDeniedException",
        "KMS.DisabledException",
        "KMS.NotFoundException",
    }
)


@dataclass(frozen=True)
class QueueMessage:
    receipt_handle: str
    body: str
    message_id: str = ""


class EventQueue:
    """Receive and delete messages of one queue. ``sqs_client`` is a boto3 SQS client."""

    def __init__(
        self,
        sqs_client: Any,
        queue_url: str,
        wait_s: int = MAX_WAIT_S,
        max_messages: int = MAX_BATCH,
    ) -> None:
        if not 0 <= wait_s <= MAX_WAIT_S:
            raise ValueError(f"SQS wait must be 0..{MAX_WAIT_S} s, got {wait_s}")
        if not 1 <= max_messages <= MAX_BATCH:
            raise ValueError(f"SQS batch size must be 1..{MAX_BATCH}, got {max_messages}")
        self._sqs = sqs_client
        self.queue_url = queue_url
        self.max_messages = max_messages
        self.wait_s = _fit_wait_to_read_timeout(sqs_client, wait_s)

    def receive(self) -> List[QueueMessage]:
        """One long poll: up to ``max_messages`` messages, or [] after ``wait_s`` seconds."""
        try:
            response = self._sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=self.max_messages,
                WaitTimeSeconds=self.wait_s,
            )
        except Exception as exc:
            raise _source_error("receive from", self.queue_url, exc) from exc
        return [
            QueueMessage(
                receipt_handle=str(m["ReceiptHandle"]),
                body=str(m.get("Body", "")),
                message_id=str(m.get("MessageId", "")),
            )
            for m in response.get("Messages", [])
            if m.get("ReceiptHandle")
        ]

    def delete(self, messages: Sequence[QueueMessage]) -> int:
        """Delete handled messages in batches of ten; returns how many SQS refused.

        A message that fails to delete comes back after its visibility timeout and is handled
        again, which costs one extra check: so partial failures are logged, not raised.
        """
        failed = 0
        for start in range(0, len(messages), MAX_BATCH):
            chunk = messages[start : start + MAX_BATCH]
            entries = [
                {"Id": str(i), "ReceiptHandle": m.receipt_handle} for i, m in enumerate(chunk)
            ]
            try:
                response = self._sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
            except Exception as exc:
                raise _source_error("delete messages from", self.queue_url, exc) from exc
            for failure in response.get("Failed", []):
                failed += 1
                log.warning(
                    "SQS did not delete a message from %s: %s",
                    self.queue_url,
                    failure.get("Code", "unknown error"),
                )
        return failed


def _fit_wait_to_read_timeout(sqs_client: Any, wait_s: int) -> int:
    """A long poll longer than the client's read timeout would fail every quiet poll."""
    read_timeout: Optional[float] = getattr(
        getattr(getattr(sqs_client, "meta", None), "config", None), "read_timeout", None
    )
    if read_timeout is None or wait_s + _READ_TIMEOUT_MARGIN_S <= read_timeout:
        return wait_s
    fitted = max(0, int(read_timeout - _READ_TIMEOUT_MARGIN_S))
    log.warning(
        "SQS long poll shortened from %d s to %d s to fit the client's %g s read timeout",
        wait_s,
        fitted,
        read_timeout,
    )
    return fitted


def _source_error(action: str, queue_url: str, exc: Exception) -> SourceError:
    code = _error_code(exc)
    transient = code not in _PERMANENT_CODES
    reason = code or type(exc).__name__
    return SourceError(
        f"cannot {action} SQS queue {queue_url}: {reason}", transient=transient, code=code
    )


def _error_code(exc: Exception) -> Optional[str]:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        return str(code) if code else None
    return None
