"""LiveDir on real temporary directories, table-driven where it fits (like atomic_writer_test.go)."""

from __future__ import annotations

import errno
import itertools
import os
import stat
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Set, Tuple

import pytest

from certpull.errors import StoreError
from certpull.fileops import FileOps
from certpull.layout import DATA_LINK, MANIFEST, MAX_LABEL_LEN, sanitize_label
from certpull.store import LiveDir, PublishResult

KEY = "privkey.pem"
SECRET = b"-----BEGIN PRIVATE KEY-----\nSECRET-KEY-MATERIAL\n-----END PRIVATE KEY-----\n"
MODES = {KEY: 0o600}
Files = Dict[str, bytes]


def bundle(tag: str) -> Files:
    return {
        "cert.pem": f"cert {tag}\n".encode(),
        "chain.pem": f"chain {tag}\n".encode(),
        "fullchain.pem": f"cert {tag}\nchain {tag}\n".encode(),
        KEY: SECRET + tag.encode(),
    }


def stepping_clock(start: float = 1_796_000_000.0, step: float = 1.0) -> Callable[[], float]:
    counter = itertools.count()
    return lambda: start + step * next(counter)


def make(path: Path, **kwargs: object) -> LiveDir:
    kwargs.setdefault("file_modes", MODES)
    kwargs.setdefault("clock", stepping_clock())
    return LiveDir(str(path), **kwargs)  # type: ignore[arg-type]


def visible(path: Path) -> Files:
    """What a reader such as httpd sees through the user-visible names."""
    return {p.name: p.read_bytes() for p in path.iterdir() if not p.name.startswith("..")}


def hidden(path: Path) -> Set[str]:
    return {p.name for p in path.iterdir() if p.name.startswith("..")}


def assert_active(store: LiveDir, files: Files) -> None:
    target = Path(store.path)
    assert visible(target) == files
    assert store.read_all() == files
    for name in files:
        assert os.readlink(target / name) == f"{DATA_LINK}/{name}"
    assert store.verify_links() == []


# ---- publish: first install, no update, update, add/remove names ------------------------


@pytest.mark.parametrize(
    ("case", "first", "second", "changed"),
    [
        ("no update", bundle("a"), bundle("a"), False),
        ("update", bundle("a"), bundle("b"), True),
        ("one byte differs", bundle("a"), {**bundle("a"), KEY: SECRET + b"A"}, True),
        ("removed file name", bundle("a"), {"cert.pem": b"c", KEY: SECRET}, True),
        ("added file name", {"cert.pem": b"c", KEY: SECRET}, bundle("a"), True),
        ("empty file", bundle("a"), {**bundle("a"), "chain.pem": b""}, True),
    ],
)
def test_publish_table(
    tmp_path: Path, case: str, first: Files, second: Files, changed: bool
) -> None:
    target = tmp_path / "live" / "www"
    store = make(target)

    one = store.publish(first, "v1")
    assert one.changed and one.previous is None
    assert store.current() == one.version
    assert_active(store, first)
    before = hidden(target)

    two = store.publish(second, "v2")
    assert two.changed is changed, case
    assert_active(store, second)
    if changed:
        assert two.previous == one.version
        assert two.version != one.version
        if set(second) <= set(first):
            assert store.versions() == [one.version, two.version]
            assert store.read_all(one.version) == first  # kept for rollback
        else:  # an older set lacking a file the active one has is no rollback target
            assert store.versions() == [two.version]
    else:
        assert two == PublishResult(changed=False, version=one.version, previous=one.version)
        assert hidden(target) == before  # no new directory, nothing touched


def test_first_install_layout(tmp_path: Path) -> None:
    target = tmp_path / "www"
    store = make(target)
    assert store.current() is None
    assert store.versions() == []
    result = store.publish(bundle("a"), "first")
    assert os.readlink(target / DATA_LINK) == result.version
    assert hidden(target) == {DATA_LINK, result.version}
    assert result.version.startswith("..") and result.version.endswith("_first")
    assert store.read(KEY) == bundle("a")[KEY]
    assert store.read("cert.pem", result.version) == b"cert a\n"


