"""`certpull doctor` on a host with a real Apache httpd: what it serves, compat links, live files.

Each host check passes on a host `certpull sync` set up, and fails when one thing is changed behind
the agent's back: a vhost serving other files, a compat link replaced by a file, a key's mode,
httpd stopped, a broken httpd config. The CLI's exit codes and --json are checked here too.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, Iterator

import pytest

from certpull.config_files import load
from certpull.doctor_report import Result
from tests.apache import ApacheFactory
from tests.aws_local import LocalAws
from tests.aws_proxy import AwsProxy
from tests.doctor_kit import by_id, make_doctor
from tests.pki import Pki
from tests.site import Site

pytestmark = pytest.mark.integration


@pytest.fixture
def site(
    tmp_path: Path, local_aws: LocalAws, aws_proxy: AwsProxy, apache: ApacheFactory, pki: Pki
) -> Iterator[Site]:
    """A host certpull set up: leaf installed by `sync`, a compat link, Apache serving it."""
    compat = tmp_path / "compat"
    compat.mkdir()
    s = Site(tmp_path, local_aws, aws_proxy, apache.new(), pki)
    s.cert_options["cert_file"] = str(compat / "localhost.crt")
    s.create_secret(pki.leaf())
    done = s.certpull("sync")  # installs and makes the compat link
    assert done.returncode == 0, done.stderr + done.stdout
    s.apache.start()
    yield s


def results(site: Site) -> Dict[str, Result]:
    report = make_doctor(load(str(site.config_path))).run()
    return {check_id: check.result for check_id, check in by_id(report).items()}


def test_cli_doctor_passes_on_a_host_sync_set_up(site: Site) -> None:
    done = site.certpull("doctor")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("certpull doctor: OK - ")
    assert not [line for line in lines[1:] if line.startswith("FAIL")]
    assert any(line.startswith("ok   www: served certificate ") for line in lines)
    data = json.loads(site.certpull("doctor", "--json").stdout)
    assert data["status"] == "ok" and data["exit_code"] == 0
    by = {c["id"]: c["result"] for c in data["checks"]}
    for check_id in (
        "identity",
        "clock",
        "www.describe",
        "www.kms_key",
        "www.get_value",
        "www.content",
        "httpd.binaries",
        "httpd.configtest",
        "httpd.running",
        "www.served",
        "www.compat_links",
        "www.files",
        "state_dir",
    ):
        assert by[check_id] == "passed", (check_id, by)
    assert set(by.values()) <= {"passed", "does not apply"}


def test_cli_exit_codes_for_usage_errors(site: Site, tmp_path: Path) -> None:
    unknown = site.certpull("doctor", "nope")
    assert unknown.returncode == 2 and "no [cert:nope] section" in unknown.stderr
    bad = tmp_path / "bad.conf"
    bad.write_text("[agent]\nno_such_key = 1\n")
    done = site.certpull("-c", str(bad), "doctor")  # the last -c wins
    assert done.returncode == 2 and "unknown key" in done.stderr


def test_vhost_serving_other_files(site: Site, pki: Pki) -> None:
    apache = site.apache
    live = site.cert_dir
    elsewhere = apache.root / "elsewhere"
    elsewhere.mkdir()
    apache.cert_dir = elsewhere  # httpd now reads its certificate from another directory
    apache.use_files(elsewhere / "cert.pem", elsewhere / "privkey.pem", elsewhere / "chain.pem")
    other = pki.leaf(slot=3)
    apache.install_issued(pki, other)
    apache.stop()
    apache.start()
    report = make_doctor(load(str(site.config_path))).run()
    served = by_id(report)["www.served"]
    assert served.result is Result.FAILED
    assert "httpd reads its certificate from somewhere else" in served.detail
    (fix,) = served.fixes
    assert f"{apache.conf_path}:" in fix.where  # the vhost, from `httpd -S`
    assert f"SSLCertificateFile      {live}/cert.pem" in fix.lines
    assert report.exit_code == 1


def test_compat_link_replaced_by_a_file(site: Site) -> None:
    link = Path(site.cert_options["cert_file"])
    assert results(site)["www.compat_links"] is Result.PASSED
    link.unlink()
    link.write_text("an old certificate\n")
    check = by_id(make_doctor(load(str(site.config_path))).run())["www.compat_links"]
    assert check.result is Result.FAILED and f"{link} is not a symlink" in check.detail
    assert "certpull sync www" in check.fixes[0].where


def test_private_key_mode_changed(site: Site) -> None:
    key = (site.cert_dir / "privkey.pem").resolve()
    os.chmod(key, 0o644)
    check = by_id(make_doctor(load(str(site.config_path))).run())["www.files"]
    assert check.result is Result.FAILED
    assert "readable by others" in check.detail


def test_httpd_stopped(site: Site) -> None:
    site.apache.stop()
    found = results(site)
    assert found["httpd.running"] is Result.FAILED
    assert found["www.served"] is Result.FAILED


def test_broken_httpd_config(site: Site) -> None:
    site.apache.write_config(["SSLNoSuchDirective on"])
    check = by_id(make_doctor(load(str(site.config_path))).run())["httpd.configtest"]
    assert check.result is Result.FAILED
    assert "SSLNoSuchDirective" in check.detail


def test_nothing_installed_yet(
    tmp_path: Path, local_aws: LocalAws, aws_proxy: AwsProxy, apache: ApacheFactory, pki: Pki
) -> None:
    s = Site(tmp_path, local_aws, aws_proxy, apache.new(), pki)
    s.create_secret(pki.leaf())
    found = results(s)
    assert found["www.content"] is Result.PASSED
    for check_id in ("www.served", "www.compat_links", "www.files", "state_dir"):
        assert found[check_id] is Result.NOT_APPLICABLE, check_id
    assert not s.cert_dir.joinpath("cert.pem").exists()
