"""Config that means what it says (issue 12, item 5): no silent continuation lines, section names
compared without their whitespace, a UTF-8 BOM tolerated, and conf.d drop-ins read in name order
with file:line in every error."""

from __future__ import annotations

from pathlib import Path
from typing import Dict

import pytest

from certpull.config import parse_config
from certpull.config_files import dropin_dir, load
from certpull.daemon import drift_paths
from certpull.drift import CONFIG_KEY
from certpull.errors import ConfigError

ARN = "arn:aws:secretsmanager:eu-west-1:111122223333:secret:www-tls-AbCdEf"
PATH = "/etc/certpull/certpull.conf"


def refused(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(text, PATH)
    assert "\n" not in str(info.value)
    return info.value


# -- continuation lines ----------------------------------------------------------------------


def test_an_indented_key_after_a_key_is_refused_not_joined_to_its_value() -> None:
    # configparser would make reload_command "systemctl reload httpd configtest_command = /bin/true"
    text = (
        "[agent]\nreload_command = systemctl reload httpd\n"
        "    configtest_command = /bin/true\n"
        f"[cert:www]\nsecret_arn = {ARN}\n"
    )
    err = refused(text)
    assert err.path == PATH and err.line == 3
    assert "indented" in str(err) and "reload_command" in str(err)


def test_an_indented_line_after_a_value_is_refused_even_without_a_delimiter() -> None:
    err = refused(f"[cert:www]\nsecret_arn = {ARN}\n  verify\n")
    assert err.line == 3 and "indented" in str(err)


def test_uniformly_indented_keys_and_indented_comments_are_fine() -> None:
    text = (
        "[cert:www]\n"
        f"  secret_arn = {ARN}\n"
        "  verify = 127.0.0.1:443   ; inline comment\n"
        "                           ; an indented comment line under a value\n"
        "\n"
        "      server_name = www.example.com\n"
    )
    cert = parse_config(text, PATH).cert("www")
    assert cert.secret_arn == ARN and cert.verify == ("127.0.0.1", 443)
    assert cert.server_name == "www.example.com"


def test_values_keep_what_configparser_kept() -> None:
    text = (
        "[agent]\nreload_command = /bin/sh -c 'a;b#c'\nevents_queue_url =    ; empty\n"
        f"[cert:www]\nsecret_arn: {ARN}\nverify=127.0.0.1:443\n"
    )
    config = parse_config(text, PATH)
    assert config.agent.reload_command == ("/bin/sh", "-c", "a;b#c")
    assert config.agent.events_queue_url is None
    assert config.cert("www").verify == ("127.0.0.1", 443)


# -- section names ---------------------------------------------------------------------------


@pytest.mark.parametrize("second", ["[cert: www]", "[ cert:www ]", "[cert :www]", "[cert:www\t]"])
def test_section_names_differing_only_in_whitespace_are_the_same_section(second: str) -> None:
    err = refused(f"[cert:www]\nsecret_arn = {ARN}\n{second}\nsecret_arn = {ARN}\n")
    assert err.line == 3 and "[cert:www] appears twice" in str(err)


def test_agent_with_spaces_is_the_agent_section() -> None:
    config = parse_config(f"[ agent ]\npoll_interval_s = 60\n[cert:www]\nsecret_arn = {ARN}\n")
    assert config.agent.poll_interval_s == 60.0


def test_text_after_a_section_header_is_refused() -> None:
    err = refused(f"[cert:www] extra\nsecret_arn = {ARN}\n")
    assert err.line == 1


# -- BOM and line endings --------------------------------------------------------------------


def test_a_utf8_bom_and_crlf_line_endings_are_tolerated() -> None:
    text = f"\ufeff[agent]\r\npoll_interval_s = 60\r\n\r\n[cert:www]\r\nsecret_arn = {ARN}\r\n"
    config = parse_config(text, PATH)
    assert config.agent.poll_interval_s == 60.0 and config.cert("www").secret_arn == ARN


def test_a_bom_file_on_disk_loads(tmp_path: Path) -> None:
    main = tmp_path / "certpull.conf"
    main.write_bytes(b"\xef\xbb\xbf" + f"[cert:www]\nsecret_arn = {ARN}\n".encode())
    assert load(str(main)).names == ("www",)


# -- drop-ins --------------------------------------------------------------------------------


def write_tree(root: Path, files: Dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "certpull.conf"


def cert(name: str, extra: str = "") -> str:
    return f"[cert:{name}]\nsecret_arn = {ARN}{name}\n{extra}"


def test_dropins_are_read_in_name_order_after_the_main_file(tmp_path: Path) -> None:
    main = write_tree(
        tmp_path,
        {
            "certpull.conf": "[agent]\npoll_interval_s = 60\nwarn_days = 20\n\n" + cert("www"),
            "conf.d/20-b.conf": cert("b"),
            "conf.d/10-a.conf": cert("a") + "\n[agent]\npoll_interval_s = 30\n",
            "conf.d/30-agent.conf": "[agent]\npoll_interval_s = 45\n",
            "conf.d/README": "not a drop-in: ignored",
            "conf.d/.hidden.conf": "[broken",
            "conf.d/99-c.conf.rpmsave": "[broken",
        },
    )
    config = load(str(main))
    assert config.names == ("www", "a", "b")
    assert config.agent.poll_interval_s == 45.0  # the last file in name order wins
    assert config.agent.warn_days == 20.0  # keys a drop-in does not set stay the main file's
    assert config.sources == (
        str(main),
        str(tmp_path / "conf.d/10-a.conf"),
        str(tmp_path / "conf.d/20-b.conf"),
        str(tmp_path / "conf.d/30-agent.conf"),
    )


def test_a_cert_defined_in_two_files_is_an_error_naming_both(tmp_path: Path) -> None:
    main = write_tree(
        tmp_path,
        {"certpull.conf": cert("www"), "conf.d/10-www.conf": "\n\n" + cert("www")},
    )
    with pytest.raises(ConfigError) as info:
        load(str(main))
    err = info.value
    assert err.path == str(tmp_path / "conf.d/10-www.conf") and err.line == 3
    assert f"already defined at {main}:1" in str(err)


def test_an_error_in_a_dropin_names_the_dropin_and_its_line(tmp_path: Path) -> None:
    main = write_tree(
        tmp_path,
        {"certpull.conf": cert("www"), "conf.d/10-a.conf": cert("a", "verify = nowhere\n")},
    )
    with pytest.raises(ConfigError, match=r"conf\.d/10-a\.conf:3: verify: .*HOST:PORT"):
        load(str(main))


def test_an_agent_error_from_a_dropin_override_names_the_dropin(tmp_path: Path) -> None:
    main = write_tree(
        tmp_path,
        {
            "certpull.conf": "[agent]\nwarn_days = 30\n" + cert("www"),
            "conf.d/10-crit.conf": "[agent]\ncrit_days = 40\n",
        },
    )
    with pytest.raises(ConfigError, match=r"conf\.d/10-crit\.conf:2: crit_days: .*larger"):
        load(str(main))


def test_a_config_made_only_of_dropins_is_fine_and_no_cert_at_all_is_not(tmp_path: Path) -> None:
    main = write_tree(tmp_path, {"certpull.conf": "[agent]\n", "conf.d/www.conf": cert("www")})
    assert load(str(main)).names == ("www",)
    (tmp_path / "conf.d/www.conf").unlink()
    with pytest.raises(ConfigError, match="no \\[cert:NAME\\] section"):
        load(str(main))


def test_an_unreadable_dropin_is_a_config_error(tmp_path: Path) -> None:
    main = write_tree(tmp_path, {"certpull.conf": cert("www")})
    (tmp_path / "conf.d" / "x.conf").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"conf\.d/x\.conf: cannot read"):
        load(str(main))


def test_the_drift_watcher_watches_the_dropin_directory(tmp_path: Path) -> None:
    main = write_tree(tmp_path, {"certpull.conf": cert("www")})
    config = load(str(main))
    assert dropin_dir(str(main)) == str(tmp_path / "conf.d")
    assert drift_paths(config)[CONFIG_KEY] == [str(main), str(tmp_path / "conf.d")]
