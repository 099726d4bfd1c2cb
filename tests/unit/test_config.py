"""config.py: the INI contract, table-driven. Every error names file, line and key."""

from __future__ import annotations

import textwrap

import pytest

from certpull.config import AgentConfig, agent_keys, cert_keys, load_config, parse_config
from certpull.errors import ConfigError

ARN = "arn:aws:secretsmanager:eu-west-1:111122223333:secret:www-tls-AbCdEf"
PATH = "/etc/certpull/certpull.conf"


def conf(text: str) -> str:
    return textwrap.dedent(text).lstrip()


MINIMAL = conf(
    f"""
    [cert:www]
    secret_arn = {ARN}
    """
)


def test_minimal_config_gets_documented_defaults() -> None:
    config = parse_config(MINIMAL, PATH)
    assert config.agent == AgentConfig()
    assert config.agent.reload_command == ("systemctl", "reload", "httpd")
    assert config.agent.live_dir == "/etc/pki/certpull"
    (cert,) = config.certs
    assert cert.name == "www" and cert.secret_arn == ARN
    assert cert.region == "eu-west-1" and cert.account == "111122223333"
    assert cert.key_mode == 0o600 and cert.keep_versions == 2 and cert.verify is None


def test_design_md_example_parses_with_inline_comments() -> None:
    text = conf(
        f"""
        [agent]
        poll_interval_s = 300          ; jittered; cheap DescribeSecret check
        events_queue_url =             ; optional SQS queue
        reload_command = systemctl reload httpd
        configtest_command = apachectl configtest
        live_dir = /etc/pki/certpull
        state_dir = /var/lib/certpull
        install_window =
        endpoint_url =                 ; optional endpoint

        [cert:www]
        secret_arn = {ARN}
        role_arn =                     ; optional role to assume
        server_name = www.example.com  ; optional: the new leaf must cover it
        verify = 127.0.0.1:443         ; after reload, the served leaf must equal the installed one
        """
    )
    config = parse_config(text, PATH)
    assert config.agent.events_queue_url is None
    cert = config.cert("www")
    assert cert.role_arn is None and cert.server_name == "www.example.com"
    assert cert.verify == ("127.0.0.1", 443)


def test_several_certs_compat_links_and_typed_values() -> None:
    text = conf(
        f"""
        [agent]
        poll_interval_s = 60
        reload_command = /usr/sbin/apachectl -k graceful
        max_attempts = 5
        log_level = DEBUG

        [cert:www]
        secret_arn = {ARN}
        cert_file = /etc/pki/tls/certs/localhost.crt
        key_file = /etc/pki/tls/private/localhost.key
        key_mode = 0640
        group = apache
        allow_downgrade = yes

        [cert:api.example]
        secret_arn = arn:aws:secretsmanager:us-east-1:444455556666:secret:api
        role_arn = arn:aws:iam::444455556666:role/certpull-reader
        external_id = fleet-7
        verify = [::1]:8443
        keep_versions = 5
        """
    )
    config = parse_config(text, PATH)
    assert config.names == ("www", "api.example")
    assert config.agent.poll_interval_s == 60.0
    assert config.agent.reload_command == ("/usr/sbin/apachectl", "-k", "graceful")
    assert config.agent.log_level == "debug"
    www = config.cert("www")
    assert www.compat_links == (
        ("/etc/pki/tls/certs/localhost.crt", "cert.pem"),
        ("/etc/pki/tls/private/localhost.key", "privkey.pem"),
    )
    assert www.key_mode == 0o640 and www.group == "apache" and www.policy.allow_downgrade
    api = config.cert("api.example")
    assert api.role_arn and api.external_id == "fleet-7"
    assert api.verify == ("::1", 8443) and api.keep_versions == 5