def test_no_update_when_mode_config_changes_republishes(tmp_path: Path) -> None:
    make(tmp_path, file_modes={KEY: 0o640}).publish(bundle("a"), "v1")
    result = make(tmp_path, file_modes={KEY: 0o600}).publish(bundle("a"), "v1")
    assert result.changed
    assert stat.S_IMODE(os.stat(tmp_path / KEY).st_mode) == 0o600


@pytest.mark.parametrize(
    "name", ["..x", "..data", "a/b", "/etc/passwd", "", ".", "x\0y", "n" * 256]
)
def test_invalid_file_names_rejected(tmp_path: Path, name: str) -> None:
    store = make(tmp_path / "www")
    with pytest.raises(StoreError, match="invalid file name"):
        store.publish({"cert.pem": b"c", name: b"x"}, "bad")
    assert store.current() is None
    assert not (tmp_path / "www").exists() or hidden(tmp_path / "www") == set()


def test_empty_set_rejected(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="empty"):
        make(tmp_path).publish({}, "none")


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("v1", "v1"),
        ("a b/c..d", "a_b_c__d"),
        ("é", "_"),
        ("x" * 100, "x" * MAX_LABEL_LEN),
        ("", ""),
    ],
)
def test_label_sanitised(tmp_path: Path, label: str, expected: str) -> None:
    assert sanitize_label(label) == expected
    version = make(tmp_path).publish(bundle("a"), label).version
    assert version.endswith("_" + expected)


def test_version_names_sort_in_creation_order_when_clock_stands_or_steps_back(
    tmp_path: Path,
) -> None:
    ticks = iter([100.0, 100.0, 100.0, 99.0, 50.0])
    store = make(tmp_path, clock=lambda: next(ticks), keep_versions=10)
    made = [store.publish(bundle(str(i)), f"v{i}").version for i in range(5)]
    assert made == sorted(made)
    assert store.versions() == made
    assert len(set(made)) == 5


# ---- pruning and rollback -----------------------------------------------------------------


@pytest.mark.parametrize("keep", [2, 3, 5])
def test_keep_versions_prunes_oldest(tmp_path: Path, keep: int) -> None:
    store = make(tmp_path, keep_versions=keep)
    made = [store.publish(bundle(str(i)), f"v{i}").version for i in range(6)]
    assert store.versions() == made[-keep:]
    assert store.current() == made[-1]
    assert {p for p in hidden(tmp_path) if p != DATA_LINK} == set(made[-keep:])


@pytest.mark.parametrize("keep", [1, 0, -1])
def test_keep_versions_below_two_refused(tmp_path: Path, keep: int) -> None:
    with pytest.raises(ValueError, match="keep_versions"):
        make(tmp_path, keep_versions=keep)


def test_rollback_discards_current(tmp_path: Path) -> None:
    store = make(tmp_path, keep_versions=3)
    v1, v2, _v3 = (store.publish(bundle(t), t).version for t in "abc")
    assert store.rollback() == v2
    assert_active(store, bundle("b"))
    assert store.versions() == [v1, v2]
    assert store.rollback() == v1
    assert_active(store, bundle("a"))
    with pytest.raises(StoreError, match="no previous version to roll back to"):
        store.rollback()
    assert_active(store, bundle("a"))


def test_rollback_keeps_current_when_asked(tmp_path: Path) -> None:
    store = make(tmp_path, keep_versions=2)
    v1, v2 = (store.publish(bundle(t), t).version for t in "ab")
    assert store.rollback(discard_current=False) == v1
    assert_active(store, bundle("a"))
    assert store.versions() == [v1, v2]
    store.activate(v2)  # roll forward again
    assert_active(store, bundle("b"))


def test_rollback_to_larger_file_set_restores_its_links(tmp_path: Path) -> None:
    store = make(tmp_path)
    store.publish(bundle("a"), "big")
    store.publish({"cert.pem": b"c", KEY: SECRET}, "small")
    assert not (tmp_path / "chain.pem").exists()
    store.rollback()
    assert_active(store, bundle("a"))


@pytest.mark.parametrize("installed", [0, 1])
def test_rollback_with_nothing_to_roll_back_to(tmp_path: Path, installed: int) -> None:
    store = make(tmp_path / "www")
    for i in range(installed):
        store.publish(bundle(str(i)), "only")
    with pytest.raises(StoreError, match="no previous version to roll back to"):
        store.rollback()


