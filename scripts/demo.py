"""The README's demo: certpull end to end on this machine, with nothing outside 127.0.0.1.

1. Start a local AWS endpoint (moto's server) and create a private CA in ACM PCA.
2. Create a secret holding the rotation function's settings, and rotate it with certpull's own
   rotation function (createSecret, setSecret, testSecret, finishSecret): a certificate issued by
   the CA, for www.example.com and 127.0.0.1.
3. `certpull sync` installs it into a live directory; a real Apache httpd with mod_ssl starts on
   127.0.0.1 serving it.
4. Rotate again; `certpull sync` picks up the new version, reloads httpd gracefully and verifies.
5. The agent itself: `certpull run` with an SQS queue fed by an EventBridge rule. A third
   rotation, then the event Secrets Manager sends when AWSCURRENT moves (put on the bus): the new
   leaf is served within a second (measured with fresh handshakes, printed; later fails the demo,
   `--latency-budget-s` sets the bound, 0 only measures). `certpull status`
   with the daemon alive, what systemd would be told (READY=1, STATUS=), and a clean stop.
6. Show the served certificates and what state.json records.
7. `certpull doctor`: every check that applies on this machine passes.
Everything is cleaned up at the end (daemon and httpd stopped, the rule and the temporary directory
removed).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import List, Optional

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "agent"))

from cryptography import x509  # noqa: E402

from certpull.httpd import fetch_served_leaf  # noqa: E402
from certpull.rotation.issuers import AwsIssuers  # noqa: E402
from certpull.rotation.steps import STEPS, Rotation  # noqa: E402
from tests.apache import ApacheInstance  # noqa: E402
from tests.aws_local import LocalAws  # noqa: E402
from tests.daemon_proc import NotifySocket  # noqa: E402

END_ENTITY_TEMPLATE = "arn:aws:acm-pca:::template/EndEntityCertificate/V1"

# The local endpoint accepts any credentials; never let the demo pick up real ones or reach AWS.
os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "demo",
        "AWS_SECRET_ACCESS_KEY": "demo",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
)
for _name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
    os.environ.pop(_name, None)


def say(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


def describe(der: bytes) -> str:
    cert = x509.load_der_x509_certificate(der)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return (
        f"serial {cert.serial_number:x}  subject {cert.subject.rfc4514_string()}  "
        f"SAN {', '.join(str(n.value) for n in names)}  notAfter {cert.not_valid_after_utc:%Y-%m-%d}"
    )


def certpull(config: Path, *args: str) -> int:
    argv: List[str] = [sys.executable, "-m", "certpull", "-c", str(config), *args]
    print(f"$ certpull {' '.join(args)}", flush=True)
    done = subprocess.run(argv, check=False)
    print(f"(exit {done.returncode})", flush=True)
    return done.returncode


class EventRoute:
    """An EventBridge rule for Secrets Manager's events targeting an SQS queue (in moto)."""

    def __init__(self, aws: LocalAws) -> None:
        self.events = aws.client("events")
        sqs = aws.client("sqs")
        self.rule = f"certpull-demo-{uuid.uuid4().hex[:8]}"
        self.queue_url = sqs.create_queue(QueueName=self.rule)["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        rule_arn = self.events.put_rule(
            Name=self.rule,
            EventPattern=json.dumps(
                {"source": ["aws.secretsmanager"], "detail-type": ["Secret Label Updated"]}
            ),
        )["RuleArn"]
        self.events.put_targets(Rule=self.rule, Targets=[{"Id": "agent", "Arn": queue_arn}])
        policy = {  # what host.yaml sets: only this rule may send to the queue
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "RotationEventsFromRule",
                    "Effect": "Allow",
                    "Principal": {"Service": "events.amazonaws.com"},
                    "Action": "sqs:SendMessage",
                    "Resource": queue_arn,
                    "Condition": {"ArnEquals": {"aws:SourceArn": rule_arn}},
                }
            ],
        }
        sqs.set_queue_attributes(QueueUrl=self.queue_url, Attributes={"Policy": json.dumps(policy)})

    def label_updated(self, secret_arn: str, version_id: str) -> None:
        """What Secrets Manager puts on the bus when AWSCURRENT moves to ``version_id``."""
        detail = {"name": secret_arn.split(":secret:")[1], "labelUpdated": "AWSCURRENT"}
        detail["versionId"] = version_id
        response = self.events.put_events(
            Entries=[
                {
                    "Source": "aws.secretsmanager",
                    "DetailType": "Secret Label Updated",
                    "Detail": json.dumps(detail),
                    "Resources": [secret_arn],
                }
            ]
        )
        if response["FailedEntryCount"]:
            raise SystemExit(f"demo: put_events failed: {response}")

    def close(self) -> None:
        self.events.remove_targets(Rule=self.rule, Ids=["agent"])
        self.events.delete_rule(Name=self.rule)


