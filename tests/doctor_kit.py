"""Building `certpull doctor` for tests: the wiring of wiring.build_doctor, with what a test changes.

The AWS side is real (boto3 against a moto server, optionally through tests/aws_proxy.py); the
credentials, the clock, "are we in a container", and the host's systemd/SELinux state are
constructor arguments, as they are for build_doctor.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional

import botocore.session

from certpull.aws import AwsClients
from certpull.config import Config
from certpull.config_files import load
from certpull.doctor import Doctor
from certpull.doctor_aws import AwsProbe
from certpull.doctor_host import HostChecks
from certpull.doctor_report import Check, Report
from certpull.proc import CommandRunner
from certpull.state import StateFile
from certpull.wiring import httpd, queue_region


def make_doctor(
    config: Config,
    *,
    credentials: Optional[Mapping[str, str]] = None,
    clock: Callable[[], float] = time.time,
    in_container: Callable[[], bool] = lambda: False,
    imds_timeout_s: float = 2.0,
    **host: Any,
) -> Doctor:
    session = None
    if credentials:
        session = botocore.session.get_session()
        session.set_credentials(
            credentials["aws_access_key_id"],
            credentials["aws_secret_access_key"],
            credentials.get("aws_session_token"),
        )
    clients = AwsClients(
        endpoint_url=config.agent.endpoint_url,
        connect_timeout_s=config.agent.connect_timeout_s,
        read_timeout_s=config.agent.read_timeout_s,
        max_attempts=config.agent.max_attempts,
        session=session,
    )
    runner = CommandRunner(default_timeout_s=config.agent.command_timeout_s)
    host.setdefault("systemd", lambda: False)
    host.setdefault("selinux", lambda: None)
    return Doctor(
        config,
        aws=AwsProbe(clients, queue_region, clock=clock, imds_timeout_s=imds_timeout_s),
        host=HostChecks(config, httpd(config.agent, runner), runner, **host),
        state_file=StateFile(config.agent.state_dir),
        in_container=in_container,
        clock=clock,
    )


def write_config(
    path: Path,
    endpoint_url: str,
    certs: Mapping[str, Mapping[str, str]],
    **agent: str,
) -> Config:
    """A config whose httpd commands do nothing (for checks of the AWS side)."""
    values: Dict[str, str] = {
        "endpoint_url": endpoint_url,
        "configtest_command": "/bin/true",
        "reload_command": "/bin/true",
        "start_command": "/bin/true",
        "httpd_pid_file": str(path.parent / "httpd.pid"),
        "live_dir": str(path.parent / "live"),
        "state_dir": str(path.parent / "state"),
        "max_attempts": "1",
        "connect_timeout_s": "2",
        "read_timeout_s": "5",
    }
    values.update(agent)
    lines = ["[agent]", *(f"{k} = {v}" for k, v in values.items())]
    for name, options in certs.items():
        lines += ["", f"[cert:{name}]", *(f"{k} = {v}" for k, v in options.items())]
    path.write_text("\n".join(lines) + "\n")
    return load(str(path))


def by_id(report: Report) -> Dict[str, Check]:
    return {check.id: check for check in report.checks}
