"""`certpull [-c CONFIG] COMMAND`: the only place that prints and chooses exit codes.

`status` and `check-config` import neither boto3 nor cryptography: monitoring calls `status` every
minute on every host and it must answer in well under 200 ms. The daemon module (and with it boto3)
is imported only by the commands that talk to AWS or httpd.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence

from certpull import __version__, check_now
from certpull.config import COMPAT_LINK_KEYS, DEFAULT_CONFIG_PATH, Config
from certpull.config_files import load
from certpull.errors import CertpullError, ConfigError
from certpull.fileops import path_problem, resolve_group, resolve_owner
from certpull.state import StateDamaged, StateFile
from certpull.status import UNKNOWN, build_report, render_text

if TYPE_CHECKING:
    from certpull.agent import Agent
    from certpull.outcome import Outcome

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

DESCRIPTION = """\
certpull keeps the TLS certificate, chain and private key that Apache httpd serves equal to the
AWSCURRENT version of AWS Secrets Manager secrets. It validates every new secret before anything
touches disk, installs the four PEM files atomically (one rename), reloads httpd gracefully, checks
with a real TLS handshake that the new certificate is served, and rolls back on its own otherwise.
"""

EPILOG = f"""\
files:
  {DEFAULT_CONFIG_PATH}     configuration (INI; -c PATH or $CERTPULL_CONFIG override)
  /etc/pki/certpull/NAME/        live files: cert.pem chain.pem fullchain.pem privkey.pem
                                 (symlinks into ..data -> a hidden versioned directory)
  /var/lib/certpull/state.json   what is installed, last check, last error (read by `status`)

exit codes:
  sync, verify, rollback  0 all good, 1 a certificate failed (the previous one stays installed),
                          2 configuration or usage error
  status                  0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (monitoring-plugin convention)
  check-config            0 valid, 2 invalid
  doctor                  0 every check passed (or does not apply here), 1 a check failed,
                          2 configuration or usage error
  check-now               0 installed or current, 1 failed (the previous one stays), 2 config
                          or usage error, 3 no agent running (--no-fallback), 4 timed out

