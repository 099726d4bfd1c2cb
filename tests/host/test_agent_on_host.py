"""What the agent tells systemd and the journal on a real host, and how it finds httpd there:
journald fields, STATUS=, compat links on an unmodified ssl.conf, the shipped httpd defaults."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest

from tests.aws_local import LocalAws
from tests.host.host import LIVE, Host, Image, wait_for
from tests.pki import Pki, make_ca, make_leaf


def check_now(host: Host) -> None:
    """SIGUSR1: every certificate is checked now (what an operator or a rotation event does)."""
    host.sh("systemctl", "kill", "--kill-who=main", "-s", "USR1", "certpull.service")


def agent_entries(host: Host) -> List[Dict[str, Any]]:
    return [e for e in host.journal() if e.get("SYSLOG_IDENTIFIER") == "certpull"]


@pytest.mark.timeout(240, func_only=True)
def test_journal_fields_of_a_rotation_and_a_rejected_secret(
    image: Image, local_aws: LocalAws, pki: Pki
) -> None:
    with Host(image, local_aws, pki, "journal") as host:
        host.add_site("www")
        host.write_config({"startup_splay_s": "0"})
        host.write_apache()
        host.boot()
        host.provision()
        new = host.rotate("www")
        version = host.current_version()
        check_now(host)
        wait_for("the rotated leaf served", host.serves, 60, context=host.describe)

        def installed() -> List[Dict[str, Any]]:
            return [
                e
                for e in agent_entries(host)
                if f"installed version {version}" in e.get("MESSAGE", "")
            ]

        wait_for("the install logged", lambda: bool(installed()), 30, context=host.describe)
        assert len(installed()) == 1, host.describe()
        entry = installed()[0]
        assert entry["PRIORITY"] == "6"
        assert entry["CERT_NAME"] == "www"
        assert entry["SECRET_ARN"] == host.sites["www"].secret_arn
        assert entry["VERSION_ID"] == version
        assert entry["_SYSTEMD_UNIT"] == "certpull.service"

        other_key = make_leaf(make_ca("unrelated", slot=8), slot=8)
        host.rotate("www", secret=pki.secret(pki.leaf(), PRIVATE_KEY_PEM=other_key.key_pem()))
        check_now(host)
        wait_for(
            "the rejection logged",
            lambda: any(
                e.get("PRIORITY") == "3" and e.get("CERT_NAME") == "www"
                for e in agent_entries(host)
            ),
            60,
            context=host.describe,
        )
        rejected = [e for e in agent_entries(host) if e.get("PRIORITY") == "3"]
        assert "PRIVATE_KEY_PEM does not match CERTIFICATE_PEM" in rejected[-1]["MESSAGE"]
        assert rejected[-1]["SECRET_ARN"] == host.sites["www"].secret_arn
        assert host.serves("www", new)  # the rejected secret changed nothing
        everything = host.sh("journalctl", "--no-pager", "-b", "-o", "export").stdout
        assert "PRIVATE KEY" not in everything


@pytest.mark.releases("bookworm")
@pytest.mark.timeout(240, func_only=True)
def test_systemd_status_text_summarises_every_certificate(
    image: Image, local_aws: LocalAws, pki: Pki
) -> None:
    """`systemctl status`'s Status: line while one of two certificates keeps failing: every pass
    after the first covers only what is due, and the line must still say one is failing."""
    with Host(image, local_aws, pki, "statustext") as host:
        host.add_site("www")
        host.add_site("api", server_name="api.example.com", verify="")
        host.write_config({"startup_splay_s": "0", "poll_interval_s": "3"})
        host.write_apache()
        host.boot()
        host.provision()
        other_key = make_leaf(make_ca("unrelated", slot=8), slot=8)
        host.rotate(
            "api",
            secret=pki.secret(
                pki.leaf(names=("api.example.com",)), PRIVATE_KEY_PEM=other_key.key_pem()
            ),
        )
        check_now(host)
        wait_for(
            "api failing in state.json",
            lambda: bool((host.state().get("certs", {}).get("api") or {}).get("last_error")),
            60,
            context=host.describe,
        )
        texts = []
        for _ in range(40):  # ~20 s: several passes over www alone while api is in backoff
            texts.append(host.show("certpull.service", "StatusText")["StatusText"])
            assert (host.state()["certs"]["api"] or {}).get("last_error")
            time.sleep(0.5)
        claims_ok = [t for t in texts if "failing" not in t]
        assert claims_ok == [], f"StatusText said {claims_ok[0]!r} while api was failing"


def stock_certificate() -> Any:
    """mod_ssl's self-signed localhost certificate, as on a fresh Amazon Linux host."""
    return make_leaf(
        make_ca("localhost stock CA", slot=7), names=("localhost", "127.0.0.1"), slot=7
    )