def test_activate_refuses_unknown_or_incomplete_version(tmp_path: Path) -> None:
    store = make(tmp_path)
    v1 = store.publish(bundle("a"), "a").version
    with pytest.raises(StoreError, match="not a version name"):
        store.activate("../../etc")
    with pytest.raises(StoreError, match="missing or incomplete"):
        store.activate(v1[:-1] + "Z")
    assert_active(store, bundle("a"))


# ---- stage / label restorer ---------------------------------------------------------------


def test_stage_does_not_activate_and_restorer_sees_staging_dir(tmp_path: Path) -> None:
    seen: List[Tuple[str, Optional[str], Set[str]]] = []
    store: LiveDir

    def restorer(path: str) -> None:
        seen.append((os.path.basename(path), store.current(), set(os.listdir(path))))

    store = make(tmp_path, label_restorer=restorer)
    v1 = store.publish(bundle("a"), "a").version
    staged = store.stage(bundle("b"), "b")
    assert store.current() == v1
    assert_active(store, bundle("a"))
    assert store.read_all(staged) == bundle("b")
    assert [s[0].startswith("..staging.") for s in seen] == [True, True]
    assert seen[1][1] == v1  # called before activation
    assert seen[1][2] == {*bundle("b"), MANIFEST}  # on the complete directory
    assert store.activate(staged) == v1
    assert_active(store, bundle("b"))


def test_label_restorer_failure_keeps_old_set(tmp_path: Path) -> None:
    calls = itertools.count()

    def restorer(path: str) -> None:
        if next(calls) == 1:
            raise OSError(f"restorecon failed on {path}")

    store = make(tmp_path, label_restorer=restorer)
    store.publish(bundle("a"), "a")
    with pytest.raises(StoreError, match="SELinux labels"):
        store.publish(bundle("b"), "b")
    assert_active(store, bundle("a"))
    assert not [n for n in hidden(tmp_path) if n.startswith("..staging.")]
    assert len(store.versions()) == 1


# ---- recover ------------------------------------------------------------------------------


def test_recover_cleans_leftovers_and_is_idempotent(tmp_path: Path) -> None:
    store = make(tmp_path, keep_versions=3)
    v1, v2 = (store.publish(bundle(t), t).version for t in "ab")
    # Leftovers a crash can produce:
    (tmp_path / "..staging.deadbeef").mkdir()
    (tmp_path / "..staging.deadbeef" / KEY).write_bytes(b"half")
    os.symlink("..nowhere", tmp_path / "..data_tmp")
    os.symlink("..data/cert.pem", tmp_path / "..link_tmp")
    (tmp_path / v1 / "chain.pem").unlink()  # an incomplete older version
    no_manifest = v1.replace("_a", "_zz")[:-1] + "9"
    (tmp_path / no_manifest).mkdir()  # a version dir without a manifest
    (tmp_path / "cert.pem").unlink()  # a missing user-visible link

    removed = store.recover()

    assert sorted(removed) == sorted(
        ["..staging.deadbeef", "..data_tmp", "..link_tmp", v1, no_manifest]
    )
    assert hidden(tmp_path) == {DATA_LINK, v2}
    assert store.current() == v2
    assert_active(store, bundle("b"))
    assert store.recover() == []
    assert hidden(tmp_path) == {DATA_LINK, v2}


def test_recover_never_touches_active_version_even_if_damaged(tmp_path: Path) -> None:
    store = make(tmp_path)
    v1 = store.publish(bundle("a"), "a").version
    (tmp_path / v1 / "chain.pem").unlink()
    assert store.recover() == []
    assert store.current() == v1
    assert (tmp_path / v1).is_dir()


def test_recover_on_missing_or_empty_dir(tmp_path: Path) -> None:
    assert make(tmp_path / "absent").recover() == []
    assert not (tmp_path / "absent").exists()
    assert make(tmp_path).recover() == []


# ---- verify_links / repair ----------------------------------------------------------------


def _delete_link(target: Path) -> None:
    (target / "cert.pem").unlink()


def _link_to_file(target: Path) -> None:
    (target / "cert.pem").unlink()
    (target / "cert.pem").write_bytes(b"a copied certificate\n")