examples:
  certpull check-config                 validate {DEFAULT_CONFIG_PATH}
  certpull sync --dry-run               show what a pass would install, change nothing
  certpull sync www                     one pass for [cert:www] now
  certpull status --json                machine-readable status for monitoring
  certpull rollback www                 re-activate the previous certificate of [cert:www]
  certpull doctor                       why a certificate would not arrive or not be served, and the fix
  certpull check-now --secret ARN       ask the running agent to check now (the doorbell's command)
  systemctl enable --now certpull       run the agent (`certpull run`) under systemd

See the README for the configuration keys, cross-account set-up and rotation events.
"""


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="certpull",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"certpull {__version__}")
    parser.add_argument(
        "-c",
        "--config",
        metavar="PATH",
        default=os.environ.get("CERTPULL_CONFIG", DEFAULT_CONFIG_PATH),
        help=f"configuration file (default: $CERTPULL_CONFIG or {DEFAULT_CONFIG_PATH})",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log at debug level (overrides log_level)"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    commands.add_parser(
        "run",
        help="run the agent: poll or listen for rotations, install, reload, verify (systemd ExecStart)",
        description="The long-running agent. SIGHUP reloads the config, SIGUSR1 checks every "
        "certificate now, SIGTERM finishes an install in progress and exits 0.",
    )
    sync = commands.add_parser(
        "sync",
        help="one pass now: check, fetch, validate, install, reload, verify",
        description="One pass over the named certificates (all by default). Exit 0 when all are "
        "current, 1 when any failed (its previous certificate stays installed and served).",
    )
    sync.add_argument("--dry-run", action="store_true", help="fetch and validate, change nothing")
    sync.add_argument(
        "--retry-refused",
        action="store_true",
        help="install even a bundle httpd refused before (it stopped httpd, failed the config "
        "test alone or was not served), once its cause is fixed",
    )
    sync.add_argument(
        "names", nargs="*", metavar="NAME", help="[cert:NAME] sections (default: all)"
    )

    status = commands.add_parser(
        "status",
        help="what is installed and served, expiry, last check and error, daemon liveness",
        description="Exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN. Reads state.json and the live "
        "files only: it makes no AWS call.",
    )
    status.add_argument("--json", action="store_true", help="print JSON")
    status.add_argument("names", nargs="*", metavar="NAME")

    commands.add_parser(
        "check-config",
        help="validate the configuration and its drop-ins on this host (exit 0 or 2)",
        description="Parses the main file and conf.d/*.conf, then checks this host: owner and "
        "group exist, and live_dir, state_dir and compat-link directories cannot be written by "
        "other users (each problem with its fix).",
    )

    doctor = commands.add_parser(
        "doctor",
        help="read-only diagnosis: credentials, permissions (role, resource and key policies), "
        "clock, events, httpd, sandbox; each failure with its fix",
        description="Checks every link from this host's AWS credentials to the certificate httpd "
        "serves, read-only (no install, no reload, nothing consumed from the queue), with the "
        "agent's own permissions. Each failure names the principal, the denied action and the "
        "policy statement to add and where, with the real ARNs; a statement AWS's answer does not "
        "pin down is marked inferred. Exit 0 when every check passed or does not apply here, 1 "
        "when any failed, 2 on a configuration or usage error.",
    )
    doctor.add_argument("--json", action="store_true", help="print JSON")
    doctor.add_argument(
        "names", nargs="*", metavar="NAME", help="[cert:NAME] sections (default: all)"
    )

    verify = commands.add_parser(
        "verify",
        help="TLS handshake to each `verify` target; compare the served leaf with the installed one",
    )
    verify.add_argument("names", nargs="*", metavar="NAME")

    rollback = commands.add_parser(
        "rollback",
        help="re-activate the previous version of one certificate, reload and verify",
        description="The version rolled back from is held: it is not installed again until the "
        "secret's AWSCURRENT moves to another version.",
    )
    rollback.add_argument("name", metavar="NAME")
    check_now.add_parser(commands)
    return parser


def _check_names(config: Config, names: Sequence[str]) -> None:
    unknown = [name for name in names if name not in config.names]
    if unknown:
        raise ConfigError(
            f"no [cert:{unknown[0]}] section (configured: {', '.join(config.names)})", config.path
        )


def _agent(config: Config) -> Agent:
    from certpull.wiring import build_agent  # noqa: PLC0415 - keeps boto3 off the status path

    return build_agent(config, log_outcomes=False)  # outcomes are printed to stdout instead


def _print_outcomes(outcomes: Sequence[Outcome]) -> int:
    failed = False
    for outcome in outcomes:
        print(outcome.message)
        failed = failed or not outcome.ok
    return EXIT_FAILED if failed else EXIT_OK


def host_problems(config: Config) -> List[str]:
    """What the config names that this host does not have, or that root must not trust:
    unknown owners and groups, and directories others could write (each with its fix)."""
    problems = []
    for key, path in (("live_dir", config.agent.live_dir), ("state_dir", config.agent.state_dir)):
        problem = path_problem(path)
        if problem:
            problems.append(f"{key}: {problem}")
    for cert in config.certs:
        for key, resolve, value in (
            ("owner", resolve_owner, cert.owner),
            ("group", resolve_group, cert.group),
        ):
            try:
                resolve(value)
            except CertpullError as exc:
                problems.append(f"[cert:{cert.name}] {key}: {exc}")
        for link_key in COMPAT_LINK_KEYS:
            link = getattr(cert, link_key)
            if link is None:
                continue
            parent = os.path.dirname(link)
            problem = path_problem(parent)
            if problem is None and not os.path.isdir(parent):
                problem = f"directory {parent} does not exist"
            if problem:
                problems.append(f"[cert:{cert.name}] {link_key}: {problem}")
    return problems


def cmd_check_config(config: Config, args: argparse.Namespace) -> int:
    problems = host_problems(config)
    for problem in problems:
        print(f"certpull: {config.path}: {problem}", file=sys.stderr)
    if problems:
        return EXIT_USAGE
    dropins = len(config.sources) - 1
    files = (
        f"{config.path} (+{dropins} drop-in{'s' if dropins != 1 else ''})"
        if dropins
        else config.path
    )
    print(f"{files}: OK, {len(config.certs)} certificate(s): {', '.join(config.names)}")
    return EXIT_OK


def cmd_sync(config: Config, args: argparse.Namespace) -> int:
    _check_names(config, args.names)
    agent = _agent(config)
    if not args.dry_run:
        for problem in agent.recover():  # an interrupted earlier run leaves staging dirs behind
            print(f"certpull: {problem}", file=sys.stderr)
    report = agent.sync(args.names or None, dry_run=args.dry_run, retry_refused=args.retry_refused)
    return _print_outcomes(report.outcomes)


def cmd_verify(config: Config, args: argparse.Namespace) -> int:
    _check_names(config, args.names)
    return _print_outcomes(_agent(config).verify(args.names or None))


def cmd_rollback(config: Config, args: argparse.Namespace) -> int:
    _check_names(config, [args.name])
    return _print_outcomes([_agent(config).rollback(args.name)])


def cmd_status(config: Config, args: argparse.Namespace) -> int:
    _check_names(config, args.names)
    try:
        state = StateFile(config.agent.state_dir).load()
    except StateDamaged as exc:
        return _status_unknown(args, f"{exc}; the next pass of the agent rebuilds it")
    except CertpullError as exc:
        return _status_unknown(args, str(exc))
    now = time.time()
    try:
        report = build_report(config, state, now, args.names or None)
    except Exception as exc:  # status answers in its own format, whatever happened
        return _status_unknown(args, f"cannot build the report: {type(exc).__name__}: {exc}")
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, sort_keys=True))
    else:
        sys.stdout.write(render_text(report, now))
    return report.severity


def cmd_doctor(config: Config, args: argparse.Namespace) -> int:
    _check_names(config, args.names)
    from certpull.doctor_report import render_text as render_doctor  # noqa: PLC0415
    from certpull.wiring import build_doctor  # noqa: PLC0415 - keeps boto3 off the status path

    report = build_doctor(config).run(args.names or None)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        sys.stdout.write(render_doctor(report))
    return report.exit_code


def cmd_check_now(config: Config, args: argparse.Namespace) -> int:
    def sync(cfg: Config, names: List[str]) -> int:  # no agent answers: this process does it
        return cmd_sync(cfg, argparse.Namespace(names=names, dry_run=False, retry_refused=False))

    return check_now.run(config, args, sync=sync)


def cmd_run(config: Config, args: argparse.Namespace) -> int:
    from certpull.startup import run_daemon  # noqa: PLC0415 - keeps the daemon off the status path

    return run_daemon(config, verbose=args.verbose)


COMMANDS: Dict[str, Callable[[Config, argparse.Namespace], int]] = {
    "check-config": cmd_check_config,
    "sync": cmd_sync,
    "status": cmd_status,
    "verify": cmd_verify,
    "rollback": cmd_rollback,
    "doctor": cmd_doctor,
    "run": cmd_run,
    "check-now": cmd_check_now,
}


def _setup_logging(config: Optional[Config], verbose: bool) -> None:
    """certpull's own logger only: botocore's debug output would print secret payloads."""
    from certpull.logs import setup_logging  # noqa: PLC0415 - `status` logs nothing: no logging import

    level_name = "debug" if verbose else (config.agent.log_level if config else "info")
    setup_logging(level_name.upper())


def _status_unknown(args: argparse.Namespace, reason: str) -> int:
    """`status` answers in its own format even when it cannot read its inputs."""
    if getattr(args, "json", False):
        print(json.dumps({"status": "UNKNOWN", "exit_code": UNKNOWN, "summary": reason}))
    else:
        print(f"CERTPULL UNKNOWN - {reason}")
    return UNKNOWN


def main(argv: Optional[List[str]] = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        config = load(args.config)
    except ConfigError as exc:
        if args.command == "status":
            return _status_unknown(args, str(exc))
        print(f"certpull: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.command not in ("run", "status"):
        _setup_logging(config, args.verbose)
    try:
        return COMMANDS[args.command](config, args)
    except ConfigError as exc:
        print(f"certpull: {exc}", file=sys.stderr)
        return UNKNOWN if args.command == "status" else EXIT_USAGE
    except CertpullError as exc:
        print(f"certpull: {exc}", file=sys.stderr)
        return UNKNOWN if args.command == "status" else EXIT_FAILED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