BAD = [
    # (id, text, line, key, message fragment)
    ("unknown-section", "[global]\nx = 1\n" + MINIMAL, 1, None, "unknown section [global]"),
    ("default-section", "[DEFAULT]\nx = 1\n" + MINIMAL, 1, None, "unknown section [DEFAULT]"),
    (
        "unknown-agent-key",
        "[agent]\npoll_interval = 5\n" + MINIMAL,
        2,
        "poll_interval",
        "unknown key in [agent]",
    ),
    ("unknown-cert-key", MINIMAL + "secret = x\n", 3, "secret", "unknown key in [cert:www]"),
    ("no-cert-section", "[agent]\npoll_interval_s = 60\n", None, None, "no [cert:NAME] section"),
    (
        "missing-secret-arn",
        "[cert:www]\nserver_name = a.example\n",
        1,
        "secret_arn",
        "needs secret_arn",
    ),
    (
        "bad-arn-service",
        "[cert:www]\nsecret_arn = arn:aws:s3:::bucket\n",
        2,
        "secret_arn",
        "is not a Secrets Manager secret ARN",
    ),
    (
        "bad-arn-account",
        "[cert:www]\nsecret_arn = arn:aws:secretsmanager:us-east-1:1234:secret:x\n",
        2,
        "secret_arn",
        "is not a Secrets Manager secret ARN",
    ),
    (
        "bad-role-arn",
        MINIMAL + "role_arn = arn:aws:iam::111122223333:user/bob\n",
        3,
        "role_arn",
        "is not an IAM role ARN",
    ),
    (
        "external-id-without-role",
        MINIMAL + "external_id = x\n",
        3,
        "external_id",
        "only used with role_arn",
    ),
    (
        "relative-live-dir",
        "[agent]\nlive_dir = pki/certpull\n" + MINIMAL,
        2,
        "live_dir",
        "is not an absolute path",
    ),
    (
        "dotdot-state-dir",
        "[agent]\nstate_dir = /var/lib/../tmp\n" + MINIMAL,
        2,
        "state_dir",
        "must not contain '..'",
    ),
    (
        "relative-compat-link",
        MINIMAL + "cert_file = localhost.crt\n",
        3,
        "cert_file",
        "is not an absolute path",
    ),
    (
        "world-readable-key-mode",
        MINIMAL + "key_mode = 0644\n",
        3,
        "key_mode",
        "would let other users read the private key",
    ),
    ("not-octal-mode", MINIMAL + "cert_mode = 0999\n", 3, "cert_mode", "is not an octal file mode"),
    (
        "unreadable-key-mode",
        MINIMAL + "key_mode = 0200\n",
        3,
        "key_mode",
        "does not let the owner read",
    ),
    (
        "interval-not-number",
        "[agent]\npoll_interval_s = five\n" + MINIMAL,
        2,
        "poll_interval_s",
        "is not a number",
    ),
    (
        "interval-too-small",
        "[agent]\npoll_interval_s = 0.5\n" + MINIMAL,
        2,
        "poll_interval_s",
        "out of range",
    ),
    (
        "keep-versions-one",
        MINIMAL + "keep_versions = 1\n",
        3,
        "keep_versions",
        "out of range [2, 50]",
    ),
    ("bad-bool", MINIMAL + "include_root = maybe\n", 3, "include_root", "is not a boolean"),
    ("bad-verify", MINIMAL + "verify = localhost\n", 3, "verify", "expected HOST:PORT"),
    (
        "bad-verify-port",
        MINIMAL + "verify = 127.0.0.1:70000\n",
        3,
        "verify",
        "port must be a number from 1 to 65535",
    ),
    (
        "bad-server-name",
        MINIMAL + "server_name = not a name\n",
        3,
        "server_name",
        "is not a DNS name or IP address",
    ),
    (
        "bad-queue-url",
        "[agent]\nevents_queue_url = sqs://queue\n" + MINIMAL,
        2,
        "events_queue_url",
        "is not an SQS queue URL",
    ),
    (
        "bad-endpoint",
        "[agent]\nendpoint_url = localhost:5000\n" + MINIMAL,
        2,
        "endpoint_url",
        "is not an http(s) URL",
    ),
    (
        "unbalanced-quote-command",
        "[agent]\nreload_command = systemctl 'reload\n" + MINIMAL,
        2,
        "reload_command",
        "cannot split",
    ),
    (
        "crit-above-warn",
        "[agent]\nwarn_days = 5\ncrit_days = 10\n" + MINIMAL,
        3,
        "crit_days",
        "larger than warn_days",
    ),
    ("bad-log-level", "[agent]\nlog_level = loud\n" + MINIMAL, 2, "log_level", "is not one of"),
    ("bad-cert-name", f"[cert:../etc]\nsecret_arn = {ARN}\n", 1, None, "certificate name '../etc'"),
    (
        "bad-field-name",
        MINIMAL + "certificate_field = has space\n",
        3,
        "certificate_field",
        "is not a JSON key name",
    ),
    ("duplicate-key", MINIMAL + f"secret_arn = {ARN}\n", 3, "secret_arn", "key appears twice"),
    ("duplicate-section", MINIMAL + MINIMAL, 3, None, "section [cert:www] appears twice"),
    (
        "text-before-section",
        "poll_interval_s = 5\n" + MINIMAL,
        1,
        None,
        "before the first [section]",
    ),
    ("garbage-line", MINIMAL + "this is not a key\n", 3, None, "cannot parse this line"),
    (
        "compat-link-shared",
        MINIMAL
        + "cert_file = /etc/x.crt\n[cert:api]\nsecret_arn = "
        + ARN
        + "\ncert_file = /etc/x.crt\n",
        4,
        None,
        "already a compat link of [cert:www]",
    ),
]


@pytest.mark.parametrize(
    ("text", "line", "key", "fragment"), [b[1:] for b in BAD], ids=[b[0] for b in BAD]
)
def test_bad_config_is_refused_with_file_line_and_key(
    text: str, line: int, key: str, fragment: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, PATH)
    err = info.value
    assert fragment in str(err)
    assert err.path == PATH and err.line == line and err.key == key
    expected_prefix = PATH if line is None else f"{PATH}:{line}"
    assert str(err).startswith(expected_prefix + ": ")
    assert "\n" not in str(err)


def test_load_config_reports_missing_and_unreadable_files() -> None:
    def missing(path: str) -> str:
        raise FileNotFoundError(path)

    def denied(path: str) -> str:
        raise PermissionError(13, "Permission denied")

    with pytest.raises(ConfigError, match=r"^/nope\.conf: no such file$"):
        load_config("/nope.conf", missing)
    with pytest.raises(ConfigError, match="cannot read: Permission denied"):
        load_config("/etc/certpull/certpull.conf", denied)
    assert load_config(PATH, lambda _: MINIMAL).names == ("www",)


def test_shipped_default_config_is_valid_and_documents_every_key() -> None:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "packaging" / "certpull.conf").read_text()
    config = parse_config(text, "packaging/certpull.conf")
    assert config.agent == AgentConfig()
    documented = {
        line.split("=")[0].strip()
        for line in text.splitlines()
        if "=" in line and not line.startswith((";", "#"))
    }
    assert documented >= agent_keys() | cert_keys()


def test_readme_documents_every_key() -> None:
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    documented = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            documented.update(re.findall(r"`([a-z_0-9]+)`", line.split("|")[1]))
    assert agent_keys() | cert_keys() <= documented, sorted(agent_keys() | cert_keys() - documented)