def _link_elsewhere(target: Path) -> None:
    (target / "cert.pem").unlink()
    os.symlink("/etc/hostname", target / "cert.pem")


def _stray_link(target: Path) -> None:
    os.symlink("..data/old.pem", target / "old.pem")


def _edit_active_file(target: Path) -> None:
    with open(target / DATA_LINK / "chain.pem", "ab") as handle:
        handle.write(b"tampered\n")


def _chmod_key(target: Path) -> None:
    os.chmod(target / DATA_LINK / KEY, 0o644)


def _missing_data(target: Path) -> None:
    (target / DATA_LINK).unlink()


@pytest.mark.parametrize(
    ("mutate", "problem", "repairable"),
    [
        (_delete_link, "cert.pem is missing", True),
        (_link_to_file, "cert.pem is not a link", True),
        (_link_elsewhere, "cert.pem points to /etc/hostname", True),
        (_stray_link, "old.pem points to ..data/old.pem", True),
        (_edit_active_file, "..data/chain.pem was modified", False),
        (_chmod_key, "has mode 0644, expected 0600", False),
        (_missing_data, "..data is missing", False),
    ],
)
def test_verify_links_and_repair(
    tmp_path: Path, mutate: Callable[[Path], None], problem: str, repairable: bool
) -> None:
    store = make(tmp_path)
    store.publish(bundle("a"), "a")
    assert store.verify_links() == []
    assert store.repair() is False

    mutate(tmp_path)
    problems = store.verify_links()
    assert len(problems) == 1 and problem in problems[0], problems
    assert "\n" not in problems[0]

    assert store.repair() is repairable
    if repairable:
        assert_active(store, bundle("a"))
    else:
        assert store.verify_links() == problems


def test_publish_after_edit_of_active_file_republishes(tmp_path: Path) -> None:
    store = make(tmp_path)
    store.publish(bundle("a"), "a")
    _edit_active_file(tmp_path)
    assert store.publish(bundle("a"), "again").changed
    assert_active(store, bundle("a"))


# ---- modes and owners ---------------------------------------------------------------------


@pytest.fixture()
def umask() -> Iterator[Callable[[int], None]]:
    original = os.umask(0o022)
    os.umask(original)

    def set_umask(mask: int) -> None:
        os.umask(mask)

    yield set_umask
    os.umask(original)


def _all_version_files(target: Path) -> Iterator[Path]:
    for entry in target.iterdir():
        if entry.name.startswith("..") and entry.is_dir() and not entry.is_symlink():
            yield from entry.iterdir()


@pytest.mark.parametrize("mask", [0o000, 0o022, 0o077, 0o777])
def test_modes_are_exact_whatever_the_umask(
    tmp_path: Path, umask: Callable[[int], None], mask: int
) -> None:
    umask(mask)
    store = make(tmp_path / "www", keep_versions=3)
    for tag in "abc":
        store.publish(bundle(tag), tag)
    umask(0o022)
    files = list(_all_version_files(tmp_path / "www"))
    assert len(files) == 3 * 5
    expected = {KEY: 0o600, MANIFEST: 0o600}
    for path in files:
        assert stat.S_IMODE(path.lstat().st_mode) == expected.get(path.name, 0o644), path
    for entry in (tmp_path / "www").iterdir():
        if entry.is_dir() and not entry.is_symlink():
            assert stat.S_IMODE(entry.lstat().st_mode) == 0o755


class RecordingOps(FileOps):
    """Records the mode, owner and size of every file at each write: the 'at any instant' check."""

    def __init__(self) -> None:
        self.fds: Dict[int, str] = {}
        self.at_write: List[Tuple[str, int, int, int, int]] = []

    def open(self, path: str, flags: int, mode: int = 0o777, dir_fd: Optional[int] = None) -> int:
        fd = super().open(path, flags, mode, dir_fd)
        self.fds[fd] = os.path.basename(path)
        return fd

    def write(self, fd: int, data: bytes) -> int:
        st = os.fstat(fd)
        self.at_write.append(
            (self.fds[fd], stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_size)
        )
        return super().write(fd, data)


