"""One host under test: a certpull config, live and state dirs, a secret in moto, a real Apache.

The agent reaches moto through the counting proxy, reloads the private Apache with `-k graceful`,
and verifies with real handshakes, exactly as on a host (only the paths and commands differ).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from certpull.cli import main as certpull_main
from tests.apache import ApacheInstance
from tests.aws_local import LocalAws
from tests.aws_proxy import AwsProxy
from tests.pki import Issued, Pki

REPO = Path(__file__).resolve().parent.parent
LIVE_FILES = ("cert.pem", "chain.pem", "fullchain.pem", "privkey.pem")


@dataclass
class Site:
    root: Path
    aws: LocalAws
    proxy: AwsProxy
    apache: ApacheInstance
    pki: Pki
    name: str = "www"
    secret_arn: str = ""
    cert_options: Dict[str, str] = field(default_factory=dict)
    agent_options: Dict[str, str] = field(default_factory=dict)
    first_leaf: Optional[Issued] = None  # what install_first installed

    @property
    def config_path(self) -> Path:
        return self.root / "certpull.conf"

    @property
    def control_socket(self) -> Path:
        """The agent's `check-now` socket (in the site, not the host's /run/certpull)."""
        return self.root / "control" / "control.sock"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def live_dir(self) -> Path:
        return self.apache.live_dir

    @property
    def cert_dir(self) -> Path:
        return self.apache.cert_dir

    # -- setup ---------------------------------------------------------------------------------

    def create_secret(
        self, leaf: Optional[Issued] = None, secret_string: Optional[str] = None
    ) -> str:
        sm = self.aws.client("secretsmanager")
        body = secret_string if secret_string is not None else self.pki.secret_string(leaf)
        self.secret_arn = sm.create_secret(
            Name=f"{self.name}-tls-{uuid.uuid4().hex[:8]}", SecretString=body
        )["ARN"]
        self.write_config()
        return self.secret_arn

    def install_first(self, leaf: Issued) -> None:
        """The host most tests start from: ``leaf`` in a new secret (``first_leaf``), installed
        by `certpull sync` (httpd down: no reload), then httpd started on it."""
        self.first_leaf = leaf
        self.create_secret(leaf)
        done = self.certpull("sync")
        assert done.returncode == 0, done.stdout + done.stderr
        self.apache.start()

    def write_config(self) -> None:
        agent = {
            "endpoint_url": self.proxy.endpoint_url,
            "reload_command": " ".join(self.apache.reload_argv()),
            "configtest_command": " ".join(self.apache.configtest_argv()),
            "start_command": " ".join(self.apache.start_argv()),
            "httpd_pid_file": str(self.apache.pid_file),
            "live_dir": str(self.live_dir),
            "state_dir": str(self.state_dir),
            "verify_timeout_s": "5",
            "max_attempts": "1",
            "connect_timeout_s": "2",
            "read_timeout_s": "5",
            "control_socket": str(self.control_socket),
        }
        agent.update(self.agent_options)
        cert = {
            "secret_arn": self.secret_arn,
            "server_name": "www.example.com",
            "verify": f"127.0.0.1:{self.apache.port}",
        }
        cert.update(self.cert_options)
        lines = ["[agent]", *(f"{k} = {v}" for k, v in agent.items()), "", f"[cert:{self.name}]"]
        lines += [f"{k} = {v}" for k, v in cert.items()]
        self.config_path.write_text("\n".join(lines) + "\n")

    def put(self, leaf: Optional[Issued] = None, secret_string: Optional[str] = None) -> str:
        """A new AWSCURRENT version; returns its version id.

        Client-side parameter validation is off so that values AWS's API model refuses (an empty
        string) still reach the endpoint: the agent must survive whatever a producer manages to store.
        """
        sm = self._raw_client()
        body = secret_string if secret_string is not None else self.pki.secret_string(leaf)
        return str(sm.put_secret_value(SecretId=self.secret_arn, SecretString=body)["VersionId"])

    def _raw_client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "secretsmanager",
            region_name="us-east-1",
            endpoint_url=self.aws.endpoint_url,
            config=Config(parameter_validation=False),
        )

    # -- running certpull ------------------------------------------------------------------------

    def certpull(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """`python -m certpull -c CONF ARGS` as a real subprocess."""
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO / "agent") + os.pathsep + env.get("PYTHONPATH", "")
        return subprocess.run(
            [sys.executable, "-m", "certpull", "-c", str(self.config_path), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
        )

    def certpull_inline(self, *args: str) -> int:
        """The same CLI entry point in this process (fast, for long tables)."""
        return certpull_main(["-c", str(self.config_path), *args])

    # -- observations ----------------------------------------------------------------------------

    def live_bytes(self) -> Dict[str, bytes]:
        return {name: (self.cert_dir / name).read_bytes() for name in LIVE_FILES}

    def reloads(self) -> int:
        """Graceful restarts httpd has logged (AH00493 'SIGUSR1 received')."""
        try:
            text = self.apache.error_log.read_text(errors="replace")
        except OSError:
            return 0
        return text.count("AH00493")

    def served_der(self) -> bytes:
        return self.apache.served_leaf_der()

    def serves(self, der: bytes) -> bool:
        """Does a fresh handshake return this leaf? (False while httpd is down or reloading.)"""
        try:
            return self.served_der() == der
        except Exception:
            return False

    def state(self) -> Mapping[str, object]:
        return json.loads((self.state_dir / "state.json").read_text())

    def status_json(self) -> Tuple[int, Mapping[str, object]]:
        done = self.certpull("status", "--json")
        return done.returncode, json.loads(done.stdout)


def modes(directory: Path) -> List[Tuple[str, int]]:
    """(relative path, mode) of every regular file below `directory`."""
    found = []
    for dirpath, _, files in os.walk(directory):
        for filename in files:
            path = Path(dirpath) / filename
            info = path.lstat()
            if stat.S_ISREG(info.st_mode):
                found.append((str(path.relative_to(directory)), stat.S_IMODE(info.st_mode)))
    return found


def der_of(leaf: Issued) -> bytes:
    return leaf.der


def key_body(pem: str) -> str:
    """The base64 body of a PEM key: what must never show up in logs."""
    return "".join(line for line in pem.splitlines() if line and not line.startswith("-----"))


def contains_key_material(text: str, key_pems: Sequence[str]) -> bool:
    for pem in key_pems:
        body = key_body(pem)
        # Any 40-char slice of the body is proof enough (a partial leak counts).
        for start in range(0, max(1, len(body) - 40), 40):
            if body[start : start + 40] in text:
                return True
    return False