@pytest.mark.releases("bookworm")
@pytest.mark.timeout(180, func_only=True)
def test_compat_links_on_an_unmodified_ssl_conf_serve_the_secret(
    image: Image, local_aws: LocalAws, pki: Pki
) -> None:
    """The README's set-up for an unmodified ssl.conf: httpd runs on /etc/pki/tls/...localhost.*
    (AL2023's paths), the config names them as compat links, the agent is enabled. Its first
    install must create the links and reload httpd: clients get the secret's certificate."""
    with Host(image, local_aws, pki, "compat") as host:
        stock = stock_certificate()
        host.write_file("/etc/pki/tls/certs/localhost.crt", stock.pem)
        host.write_file("/etc/pki/tls/private/localhost.key", stock.key_pem(), mode=0o600)
        host.add_site(
            "www",
            cert_file="/etc/pki/tls/certs/localhost.crt",
            key_file="/etc/pki/tls/private/localhost.key",
        )
        host.write_config({"startup_splay_s": "0"})
        host.write_apache(
            {
                "www": {
                    "SSLCertificateFile": "/etc/pki/tls/certs/localhost.crt",
                    "SSLCertificateKeyFile": "/etc/pki/tls/private/localhost.key",
                }
            }
        )
        host.boot()  # certpull and apache2 are enabled in the image
        # A fresh host: the agent's first install (links made) comes before READY, so apache2
        # starts on the secret's certificate, never on the stock one.
        wait_for(
            "the secret's leaf served through the compat links",
            host.serves,
            60,
            context=host.describe,
        )
        link = host.root / "etc/pki/tls/certs/localhost.crt"
        assert link.is_symlink() and Path(os.readlink(link)) == Path(f"{LIVE}/www/cert.pem")
        # installed before apache2 started: proven served by the agent's second look, seconds later
        wait_for(
            "certpull status OK", lambda: host.status_json()[0] == 0, 30, context=host.describe
        )


@pytest.mark.releases("bookworm")
@pytest.mark.timeout(180, func_only=True)
def test_a_compat_link_the_sandbox_forbids_shows_in_status(
    image: Image, local_aws: LocalAws, pki: Pki
) -> None:
    """cert_file outside the unit's ReadWritePaths (here /etc/ssl) without the drop-in the unit's
    header asks for: the agent cannot make the link, and `certpull status` must say so."""
    with Host(image, local_aws, pki, "compatdenied") as host:
        host.add_site("www", cert_file="/etc/ssl/certs/certpull-www.pem")
        host.write_config({"startup_splay_s": "0"})
        host.write_apache()
        host.boot()
        wait_for(
            "www installed by the agent",
            lambda: "installed" in (host.state().get("certs", {}).get("www") or {}),
            60,
            context=host.describe,
        )
        code, status = host.status_json()
        problems = status["certs"]["www"]["problems"]
        assert code != 0 and any("/etc/ssl/certs/certpull-www.pem" in p for p in problems), status


@pytest.mark.releases("bookworm")
@pytest.mark.timeout(180, func_only=True)
def test_shipped_httpd_defaults_on_debian_fail_loudly_naming_the_unit(
    image: Image, local_aws: LocalAws, pki: Pki
) -> None:
    """The shipped [agent] defaults name AL2023's httpd.service. On Debian (apache2.service) the
    agent must not take httpd for stopped and install without reloading (what a guessed pid file
    did): `certpull sync` fails, naming the unit, and status says so."""
    with Host(image, local_aws, pki, "defaults") as host:
        host.add_site("www")
        host.write_config({"startup_splay_s": "0"}, debian_names=False)
        host.write_apache()
        host.boot()
        host.sh("systemctl", "stop", "certpull.service")
        host.sh("systemctl", "restart", "apache2.service")  # on the files of the first boot
        new = host.rotate("www")
        result = host.certpull("sync")
        assert result.returncode == 1, result.stdout + result.stderr
        assert "httpd.service" in result.stdout + result.stderr
        assert "not running" not in result.stdout + result.stderr
        code, status = host.status_json()
        assert code != 0 and "httpd.service" in status["certs"]["www"]["last_error"], status
        assert not host.serves("www", new)


@pytest.mark.releases("bookworm")
@pytest.mark.timeout(180, func_only=True)
def test_shipped_httpd_defaults_resolve_httpd_service_as_on_al2023(
    image: Image, local_aws: LocalAws, pki: Pki
) -> None:
    """What the AL2023 defaults resolve to, unchanged: a unit named httpd.service (here Debian's
    apache2.service under that name, an alias), its MainPID from systemd, no pid file path. A
    rotation is reloaded into it and served."""
    with Host(image, local_aws, pki, "al2023names") as host:
        alias = host.root / "etc/systemd/system/httpd.service"
        alias.symlink_to("/lib/systemd/system/apache2.service")
        host.add_site("www")
        host.write_config({"startup_splay_s": "0"}, debian_names=False)
        host.write_apache()
        host.boot()
        wait_for("the first certificate served", host.serves, 60, context=host.describe)
        first_boot = len(host.messages())  # its install ran before apache2 started: "not running"
        new = host.rotate("www")
        check_now(host)
        wait_for(
            "the rotated leaf served", lambda: host.serves("www", new), 60, context=host.describe
        )
        messages = host.messages()[first_boot:]
        assert not [m for m in messages if "not running" in m], messages
        assert "Reloaded apache2.service - The Apache HTTP Server." in host.messages(
            "apache2.service"
        )
        wait_for(
            "certpull status OK", lambda: host.status_json()[0] == 0, 30, context=host.describe
        )
        code, status = host.status_json()
        assert code == 0, status
        assert status["certs"]["www"]["last_verify_ok"] is True