def wait_served(apache: ApacheInstance, old: bytes, timeout_s: float) -> Optional[bytes]:
    """Fresh handshakes until httpd serves something else than ``old``; None after the timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            served = fetch_served_leaf(apache.target(), 2)
        except Exception:  # a handshake during the reload may fail: try again
            served = old
        if served != old:
            return served
        time.sleep(0.005)
    return None


def run_daemon(
    config: Path,
    workdir: Path,
    aws: LocalAws,
    secret_arn: str,
    apache: ApacheInstance,
    route: EventRoute,
    budget_s: float,
) -> int:
    """Step 5: `certpull run`, a rotation by event, status with the daemon alive, a clean stop.
    Served later than ``budget_s`` after the event is a failure (0: measured, not judged)."""
    failures = 0
    notify = NotifySocket(workdir / "notify.sock")
    env = dict(os.environ, NOTIFY_SOCKET=str(notify.path))
    env["PYTHONPATH"] = str(REPO / "agent") + os.pathsep + env.get("PYTHONPATH", "")
    log_path = workdir / "run.log"
    print("$ certpull run    (in the background; its log is printed at the stop)", flush=True)
    with open(log_path, "w") as log:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "certpull", "-c", str(config), "run"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        deadline = time.monotonic() + 30
        while "READY=1" not in notify.messages and time.monotonic() < deadline:
            time.sleep(0.05)
        print(f"   systemd is told: {' | '.join(notify.messages[:2])}")
        time.sleep(1.5)  # the first pass (startup_splay_s = 0): one DescribeSecret, current
        before = fetch_served_leaf(apache.target(), 5)

        say("rotation, then the EventBridge event Secrets Manager sends (rule -> SQS -> agent)")
        version = rotate(aws, secret_arn)
        print(f"   AWSCURRENT is now version {version}")
        started = time.monotonic()
        route.label_updated(secret_arn, version)
        served = wait_served(apache, before, 10)
        took = time.monotonic() - started
        if served is None:
            print("   ERROR: the new certificate was not served within 10 s of the event")
            failures += 1
        else:
            slow = budget_s > 0 and took >= budget_s
            verdict = (
                "not judged"
                if budget_s <= 0
                else f"{'SLOWER than' if slow else 'within'} {budget_s:g} s"
            )
            print(
                f"   event sent -> new leaf served to a fresh handshake: {took * 1000:.0f} ms ({verdict})"
            )
            print(f"   served: {describe(served)}")
            failures += slow

        say("certpull status, with the daemon running")
        recorded = workdir / "state" / "state.json"
        deadline = time.monotonic() + 10  # the pass records its outcome after verifying
        while time.monotonic() < deadline:
            installed = json.loads(recorded.read_text())["certs"]["www"].get("installed") or {}
            if installed.get("version_id") == version:
                break
            time.sleep(0.05)
        failures += certpull(config, "status")
        statuses = [m for m in notify.messages if m.startswith("STATUS=")]
        print(f"   systemd's status line: {statuses[-1][len('STATUS=') :] if statuses else '?'}")

        say("clean stop: SIGTERM (what `systemctl stop certpull` sends)")
        stopping = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(timeout=30)
        print(f"   certpull run exited {code} after {time.monotonic() - stopping:.2f} s")
        failures += code != 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        notify.close()
    print("   its log:")
    for line in log_path.read_text(errors="replace").splitlines():
        print(f"   | {line}")
    return failures


def rotate(aws: LocalAws, secret_arn: str) -> str:
    token = aws.begin_rotation(secret_arn)
    rotation = Rotation(aws.client("secretsmanager"), AwsIssuers(aws.client))
    for step in STEPS:
        rotation.run(secret_arn, token, step)
        print(f"   rotation function: {step} ok", flush=True)
    return token


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--latency-budget-s",
        type=float,
        default=1.0,
        help="fail when the event's leaf is served later than this (default 1; 0: only measure)",
    )
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="certpull-demo-"))
    apache = None
    failures = 0
    with LocalAws() as aws:
        route: Optional[EventRoute] = None
        try:
            say(f"local AWS endpoint (moto server) at {aws.endpoint_url}")
            ca_arn = aws.create_private_ca(common_name="certpull demo root CA")
            print(f"   ACM PCA root CA: {ca_arn}")

            say("secret with the rotation function's settings, then its first rotation")
            settings = {
                "CERTIFICATE_TYPE": "ACM_PCA_ISSUED",
                "CA_ARN": ca_arn,
                "COMMON_NAME": "www.example.com",
                "SUBJECT_ALTERNATIVE_NAMES": ["127.0.0.1"],
                "TEMPLATE_ARN": END_ENTITY_TEMPLATE,
                "KEY_ALGORITHM": "TYPE_EC",
                "KEY_SIZE": 256,
                "SIGNING_HASH": "sha256",
                "SIGNING_ALGORITHM": "SHA256WITHECDSA",
            }
            secret_arn = aws.put_certificate_secret("demo/www-tls", settings)
            print(f"   secret: {secret_arn}")
            print(f"   AWSCURRENT is now version {rotate(aws, secret_arn)}")

            apache = ApacheInstance(workdir / "httpd", name="www")
            route = EventRoute(aws)  # used by `certpull run` in step 5; `sync` ignores it
            config = workdir / "certpull.conf"
            config.write_text(
                "\n".join(
                    [
                        "[agent]",
                        f"endpoint_url = {aws.endpoint_url}",
                        f"reload_command = {' '.join(apache.reload_argv())}",
                        f"configtest_command = {' '.join(apache.configtest_argv())}",
                        f"start_command = {' '.join(apache.start_argv())}",
                        f"httpd_pid_file = {apache.pid_file}",
                        f"live_dir = {apache.live_dir}",
                        f"state_dir = {workdir / 'state'}",
                        f"events_queue_url = {route.queue_url}",
                        "event_splay_s = 0",
                        "startup_splay_s = 0",
                        "",
                        "[cert:www]",
                        f"secret_arn = {secret_arn}",
                        "server_name = www.example.com",
                        f"verify = 127.0.0.1:{apache.port}",
                        "",
                    ]
                )
            )
            say(f"certpull config ({config})")
            print(config.read_text())
            failures += certpull(config, "check-config")

            say("first install: httpd is not running yet, so certpull installs without reloading")
            if certpull(config, "sync") != 0:
                raise SystemExit("demo: the first install failed")
            for name in ("cert.pem", "chain.pem", "fullchain.pem", "privkey.pem"):
                link = apache.cert_dir / name
                mode = oct(link.stat().st_mode & 0o777)
                print(f"   {link} -> {link.readlink()}  ({mode})")

            say(f"Apache httpd with mod_ssl on 127.0.0.1:{apache.port}, serving the live files")
            apache.start()
            before = fetch_served_leaf(apache.target(), 5)
            print(f"   served: {describe(before)}")

            say("nothing changed: a sync costs one DescribeSecret and no reload")
            failures += certpull(config, "sync")

            say("rotation: the rotation function issues a new certificate with a new key")
            print(f"   AWSCURRENT is now version {rotate(aws, secret_arn)}")
            failures += certpull(config, "sync")
            after = fetch_served_leaf(apache.target(), 5)

            say("the agent: `certpull run`, with rotation events from EventBridge through SQS")
            print(f"   queue: {route.queue_url} (target of EventBridge rule {route.rule})")
            failures += run_daemon(
                config, workdir, aws, secret_arn, apache, route, args.latency_budget_s
            )
            latest = fetch_served_leaf(apache.target(), 5)

            say("served certificate before and after the rotations")
            print(f"   first:  {describe(before)}")
            print(f"   sync:   {describe(after)}")
            print(f"   event:  {describe(latest)}")
            if len({before, after, latest}) != 3:
                print("   ERROR: httpd still serves an old certificate")
                failures += 1

            state = json.loads((workdir / "state" / "state.json").read_text())
            print(
                f"   state.json records version {state['certs']['www']['installed']['version_id']}"
            )

            say("certpull doctor: credentials, permissions, clock, the secret, httpd, the files")
            failures += certpull(config, "doctor")
        finally:
            say("cleaning up")
            if route is not None:
                route.close()
            if apache is not None:
                apache.stop()
            if args.keep:
                print(f"   kept {workdir}")
            else:
                shutil.rmtree(workdir, ignore_errors=True)
    say("demo " + ("OK" if failures == 0 else f"FAILED ({failures})"))
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