def test_key_is_never_readable_by_others_before_its_first_byte(
    tmp_path: Path, umask: Callable[[int], None]
) -> None:
    umask(0)
    ops = RecordingOps()
    make(tmp_path, fs=ops).publish(bundle("a"), "a")
    first_writes = {name: (mode, size) for name, mode, _, _, size in reversed(ops.at_write)}
    assert first_writes[KEY] == (0o600, 0)
    assert first_writes["cert.pem"] == (0o644, 0)
    assert all(mode == 0o600 for name, mode, *_ in ops.at_write if name == KEY)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_owner_set_before_first_byte_when_root(tmp_path: Path) -> None:
    nobody = 65534
    ops = RecordingOps()
    store = make(tmp_path, uid=nobody, gid=nobody, fs=ops)
    store.publish(bundle("a"), "a")
    for name in bundle("a"):
        st = (tmp_path / DATA_LINK / name).lstat()
        assert (st.st_uid, st.st_gid) == (nobody, nobody)
    assert all(
        (uid, gid) == (nobody, nobody) for name, _, uid, gid, _ in ops.at_write if name != MANIFEST
    )
    assert store.verify_links() == []
    os.chown(tmp_path / DATA_LINK / KEY, 0, 0)
    assert any("has uid 0, expected 65534" in p for p in store.verify_links())
    assert make(tmp_path, uid=nobody, gid=nobody).publish(bundle("a"), "again").changed


# ---- fault injection ----------------------------------------------------------------------


class FaultyOps(FileOps):
    """Raises OSError(code) on the nth call of one method, counted from ``arm()``."""

    def __init__(self) -> None:
        self.counts: Dict[str, int] = {}
        self.fault: Optional[Tuple[str, int, int]] = None

    def arm(self, method: str, nth: int, code: int) -> None:
        self.counts = {}
        self.fault = (method, nth, code)

    def _hit(self, method: str) -> None:
        self.counts[method] = self.counts.get(method, 0) + 1
        if self.fault and self.fault[0] == method and self.fault[1] == self.counts[method]:
            raise OSError(self.fault[2], os.strerror(self.fault[2]))

    def write(self, fd: int, data: bytes) -> int:
        self._hit("write")
        return super().write(fd, data)

    def fsync(self, fd: int) -> None:
        self._hit("fsync")
        super().fsync(fd)

    def rename(self, src: str, dst: str, dir_fd: Optional[int] = None) -> None:
        self._hit("rename")
        super().rename(src, dst, dir_fd)

    def symlink(self, target: str, path: str, dir_fd: Optional[int] = None) -> None:
        self._hit("symlink")
        super().symlink(target, path, dir_fd)

    def mkdir(self, path: str, mode: int, dir_fd: Optional[int] = None) -> None:
        self._hit("mkdir")
        super().mkdir(path, mode, dir_fd)

    def fchmod(self, fd: int, mode: int) -> None:
        self._hit("fchmod")
        super().fchmod(fd, mode)

    def rmtree(self, name: str, dir_fd: int) -> None:
        self._hit("rmtree")
        super().rmtree(name, dir_fd)


def _publish_with_fault(
    tmp_path: Path, method: str, nth: int, code: int, new: Mapping[str, bytes]
) -> Tuple[LiveDir, str, Optional[StoreError]]:
    ops = FaultyOps()
    store = make(tmp_path, fs=ops)
    old = store.publish(bundle("a"), "a").version
    ops.arm(method, nth, code)
    try:
        store.publish(dict(new), "b")
    except StoreError as exc:
        return store, old, exc
    finally:
        ops.fault = None
    return store, old, None


def _assert_old_set_intact(store: LiveDir, old: str, exc: Optional[StoreError], code: int) -> None:
    assert exc is not None
    message = str(exc)
    assert os.strerror(code) in message and store.path in message
    assert "\n" not in message and "SECRET" not in message
    assert store.current() == old
    assert_active(store, bundle("a"))
    store.recover()
    assert store.versions() == [old]
    assert not [n for n in hidden(Path(store.path)) if n.startswith("..staging.")]


