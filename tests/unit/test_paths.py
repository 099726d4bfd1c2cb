"""Paths certpull writes as root (issue 12, item 2): it never follows a symlink or uses a directory
it did not create inside live_dir, refuses directories others can write (saying how to fix it),
and a compat link cannot be redirected through its directory. Real directories, real chown."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from certpull.compat import CompatLinks
from certpull.config import parse_config
from certpull.errors import ConfigError, StoreError
from certpull.fileops import FileOps, path_problem
from certpull.state import State, StateFile
from tests.unit.test_store import KEY, bundle, make

NOBODY = 65534
ARN = "arn:aws:secretsmanager:us-east-1:111122223333:secret:www"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="ownership checks need root")


def victim(tmp_path: Path) -> Path:
    """A directory root must never write into: it holds one file, and must keep only that."""
    target = tmp_path / "victim"
    target.mkdir(exist_ok=True)
    (target / "precious").write_text("x")
    return target


def untouched(target: Path) -> bool:
    return sorted(p.name for p in target.iterdir()) == ["precious"]


# -- <live>/<name> -----------------------------------------------------------------------------


def test_a_planted_symlink_for_the_cert_directory_is_refused(tmp_path: Path) -> None:
    live = tmp_path / "live"
    live.mkdir()
    target = victim(tmp_path)
    os.symlink(target, live / "www")
    with pytest.raises(StoreError, match="is a symbolic link"):
        make(live / "www").publish(bundle("a"), "a")
    assert untouched(target)


@pytest.mark.parametrize(
    ("owner", "mode", "why"),
    [(NOBODY, 0o755, "owned by uid 65534"), (0, 0o777, "writable by others"), (0, 0o775, "group")],
)
def test_a_cert_directory_certpull_did_not_make_is_refused(
    tmp_path: Path, owner: int, mode: int, why: str
) -> None:
    www = tmp_path / "live" / "www"
    www.mkdir(parents=True)
    os.chown(www, owner, owner)
    os.chmod(www, mode)
    with pytest.raises(StoreError, match=why):
        make(www).publish(bundle("a"), "a")
    assert list(www.iterdir()) == []


class SwapAfterFirst(FileOps):
    """After the first call of ``method``, someone with write access to live_dir replaces the
    cert directory with a symlink to a victim directory (between certpull's check and its use)."""

    def __init__(self, method: str, swap: Callable[[], None]) -> None:
        self.method = method
        self.swap: Optional[Callable[[], None]] = swap

    def __getattribute__(self, name: str) -> Any:
        attr = super().__getattribute__(name)
        if name == super().__getattribute__("method") and callable(attr):

            def wrapped(*args: Any, **kwargs: Any) -> Any:
                try:
                    return attr(*args, **kwargs)
                finally:
                    swap = super(SwapAfterFirst, self).__getattribute__("swap")
                    if swap is not None:
                        self.swap = None
                        swap()

            return wrapped
        return attr


def snapshot(root: Path) -> dict:  # type: ignore[type-arg]
    """Every entry below ``root``: what it is and what it holds or points to."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            if path.is_symlink():
                found[str(path.relative_to(root))] = ("link", os.readlink(path))
            elif path.is_file():
                found[str(path.relative_to(root))] = ("file", path.read_bytes())
            else:
                found[str(path.relative_to(root))] = ("dir", None)
    return found


@pytest.mark.parametrize("method", ["mkdir", "write", "fsync", "symlink", "rename"])
def test_a_cert_directory_swapped_for_a_symlink_mid_publish_redirects_nothing(
    tmp_path: Path, method: str
) -> None:
    """The symlink points to a directory of root's with the same shape (the worst case: every
    name certpull goes on to use exists there), so a path-based writer would write into it."""
    live = tmp_path / "live"
    www = live / "www"
    make(www).publish(bundle("a"), "a")
    target = tmp_path / "victim"
    before = {}

    def swap() -> None:
        shutil.copytree(www, target, symlinks=True)
        before.update(snapshot(target))
        os.rename(www, live / "moved-away")
        os.symlink(target, www)
        os.lchown(www, NOBODY, NOBODY)  # the attacker's link

    with contextlib.suppress(StoreError):
        make(www, fs=SwapAfterFirst(method, swap)).publish(bundle("b"), "b")
    assert before and snapshot(target) == before


def test_a_version_directory_certpull_did_not_make_is_never_activated(tmp_path: Path) -> None:
    www = tmp_path / "www"
    store = make(www)
    first = store.publish(bundle("a"), "a").version
    store.publish(bundle("b"), "b")
    os.chown(www / first, NOBODY, NOBODY)  # someone else's directory under a version name
    assert first not in store.versions()
    with pytest.raises(StoreError, match="no previous version"):
        store.rollback()
    assert store.read("cert.pem") == b"cert b\n"


def test_a_file_in_a_version_that_became_a_symlink_is_not_read(tmp_path: Path) -> None:
    www = tmp_path / "www"
    store = make(www)
    version = store.publish(bundle("a"), "a").version
    secret = tmp_path / "shadow"
    secret.write_text("root's secret\n")
    os.unlink(www / version / "cert.pem")
    os.symlink(secret, www / version / "cert.pem")
    with pytest.raises(StoreError, match=r"cert\.pem"):
        store.read("cert.pem")
    with pytest.raises(StoreError):
        store.read_all()
    assert any("cert.pem" in p for p in store.verify_links())


# -- directories others can write -------------------------------------------------------------


@pytest.mark.parametrize("which", ["live", "parent"])
def test_a_live_dir_others_can_write_is_refused_with_the_fix(tmp_path: Path, which: str) -> None:
    parent = tmp_path / "srv"
    live = parent / "live"
    live.mkdir(parents=True)
    loose = live if which == "live" else parent
    os.chmod(loose, 0o777)  # noqa: S103
    with pytest.raises(StoreError) as caught:
        make(live / "www").publish(bundle("a"), "a")
    message = str(caught.value)
    assert f"{loose} is writable by every user" in message and f"chmod o-w {loose}" in message
    assert not (live / "www").exists()


def test_sticky_world_writable_parents_and_group_writable_dirs_are_fine(tmp_path: Path) -> None:
    sticky = tmp_path / "tmp"
    sticky.mkdir()
    os.chmod(sticky, 0o1777)  # noqa: S103 - like /tmp: others cannot move root's entries
    live = sticky / "live"
    live.mkdir()
    os.chmod(live, 0o775)  # noqa: S103 - group-writable by a named group: the operator's choice
    store = make(live / "www")
    assert store.publish(bundle("a"), "a").changed
    assert path_problem(str(live)) is None


def test_a_parent_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    os.chown(home, NOBODY, NOBODY)
    with pytest.raises(StoreError, match=f"{home} is owned by uid 65534"):
        make(home / "live" / "www").publish(bundle("a"), "a")
    assert path_problem(str(home / "live")) is not None


def test_a_symlink_on_the_way_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    sticky = tmp_path / "tmp"
    sticky.mkdir()
    os.chmod(sticky, 0o1777)  # noqa: S103
    real = tmp_path / "real"
    real.mkdir()
    os.symlink(real, sticky / "link")
    os.lchown(sticky / "link", NOBODY, NOBODY)  # nobody can repoint it whenever it likes
    with pytest.raises(StoreError, match="symbolic link owned by uid 65534"):
        make(sticky / "link" / "www").publish(bundle("a"), "a")
    root_link = tmp_path / "rootlink"
    os.symlink(real, root_link)  # root's own link in a safe directory is followed
    assert make(root_link / "www").publish(bundle("a"), "a").changed
    assert (real / "www" / "cert.pem").read_bytes() == b"cert a\n"


# -- state_dir ---------------------------------------------------------------------------------


def test_a_state_dir_others_can_write_is_refused(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    os.chmod(state_dir, 0o777)  # noqa: S103
    store = StateFile(str(state_dir))
    for action in (lambda: store.save(State()), lambda: store.lock().__enter__(), store.load):
        with pytest.raises(StoreError, match=f"chmod o-w {state_dir}"):
            action()


def test_a_planted_state_file_symlink_is_not_followed(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    store = StateFile(str(state_dir))
    store.save(State())
    target = victim(tmp_path)
    (state_dir / "state.json").unlink()
    os.symlink(target / "precious", state_dir / "state.json")
    store.save(State())
    assert (target / "precious").read_text() == "x"
    assert not (state_dir / "state.json").is_symlink()


# -- config ------------------------------------------------------------------------------------


def test_a_world_writable_cert_mode_is_refused() -> None:
    with pytest.raises(ConfigError, match="cert_mode: 0666 would let every user"):
        parse_config(f"[cert:www]\nsecret_arn = {ARN}\ncert_mode = 0666\n", "/c.conf")
    assert parse_config(f"[cert:www]\nsecret_arn = {ARN}\ncert_mode = 0664\n", "/c.conf")


# -- compat links ------------------------------------------------------------------------------


def test_a_compat_link_in_a_directory_others_can_write_is_refused(tmp_path: Path) -> None:
    store = make(tmp_path / "live" / "www")
    store.publish(bundle("a"), "a")
    certs = tmp_path / "certs"
    certs.mkdir()
    os.chmod(certs, 0o777)  # noqa: S103
    with pytest.raises(StoreError, match=f"chmod o-w {certs}"):
        CompatLinks(store.path, {str(certs / "localhost.crt"): "cert.pem"}).apply()
    assert list(certs.iterdir()) == []


@pytest.mark.parametrize("method", ["lstat", "readlink", "symlink", "link"])
def test_a_compat_link_directory_swapped_mid_apply_redirects_nothing(
    tmp_path: Path, method: str
) -> None:
    store = make(tmp_path / "live" / "www")
    store.publish(bundle("a"), "a")
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / "localhost.crt").write_text("distribution cert\n")
    target = tmp_path / "victim"
    before = {}

    def swap() -> None:
        shutil.copytree(certs, target, symlinks=True)
        before.update(snapshot(target))
        os.rename(certs, tmp_path / "certs-moved")
        os.symlink(target, certs)
        os.lchown(certs, NOBODY, NOBODY)  # the attacker's link

    fs = SwapAfterFirst(method, swap)
    with contextlib.suppress(StoreError):
        CompatLinks(store.path, {str(certs / "localhost.crt"): "cert.pem"}, fs).apply()
    assert before and snapshot(target) == before


def test_compat_links_through_roots_own_symlinked_directory_work(tmp_path: Path) -> None:
    store = make(tmp_path / "live" / "www")
    store.publish(bundle("a"), "a")
    real = tmp_path / "pki-tls-certs"
    real.mkdir()
    os.symlink(real, tmp_path / "ssl-certs")  # like /etc/ssl/certs -> /etc/pki/tls/certs
    CompatLinks(store.path, {str(tmp_path / "ssl-certs" / "localhost.crt"): KEY}).apply()
    assert (real / "localhost.crt").read_bytes() == bundle("a")[KEY]
