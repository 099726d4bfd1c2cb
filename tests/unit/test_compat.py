"""compat.py: existing paths made symlinks into a live directory, a backup kept once."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from certpull.compat import CompatLinks
from certpull.errors import StoreError
from tests.unit.test_store import KEY, bundle, make


def test_backs_up_a_regular_file_once(tmp_path: Path) -> None:
    store = make(tmp_path / "live" / "www")
    store.publish(bundle("a"), "a")
    certs = tmp_path / "etc" / "pki" / "tls" / "certs"
    certs.mkdir(parents=True)
    crt = certs / "localhost.crt"
    crt.write_bytes(b"the distribution's self-signed cert\n")
    links = {str(crt): "cert.pem", str(certs / "localhost.key"): KEY}

    CompatLinks(store.path, links).apply()
    assert os.readlink(crt) == os.path.join(store.path, "cert.pem")
    assert crt.read_bytes() == b"cert a\n"
    assert (certs / "localhost.key").read_bytes() == bundle("a")[KEY]
    backup = certs / "localhost.crt.certpull-orig"
    assert backup.read_bytes() == b"the distribution's self-signed cert\n"
    assert not (certs / "localhost.key.certpull-orig").exists()  # nothing was there

    CompatLinks(store.path, links).apply()  # idempotent
    store.publish(bundle("b"), "b")
    assert crt.read_bytes() == b"cert b\n"  # follows the active version

    crt.unlink()
    crt.write_bytes(b"someone put a file back\n")
    CompatLinks(store.path, links).apply()
    assert backup.read_bytes() == b"the distribution's self-signed cert\n"  # never overwritten
    assert crt.read_bytes() == b"cert b\n"
    assert sorted(p.name for p in certs.iterdir()) == [
        "localhost.crt",
        "localhost.crt.certpull-orig",
        "localhost.key",
    ]


def test_replaces_a_foreign_symlink(tmp_path: Path) -> None:
    store = make(tmp_path / "www")
    store.publish(bundle("a"), "a")
    path = tmp_path / "server.crt"
    os.symlink("/etc/hostname", path)
    CompatLinks(store.path, {str(path): "cert.pem"}).apply()
    assert path.read_bytes() == b"cert a\n"
    assert not Path(str(path) + ".certpull-orig").exists()


@pytest.mark.parametrize(
    ("where", "message"),
    [("missing/dir/x.crt", "does not exist"), ("adir", "is a directory")],
)
def test_refusals(tmp_path: Path, where: str, message: str) -> None:
    store = make(tmp_path / "www")
    store.publish(bundle("a"), "a")
    (tmp_path / "adir").mkdir()
    with pytest.raises(StoreError, match=message):
        CompatLinks(store.path, {str(tmp_path / where): "cert.pem"}).apply()


def test_rejects_bad_file_name(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="invalid file name"):
        CompatLinks(str(tmp_path / "www"), {str(tmp_path / "x"): "../x"})


def test_a_key_readable_by_others_is_made_0600_before_it_is_kept(tmp_path: Path) -> None:
    store = make(tmp_path / "live" / "www")
    store.publish(bundle("a"), "a")
    key = tmp_path / "localhost.key"
    key.write_bytes(b"the sample's key, written 0644\n")
    os.chmod(key, 0o644)
    crt = tmp_path / "localhost.crt"
    crt.write_bytes(b"a certificate\n")
    os.chmod(crt, 0o644)
    links = {str(key): KEY, str(crt): "cert.pem"}
    CompatLinks(store.path, links, private={KEY}).apply()
    kept_key = tmp_path / "localhost.key.certpull-orig"
    assert kept_key.read_bytes() == b"the sample's key, written 0644\n"
    assert stat.S_IMODE(kept_key.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "localhost.crt.certpull-orig").stat().st_mode) == 0o644
