"""The composition root: the only place that builds real adapters.

botocore clients, the command runner, httpd, live directories (with owners and SELinux labels), the
state file, the drift watcher and the SQS event queue are made here from a Config and handed to
the pass (agent.py) and the daemon (daemon.py) through their constructors. Tests build the same
objects with fakes instead; nothing below this module constructs an adapter itself.

Importing this module imports botocore and cryptography: `certpull status` must not (cli.py imports
it lazily), and `certpull run` does only after READY=1 when the certificates are in place
(startup.py); the doctor's modules are imported only by `build_doctor`. The local adapters'
factories are wiring_local.py's.
"""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING, Any, Callable, List, Mapping, Optional

import botocore.session

from certpull import __version__
from certpull.agent import Agent
from certpull.aws import AwsClients
from certpull.config import AgentConfig, Config
from certpull.config_files import load
from certpull.control import ControlServer, PassResults, config_resolver
from certpull.daemon import AgentLoop, drift_paths
from certpull.drift import DriftWatcher
from certpull.event_queue import EventQueue
from certpull.fleet_files import SSM_DATA_DIR, FleetFiles, inventory_dir
from certpull.fleet_loop import RotationBook
from certpull.httpd import Httpd
from certpull.httpd_pid import locate
from certpull.instance_id import default_readers, first_of
from certpull.notify import Notifier
from certpull.proc import CommandRunner
from certpull.source import SecretSource
from certpull.splay import host_splay_s
from certpull.state import State, StateFile
from certpull.triggers import Mailbox
from certpull.wiring_local import command_runner, compat_factory, live_dir_factory, selinux_restorer
from certpull.x509_worker import Worker

if TYPE_CHECKING:
    from certpull.doctor import Doctor


def aws_clients(
    agent: AgentConfig, session: Optional[botocore.session.Session] = None
) -> AwsClients:
    """botocore clients with the configured endpoint, timeouts and attempts; ``session`` (a
    botocore session) is shared by every AwsClients of `certpull run` (one copy of its data)."""
    return AwsClients(
        endpoint_url=agent.endpoint_url,
        connect_timeout_s=agent.connect_timeout_s,
        read_timeout_s=agent.read_timeout_s,
        max_attempts=agent.max_attempts,
        session=session,
    )


def httpd(agent: AgentConfig, runner: CommandRunner) -> Httpd:
    """httpd's commands; its main process from httpd_pid_file, else learned (httpd_pid.locate)."""
    return Httpd(
        runner,
        configtest_argv=agent.configtest_command,
        reload_argv=agent.reload_command,
        pid_file=agent.httpd_pid_file,
        start_argv=agent.start_command,
        pid_source=locate(
            runner,
            agent.httpd_pid_file,
            agent.reload_command,
            agent.start_command,
            agent.configtest_command,
        ),
    )


def build_agent(
    config: Config,
    log_outcomes: bool = True,
    runner: Optional[CommandRunner] = None,
    on_describe: Optional[Callable[[str, Mapping[str, Any]], None]] = None,
    defer_grace: bool = False,
    session: Optional[botocore.session.Session] = None,
    x509_worker: bool = False,
) -> Agent:
    """The Agent with real adapters: botocore clients, subprocesses, files, TLS handshakes.

    ``runner`` replaces the command runner (a bench times the reload commands through it);
    ``on_describe`` sees each DescribeSecret answer (the daemon's ``RotationBook``).
    ``defer_grace``: the daemon's agent ends httpd's liveness grace early and watches the rest
    between passes; a one-shot command waits it out. ``session``: see aws_clients.
    ``x509_worker``: the X.509 work in a worker process (the daemon: cryptography never loads in
    it), bounded by `command_timeout_s`; else in this process.
    """
    runner = runner or command_runner(config.agent)
    return Agent(
        config,
        source=SecretSource(aws_clients(config.agent, session).secretsmanager, on_describe),
        httpd=httpd(config.agent, runner),
        state_file=StateFile(config.agent.state_dir),
        live_dir_for=live_dir_factory(config, selinux_restorer(runner)),
        compat_for=compat_factory(config),
        log_outcomes=log_outcomes,
        defer_grace=defer_grace,
        x509=Worker(config.agent.command_timeout_s) if x509_worker else None,
    )


