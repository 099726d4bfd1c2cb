"""`certpull run` with the doorbell's control socket served, composed as the daemon will wire it
(until daemon.py / wiring.py do it themselves): the real AgentLoop and Agent, a ControlServer whose
trigger is the loop's Mailbox and whose results come from each pass.

    python -m tests.doorbell_daemon CONFIG SOCKET [SPLAY_MAX_S]

The one difference from the final wiring: here the pass results are recorded by wrapping
`Agent.sync`; in the daemon they are two calls in `AgentLoop._pass` around the same call.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Dict, Optional, Sequence

from certpull.agent import Agent
from certpull.config import Config
from certpull.config_files import load
from certpull.control import FAILED, CheckResult, ControlServer, PassResults, config_resolver
from certpull.daemon import AgentLoop
from certpull.instance_id import default_readers, first_of
from certpull.logs import setup_logging
from certpull.notify import Notifier
from certpull.outcome import PassReport
from certpull.splay import host_splay_s
from certpull.triggers import Mailbox
from certpull.wiring import build_agent, drift_watcher, event_queue


class RecordingAgent:
    """An Agent whose passes are recorded in PassResults (everything else is the Agent's)."""

    def __init__(self, agent: Agent, results: PassResults) -> None:
        self._agent = agent
        self._results = results

    def __getattr__(self, name: str) -> Any:
        return getattr(self._agent, name)

    def sync(self, names: Optional[Sequence[str]] = None, **kwargs: Any) -> PassReport:
        covered = list(names or [])
        pass_id = self._results.started(covered)
        report: Optional[PassReport] = None
        try:
            report = self._agent.sync(names, **kwargs)
            return report
        finally:
            outcomes = {o.name: o for o in (report.outcomes if report else [])}
            found: Dict[str, CheckResult] = {}
            for name in covered:
                outcome = outcomes.get(name)
                found[name] = (
                    CheckResult(name, outcome.status, outcome.message, outcome.version_id)
                    if outcome is not None
                    else CheckResult(name, FAILED, f"{name}: the pass failed (see the agent's log)")
                )
            self._results.finished(pass_id, found)


def main(argv: Sequence[str]) -> int:
    config_path, socket_path = argv[0], argv[1]
    splay_max_s = float(argv[2]) if len(argv) > 2 else 0.0
    config = load(config_path)
    setup_logging(config.agent.log_level.upper())
    results = PassResults()
    mailbox = Mailbox()

    def make_agent(cfg: Config) -> Agent:
        return RecordingAgent(build_agent(cfg), results)  # type: ignore[return-value]

    loop = AgentLoop(
        config,
        make_agent=make_agent,
        load=load,
        notifier=Notifier(),
        make_event_queue=event_queue,
        make_drift_watcher=drift_watcher,
        mailbox=mailbox,
    )
    host_id = first_of(default_readers(os.environ)) or ""
    server = ControlServer(
        socket_path,
        trigger=mailbox.post_trigger,
        results=results,
        resolve=config_resolver(lambda: {c.name: c.secret_arn for c in loop.config.certs}),
        splay_s=host_splay_s(host_id, splay_max_s),
    )
    loop.install_signal_handlers()
    server.start()
    try:
        return loop.run()
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