@pytest.mark.parametrize(
    ("method", "nth", "code", "where"),
    [
        ("write", 1, errno.ENOSPC, "first file"),
        ("write", 4, errno.ENOSPC, "key file"),
        ("write", 5, errno.ENOSPC, "manifest"),
        ("fsync", 1, errno.EIO, "first file"),
        ("fsync", 4, errno.EIO, "key file"),
        ("fsync", 6, errno.EIO, "staging directory"),
        ("fsync", 7, errno.EIO, "target directory after the version rename"),
        ("fsync", 8, errno.EIO, "target directory after the ..data swap"),
        ("mkdir", 1, errno.ENOSPC, "staging directory"),
        ("fchmod", 2, errno.EPERM, "a file's mode"),
        ("rename", 1, errno.EIO, "staging -> version"),
        ("rename", 2, errno.EIO, "..data swap"),
        ("symlink", 1, errno.ENOSPC, "..data_tmp"),
    ],
)
def test_fault_leaves_old_set_active(
    tmp_path: Path, method: str, nth: int, code: int, where: str
) -> None:
    store, old, exc = _publish_with_fault(tmp_path, method, nth, code, bundle("b"))
    _assert_old_set_intact(store, old, exc, code)


def test_fault_creating_a_new_link_after_swap_switches_back(tmp_path: Path) -> None:
    new = {**bundle("b"), "extra.pem": b"extra\n"}  # a new name needs a new user-visible link
    store, old, exc = _publish_with_fault(tmp_path, "symlink", 2, errno.ENOSPC, new)
    _assert_old_set_intact(store, old, exc, errno.ENOSPC)
    assert not (tmp_path / "extra.pem").exists()


def _count_calls(tmp_path: Path) -> Dict[str, int]:
    ops = FaultyOps()
    store = make(tmp_path, fs=ops)
    store.publish(bundle("a"), "a")
    store.publish(bundle("0"), "0")
    ops.arm("none", 0, 0)
    store.publish(bundle("b"), "b")
    return dict(ops.counts)


def test_every_single_fault_leaves_exactly_one_complete_set(tmp_path: Path) -> None:
    """Fail each call of each method in turn: the set is all old (with an error) or all new."""
    counts = _count_calls(tmp_path / "count")
    assert counts["fsync"] >= 8 and counts["write"] >= 5 and counts["rmtree"] == 1
    raised = 0
    for method, total in sorted(counts.items()):
        for nth in range(1, total + 1):
            case = tmp_path / f"{method}-{nth}"
            ops = FaultyOps()
            store = make(case, fs=ops)
            store.publish(bundle("a"), "a")
            old = store.publish(bundle("0"), "0").version
            ops.arm(method, nth, errno.EIO)
            try:
                store.publish(bundle("b"), "b")
            except StoreError as exc:
                raised += 1
                assert os.strerror(errno.EIO) in str(exc), (method, nth)
                assert store.current() == old, (method, nth)
                assert_active(store, bundle("0"))
            else:  # the fault hit pruning, after the commit point: logged, not fatal
                assert method in {"rmtree", "fsync"}, (method, nth)
                assert_active(store, bundle("b"))
            ops.fault = None
            store.recover()
            assert store.verify_links() == []
            assert not {n for n in hidden(case) if n.startswith("..staging.") or n == "..data_tmp"}
    assert raised >= sum(counts.values()) - 2


def test_errors_and_reprs_never_carry_key_bytes(tmp_path: Path) -> None:
    store = make(tmp_path)
    result = store.publish(bundle("a"), "a")
    assert "SECRET" not in repr(store) + repr(result) + str(result)
    with pytest.raises(StoreError) as caught:
        store.read(KEY, "..2000_01_01_00_00_00.000000000_x")
    assert "SECRET" not in str(caught.value) and "No such file or directory" in str(caught.value)


def test_publish_holds_an_exclusive_lock_on_the_target_dir(tmp_path: Path) -> None:
    """A second agent (e.g. `certpull rollback` from a shell) cannot interleave with a publish."""
    import fcntl

    blocked: List[bool] = []

    def restorer(path: str) -> None:
        fd = os.open(str(tmp_path), os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            blocked.append(True)
        else:
            blocked.append(False)
        finally:
            os.close(fd)

    store = make(tmp_path, label_restorer=restorer)
    store.publish(bundle("a"), "a")
    assert blocked == [True]
    fd = os.open(str(tmp_path), os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released afterwards
    finally:
        os.close(fd)