def event_queue(config: Config, session: Optional[botocore.session.Session] = None) -> EventQueue:
    """The SQS queue of `events_queue_url`, in the region its URL names."""
    url = config.agent.events_queue_url or ""
    return EventQueue(aws_clients(config.agent, session).sqs(queue_region(url)), url)


def queue_region(url: str) -> str:
    """`https://sqs.eu-west-1.amazonaws.com/...` -> eu-west-1; other hosts: AWS_REGION or us-east-1."""
    host = url.split("/")[2] if url.count("/") >= 2 else ""
    parts = host.split(".")
    if len(parts) >= 3 and parts[0] == "sqs":
        return parts[1]
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


def drift_watcher(config: Config, on_change: Callable[[str], None]) -> DriftWatcher:
    return DriftWatcher(drift_paths(config), on_change)


@functools.cache
def host_id() -> str:
    """This host's instance id (or machine id), looked up once and only when needed: off EC2 the
    IMDS attempt costs up to two seconds."""
    return first_of(default_readers(os.environ)) or ""


def this_host_splay_s(max_s: float) -> float:
    """This host's fixed share of ``[0, max_s)`` (no instance id lookup when ``max_s`` is 0)."""
    return host_splay_s(host_id(), max_s) if max_s > 0 else 0.0


def control_server(
    config: Config,
    trigger: Callable[[str], None],
    results: PassResults,
    certs: Callable[[], Mapping[str, str]],
) -> ControlServer:
    """The `check-now` socket at `control_socket`, waiting this host's splay per request."""
    return ControlServer(
        config.agent.control_socket,
        trigger=trigger,
        results=results,
        resolve=config_resolver(certs),
        splay_s=lambda: this_host_splay_s(config.agent.host_splay_s),
    )


def fleet_files(config: Config) -> FleetFiles:
    """Where the fleet view goes: `ssm_inventory` (auto: the SSM agent's custom inventory
    directory of this instance, when an SSM agent keeps its data here) and
    `prometheus_textfile_dir`."""
    where = config.agent.ssm_inventory
    inventory: Optional[str] = None
    if where == "auto":
        inventory = inventory_dir(host_id()) if os.path.isdir(SSM_DATA_DIR) and host_id() else None
    elif where != "no":
        inventory = where
    return FleetFiles(inventory_dir=inventory, prometheus_dir=config.agent.prometheus_textfile_dir)


def publish_fleet_view(config: Config, state: State) -> List[str]:
    return fleet_files(config).publish(state, __version__)


def read_state(config: Config) -> State:
    return StateFile(config.agent.state_dir).load()


def build_daemon(
    config: Config,
    notifier: Optional[Notifier] = None,
    mailbox: Optional[Mailbox] = None,
    ready_sent: bool = False,
) -> AgentLoop:
    """`certpull run`'s loop with the real collaborators; its agents (one per config reload) and
    its event queue share one botocore session. startup.py hands in the ``notifier`` and the
    ``mailbox`` its signal handlers post to, and ``ready_sent`` when READY=1 went out already."""
    book = RotationBook()
    session = botocore.session.get_session()
    return AgentLoop(
        config,
        make_agent=functools.partial(
            build_agent,
            on_describe=book.record,
            defer_grace=True,
            session=session,
            x509_worker=True,
        ),
        load=load,
        notifier=notifier or Notifier(),
        mailbox=mailbox,
        ready_sent=ready_sent,
        make_event_queue=functools.partial(event_queue, session=session),
        make_drift_watcher=drift_watcher,
        make_control=control_server,
        rotation_facts=book.get,
        read_state=read_state,
        publish=publish_fleet_view,
        host_splay_s=this_host_splay_s,
    )


def build_doctor(config: Config) -> Doctor:
    """`certpull doctor` with the agent's own clients, runner and httpd commands (read-only)."""
    # Imported here: `certpull run` never needs the doctor's modules.
    from certpull.doctor import Doctor  # noqa: PLC0415
    from certpull.doctor_aws import AwsProbe  # noqa: PLC0415
    from certpull.doctor_host import HostChecks, in_container  # noqa: PLC0415

    runner = command_runner(config.agent)
    return Doctor(
        config,
        aws=AwsProbe(aws_clients(config.agent), queue_region),
        host=HostChecks(config, httpd(config.agent, runner), runner),
        state_file=StateFile(config.agent.state_dir),
        in_container=in_container,
    )
