"""moto's server with IAM enforcement, in its own process: real AccessDenied from identity policies.

moto checks every call against the caller's IAM policies once the count of unauthenticated calls
(INITIAL_NO_AUTH_ACTION_COUNT, read when moto is imported, or set at run time through
/moto-api/reset-auth) is used up. That setting is global to the server's process, so this server is
a separate `python -m moto.server` and never the session's shared ThreadedMotoServer. What moto
enforces: identity policies (matched against resource "*" for Secrets Manager and KMS actions),
the trust policy of a role in the caller's own account, unknown access keys. What it does not:
resource policies, key policies, another account's trust policies (tests inject AWS's documented
answers for those through tests/aws_proxy.py).

Set-up order: an admin user in the default account (123456789012) and an admin role in the owner
account (OWNER) are created before enforcement starts; everything after that is made through them.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from typing import Any, Dict, List, Mapping, Optional

import boto3
from botocore.config import Config

HOST_ACCOUNT = "123456789012"  # moto's default account: the hosts' account
OWNER = "111122223333"  # the secrets' account
REGION = "us-east-1"
Credentials = Dict[str, str]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def policy(*statements: Mapping[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def allow(actions: List[str], resource: str = "*") -> Dict[str, Any]:
    return {"Effect": "Allow", "Action": actions, "Resource": resource}


class EnforcingMoto:
    def __init__(self) -> None:
        self.port = _free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self._proc: Optional[subprocess.Popen[bytes]] = None
        self.admin: Credentials = {}
        self.owner_admin_role = f"arn:aws:iam::{OWNER}:role/owner-admin"

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> EnforcingMoto:
        env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="inf")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(self.endpoint_url + "/moto-api/data.json", timeout=2).read()  # noqa: S310
                break
            except OSError:
                if time.monotonic() > deadline or self._proc.poll() is not None:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.1)
        dummy = {"aws_access_key_id": "setup", "aws_secret_access_key": "setup"}
        iam = self.client("iam", dummy)
        iam.create_user(UserName="admin")
        iam.put_user_policy(UserName="admin", PolicyName="all", PolicyDocument=policy(allow(["*"])))
        key = iam.create_access_key(UserName="admin")["AccessKey"]
        self.admin = {
            "aws_access_key_id": key["AccessKeyId"],
            "aws_secret_access_key": key["SecretAccessKey"],
        }
        owner = self._assume(dummy, self.owner_admin_role)
        owner_iam = self.client("iam", owner)
        owner_iam.create_role(
            RoleName="owner-admin",
            AssumeRolePolicyDocument=policy(
                {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}
            ),
        )
        owner_iam.put_role_policy(
            RoleName="owner-admin", PolicyName="all", PolicyDocument=policy(allow(["*"]))
        )
        self._post("/moto-api/reset-auth", b"0")  # enforcement starts with the next call
        return self

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    # -- clients and principals --------------------------------------------------------------

    def client(self, service: str, credentials: Optional[Credentials] = None) -> Any:
        return boto3.session.Session(**(credentials or self.admin), region_name=REGION).client(
            service,  # type: ignore[call-overload]
            endpoint_url=self.endpoint_url,
            config=Config(retries={"mode": "standard", "max_attempts": 1}),
        )

    def _assume(self, credentials: Credentials, role_arn: str) -> Credentials:
        found = self.client("sts", credentials).assume_role(
            RoleArn=role_arn, RoleSessionName="tests-setup"
        )["Credentials"]
        return {
            "aws_access_key_id": found["AccessKeyId"],
            "aws_secret_access_key": found["SecretAccessKey"],
            "aws_session_token": found["SessionToken"],
        }

    def owner(self) -> Credentials:
        """Admin credentials in the owner account."""
        return self._assume(self.admin, self.owner_admin_role)

    def user(self, *statements: Mapping[str, Any]) -> Credentials:
        """A new user of the hosts' account whose only policy has ``statements``."""
        name = f"host-{uuid.uuid4().hex[:8]}"
        iam = self.client("iam")
        iam.create_user(UserName=name)
        if statements:
            iam.put_user_policy(
                UserName=name, PolicyName="host", PolicyDocument=policy(*statements)
            )
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return {
            "aws_access_key_id": key["AccessKeyId"],
            "aws_secret_access_key": key["SecretAccessKey"],
        }

    def owner_role(
        self, trusted: str, *statements: Mapping[str, Any], external_id: str = ""
    ) -> str:
        """A role in the owner account trusting ``trusted``; returns its ARN."""
        name = f"reader-{uuid.uuid4().hex[:8]}"
        trust: Dict[str, Any] = {
            "Effect": "Allow",
            "Principal": {"AWS": trusted},
            "Action": "sts:AssumeRole",
        }
        if external_id:
            trust["Condition"] = {"StringEquals": {"sts:ExternalId": external_id}}
        iam = self.client("iam", self.owner())
        arn: str = iam.create_role(RoleName=name, AssumeRolePolicyDocument=policy(trust))["Role"][
            "Arn"
        ]
        iam.put_role_policy(RoleName=name, PolicyName="read", PolicyDocument=policy(*statements))
        return arn

    def user_arn(self, credentials: Credentials) -> str:
        return str(self.client("sts", credentials).get_caller_identity()["Arn"])

    def _post(self, path: str, data: bytes) -> None:
        request = urllib.request.Request(  # noqa: S310 - our own loopback server
            self.endpoint_url + path,
            data=data,
            headers={"Content-Type": "text/plain"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            response.read()
