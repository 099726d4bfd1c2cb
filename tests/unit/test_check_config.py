"""`certpull check-config` checks what the config names on this host (issue 12, item 2): owner
and group exist, live_dir, state_dir and compat-link directories are safe for root to write."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Tuple

import pytest

from certpull.cli import main

ARN = "arn:aws:secretsmanager:us-east-1:111122223333:secret:www"


def check(tmp_path: Path, capsys: pytest.CaptureFixture[str], **cert: str) -> Tuple[int, str]:
    agent = {"live_dir": str(tmp_path / "live"), "state_dir": str(tmp_path / "state")}
    agent.update({k[6:]: v for k, v in cert.items() if k.startswith("agent_")})
    lines = ["[agent]", *(f"{k} = {v}" for k, v in agent.items()), "[cert:www]"]
    lines += [f"secret_arn = {ARN}"]
    lines += [f"{k} = {v}" for k, v in cert.items() if not k.startswith("agent_")]
    conf = tmp_path / "certpull.conf"
    conf.write_text("\n".join(lines) + "\n")
    code = main(["-c", str(conf), "check-config"])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_a_good_config_passes_and_names_its_dropins(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "api.conf").write_text(f"[cert:api]\nsecret_arn = {ARN}-api\n")
    code, out = check(tmp_path, capsys, owner="root", group="root")
    assert code == 0, out
    assert "OK, 2 certificate(s): www, api" in out and "1 drop-in" in out


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("owner", "no-such-user-certpull", "owner 'no-such-user-certpull' does not exist"),
        ("group", "no-such-group-certpull", "group 'no-such-group-certpull' does not exist"),
    ],
)
def test_owner_and_group_must_exist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], key: str, value: str, message: str
) -> None:
    code, out = check(tmp_path, capsys, **{key: value})
    assert code == 2 and message in out and f"[cert:www] {key}" in out


@pytest.mark.skipif(os.geteuid() != 0, reason="root's view of the directories")
@pytest.mark.parametrize("which", ["live", "state"])
def test_directories_others_can_write_are_reported_with_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], which: str
) -> None:
    (tmp_path / which).mkdir()
    os.chmod(tmp_path / which, 0o777)  # noqa: S103
    code, out = check(tmp_path, capsys)
    assert code == 2
    assert f"{which}_dir: " in out and f"chmod o-w {tmp_path / which}" in out


@pytest.mark.skipif(os.geteuid() != 0, reason="root's view of the directories")
def test_a_compat_link_directory_others_can_write_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    os.chmod(certs, 0o777)  # noqa: S103
    code, out = check(tmp_path, capsys, cert_file=str(certs / "localhost.crt"))
    assert code == 2 and "cert_file" in out and f"chmod o-w {certs}" in out
    code, out = check(tmp_path, capsys, key_file=str(tmp_path / "missing" / "x.key"))
    assert code == 2 and "does not exist" in out
