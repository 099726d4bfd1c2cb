"""`certpull run` with the doorbell's control socket served, composed as the daemon will wire it
(until loop.py / wiring.py do it themselves): the real AgentLoop and Agent, a ControlServer whose
trigger is the loop's Mailbox and whose results come from each pass.

    python -m tests.doorbell_daemon CONFIG SOCKET [SPLAY_MAX_S]

The one difference from the final wiring: here the pass results are recorded by wrapping
`Agent.sync`; in the daemon they are two calls in `AgentLoop._pass` around the same call.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Dict, Optional, Sequence

from certpull.config import Config, load_config
from certpull.control import FAILED, CheckResult, ControlServer, PassResults, config_resolver
from certpull.daemon import Agent, PassReport, build_agent
from certpull.instance_id import default_readers, first_of
from certpull.logs import setup_logging
from certpull.loop import AgentLoop, Mailbox
from certpull.notify import Notifier
from certpull.splay import host_splay_s


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


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def main(argv: Sequence[str]) -> int:
    config_path, socket_path = argv[0], argv[1]
    splay_max_s = float(argv[2]) if len(argv) > 2 else 0.0
    config = load_config(config_path, _read_text)
    setup_logging(config.agent.log_level.upper())
    results = PassResults()
    mailbox = Mailbox()

    def make_agent(cfg: Config) -> Agent:
        return RecordingAgent(build_agent(cfg), results)  # type: ignore[return-value]

    loop = AgentLoop(
        config,
        make_agent=make_agent,
        load=lambda path: load_config(path, _read_text),
        notifier=Notifier(),
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
