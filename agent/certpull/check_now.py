"""`certpull check-now NAME...|--secret ARN [--timeout-s N] [--no-fallback]`: the host side of
the doorbell.

SSM Run Command runs it on every host of a wave when a secret's AWSCURRENT moves. It asks the
running agent (over the control socket, ``control.py``) to check those certificates now, waits for
that check, prints one line per certificate and exits with:

====  ===========================================================================================
0     every certificate is installed or already current (or pending the install window, or held
      after a rollback: nothing is wrong with this host); also when no certificate here uses the
      secret (a doorbell rings every host of a fleet)
1     a certificate failed: the previous one stays installed and served
2     configuration or usage error (unknown name, bad arguments, invalid config)
3     no agent is running and ``--no-fallback`` was given
4     the agent did not finish within ``--timeout-s``: it is still working, the installed
      certificate stays until it finishes
====  ===========================================================================================

Without a running agent (no socket, or nobody listening), check-now does what ``certpull sync``
would for those certificates, in this process, and exits as ``sync`` does (0 / 1 / 2): the host
gets the new certificate either way, and the unit's own state (dead or stopped) is for monitoring
(``certpull status``) to report. ``--no-fallback`` makes it exit 3 instead.

The socket is the config's ``control_socket`` (default ``/run/certpull/control.sock``). The CLI
(``cli.py``) wires this module with ``add_parser`` and ``run``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, List

from certpull.config import Config
from certpull.control import (
    DEFAULT_TIMEOUT_S,
    MAX_TIMEOUT_S,
    OK,
    STOPPING,
    TIMEOUT,
    USAGE,
    AgentNotRunning,
    ControlError,
    Reply,
    UsageError,
    config_resolver,
    request_check,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NO_AGENT, EXIT_TIMEOUT = 0, 1, 2, 3, 4

Sync = Callable[[Config, List[str]], int]
"""(config, names) -> exit code of a one-shot sync of those certificates (``cli.cmd_sync``)."""


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``check-now`` to the CLI's subcommands."""
    parser = commands.add_parser(
        "check-now",
        help="ask the running agent to check now and wait for the result (SSM Run Command)",
        description="Ask the running agent to check the named certificates (or every certificate "
        "configured with --secret) now, and wait for that check. Exit 0 installed or current, "
        "1 failed (the previous certificate stays), 2 usage or config error, 3 no agent "
        "running (with --no-fallback), 4 no result within --timeout-s. Without a running "
        "agent it syncs those certificates itself.",
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="[cert:NAME] sections")
    parser.add_argument("--secret", metavar="ARN", help="every certificate using this secret")
    parser.add_argument(
        "--timeout-s",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        help=f"how long to wait for the result (default {DEFAULT_TIMEOUT_S:g})",
    )
    parser.add_argument(
        "--no-fallback",
        action="store_true",
        help="exit 3 when no agent is running instead of syncing in this process",
    )
    parser.add_argument("--socket", default=None, help=argparse.SUPPRESS)  # default: control_socket


def run(
    config: Config,
    args: argparse.Namespace,
    *,
    sync: Sync,
    request: Callable[..., Reply] = request_check,
    out: Callable[[str], None] = print,
    err: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
) -> int:
    """Exit code of `check-now` (table in the module docstring)."""
    if bool(args.names) == bool(args.secret):
        err("certpull check-now: name certificates or give --secret ARN (one of the two)")
        return EXIT_USAGE
    if not 1.0 <= args.timeout_s <= MAX_TIMEOUT_S:
        err(f"certpull check-now: --timeout-s must be between 1 and {MAX_TIMEOUT_S:g}")
        return EXIT_USAGE
    resolve = config_resolver(lambda: {cert.name: cert.secret_arn for cert in config.certs})
    try:
        names = list(resolve(args.names, args.secret))
    except UsageError as exc:
        err(f"certpull check-now: {config.path}: {exc}")
        return EXIT_USAGE
    if not names:
        out(f"no certificate on this host uses {args.secret}")
        return EXIT_OK
    try:
        reply = request(
            args.socket or config.agent.control_socket,
            names=args.names,
            secret_arn=args.secret,
            timeout_s=args.timeout_s,
        )
    except AgentNotRunning as exc:
        return _no_agent(config, names, str(exc), args.no_fallback, sync, err)
    except ControlError as exc:
        err(f"certpull check-now: {exc}")
        return EXIT_FAILED
    if reply.code == STOPPING:
        return _no_agent(config, names, "the agent is stopping", args.no_fallback, sync, err)
    for result in reply.results:
        out(result.message)
    if reply.code == OK:
        if reply.message:
            out(reply.message)
        return EXIT_OK if reply.ok else EXIT_FAILED
    err(f"certpull check-now: {reply.message}")
    return {USAGE: EXIT_USAGE, TIMEOUT: EXIT_TIMEOUT}.get(reply.code, EXIT_FAILED)  # busy: 1


def _no_agent(
    config: Config,
    names: List[str],
    why: str,
    no_fallback: bool,
    sync: Sync,
    err: Callable[[str], None],
) -> int:
    if no_fallback:
        err(f"certpull check-now: {why}; not checking (--no-fallback)")
        return EXIT_NO_AGENT
    err(f"certpull check-now: {why}; syncing {', '.join(names)} in this process")
    return sync(config, names)
