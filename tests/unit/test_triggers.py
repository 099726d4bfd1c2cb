"""triggers.py: the Mailbox (what signal handlers and threads post to the main loop) and the
EventPoller's decisions on real event bodies, with a scripted queue instead of SQS."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import List, Mapping, Optional, Sequence, Union

import pytest

from certpull.errors import SourceError
from certpull.event_queue import QueueMessage
from certpull.triggers import EventPoller, Mailbox

EVENTS = Path(__file__).resolve().parents[1] / "testdata" / "events"
WWW_ARN = "arn:aws:secretsmanager:us-east-1:111122223333:secret:www-tls-AbCdEf"
LABEL_VERSION = "a1b2c3d4-5678-90ab-cdef-EXAMPLE11111"


def event(name: str) -> str:
    return (EVENTS / name).read_text()


class ScriptedQueue:
    """Answers receive() from a script (messages or an error); stops the poller at the end."""

    queue_url = "https://sqs.us-east-1.amazonaws.com/111122223333/certpull-www"

    def __init__(self, script: Sequence[Union[List[str], SourceError]], done: threading.Event):
        self.script = list(script)
        self.done = done
        self.deleted: List[str] = []
        self.fail_delete = False

    def receive(self) -> List[QueueMessage]:
        if not self.script:
            self.done.set()
            time.sleep(0.01)
            return []
        answer = self.script.pop(0)
        if isinstance(answer, SourceError):
            raise answer
        return [QueueMessage(f"rh-{i}", body, f"m-{i}") for i, body in enumerate(answer)]

    def delete(self, messages: Sequence[QueueMessage]) -> int:
        if self.fail_delete:
            raise SourceError("cannot delete messages from SQS queue: ThrottlingException", True)
        self.deleted.extend(m.receipt_handle for m in messages)
        return 0


def run_poller(
    script: Sequence[Union[List[str], SourceError]],
    installed: Optional[Mapping[str, str]] = None,
    fail_delete: bool = False,
) -> tuple:  # type: ignore[type-arg]
    mailbox = Mailbox()
    done = threading.Event()
    queue = ScriptedQueue(script, done)
    queue.fail_delete = fail_delete
    waits: List[float] = []
    poller = EventPoller(
        queue,
        lambda: {"www": WWW_ARN, "api": WWW_ARN.replace("www-tls", "api-tls")},
        lambda: dict(installed or {}),
        mailbox,
        random.Random(1),
        wait=waits.append,
    )
    poller.start()
    assert done.wait(5), "the poller did not get through its script"
    poller.stop()
    requests = mailbox.take()
    mailbox.close()
    return requests, queue, waits


def test_a_label_updated_event_triggers_its_certificate_and_is_deleted() -> None:
    requests, queue, _ = run_poller([[event("label_updated_awscurrent.json")]])
    assert requests.triggers == {"www"}
    assert queue.deleted == ["rh-0"]


@pytest.mark.parametrize(
    "name",
    [
        "foreign_ec2_state_change.json",
        "label_updated_custom.json",
        "cloudtrail_get_secret_value.json",
    ],
)
def test_events_that_cannot_move_awscurrent_trigger_nothing_and_are_deleted(name: str) -> None:
    requests, queue, _ = run_poller([[event(name), "not json", ""]])
    assert requests.triggers == set()
    assert queue.deleted == ["rh-0", "rh-1", "rh-2"]


def test_an_event_for_the_version_already_in_place_costs_no_check() -> None:
    requests, _, _ = run_poller([[event("label_updated_awscurrent.json")]], {"www": LABEL_VERSION})
    assert requests.triggers == set()
    requests, _, _ = run_poller([[event("label_updated_awscurrent.json")]], {"www": "older"})
    assert requests.triggers == {"www"}


def test_sqs_errors_back_off_and_the_thread_goes_on() -> None:
    error = SourceError("cannot receive from SQS queue: ServiceUnavailable", True)
    requests, _, waits = run_poller([error, error, [event("label_updated_awscurrent.json")]])
    assert requests.triggers == {"www"}
    assert len(waits) == 2 and 2.5 <= waits[0] <= 5.0 and 5.0 <= waits[1] <= 10.0  # equal jitter


def test_a_failed_delete_is_logged_not_fatal() -> None:
    requests, queue, _ = run_poller(
        [[event("label_updated_awscurrent.json")], [event("label_updated_awscurrent.json")]],
        fail_delete=True,
    )
    assert requests.triggers == {"www"}
    assert queue.deleted == []


def test_mailbox_collects_requests_and_keeps_stop() -> None:
    mailbox = Mailbox()
    mailbox.post_trigger("www")
    mailbox.post_trigger("www")
    mailbox.post_drift("config")
    mailbox.post_reload()
    mailbox.post_check_all()
    first = mailbox.take()
    assert (first.triggers, first.drift, first.reload_config, first.check_all) == (
        {"www"},
        {"config"},
        True,
        True,
    )
    mailbox.post_stop()
    assert mailbox.take().stop and mailbox.take().stop  # stop is never taken away
    assert mailbox.take().triggers == set()
    mailbox.close()


def test_mailbox_wait_returns_when_woken_and_after_its_timeout() -> None:
    mailbox = Mailbox()
    started = time.monotonic()
    threading.Timer(0.05, mailbox.post_trigger, args=("www",)).start()
    mailbox.wait(5.0)
    assert time.monotonic() - started < 2.0
    started = time.monotonic()
    mailbox.wait(0.05)  # the pipe was drained: this one times out
    assert time.monotonic() - started >= 0.04
    mailbox.close()
