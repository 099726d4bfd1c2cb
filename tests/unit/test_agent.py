"""agent.Agent.sync with in-memory collaborators: the order of operations and the rollbacks.

The source, httpd and served-certificate check are test doubles passed through the constructor;
the live directories are real (tmp_path), because the rollbacks under test are the store's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Set

import pytest

from certpull.agent import Agent
from certpull.bundle import InProcess
from certpull.bundle_data import CertBundle
from certpull.config import Config, parse_config
from certpull.errors import ReloadError, SourceError, X509WorkerError
from certpull.httpd import GraceWatch, TargetUnreachable, VerifyTarget
from certpull.outcome import Status
from certpull.pem import first_cert_der
from certpull.source import SecretValue
from certpull.state import StateFile
from certpull.wiring import compat_factory, live_dir_factory
from tests.pki import Issued, Pki

PKI = Pki()


class FakeSource:
    def __init__(self) -> None:
        self.secrets: Dict[str, SecretValue] = {}
        self.errors: Dict[str, SourceError] = {}
        self.calls: List[str] = []

    def put(self, arn: str, version: str, secret_string: str) -> None:
        self.secrets[arn] = SecretValue(version, secret_string)

    def current_version_id(
        self, arn: str, role_arn: Optional[str] = None, external_id: Optional[str] = None
    ) -> str:
        self.calls.append("DescribeSecret")
        if arn in self.errors:
            raise self.errors[arn]
        return self.secrets[arn].version_id

    def fetch_current(
        self, arn: str, role_arn: Optional[str] = None, external_id: Optional[str] = None
    ) -> SecretValue:
        self.calls.append("GetSecretValue")
        return self.secrets[arn]


class FakeHttpd:
    """A Server that loads each certificate's file (its ssl.conf path: the live cert.pem unless
    given) at every successful reload."""

    def __init__(
        self, live_root: Path, names: Sequence[str], paths: Optional[Dict[str, Path]] = None
    ) -> None:
        self.paths = {name: live_root / name / "cert.pem" for name in names}
        self.paths.update(paths or {})
        self.calls: List[str] = []
        self.running = True
        self.fail_config_test = False
        self.config_test_failures = -1  # how many config tests fail while fail_config_test; -1: all
        self.fail_reloads = 0
        self.loaded: Dict[str, Optional[bytes]] = {}
        self.now = 0.0  # the clock of the liveness grace

    def known_stopped(self) -> bool:
        return not self.running

    def describe(self) -> str:
        return "pid file /run/fake.pid"

    def config_test(self) -> None:
        self.calls.append("configtest")
        if self.fail_config_test and self.config_test_failures != 0:
            self.config_test_failures -= 1
            raise ReloadError("`apachectl configtest` exited 1: AH00526: Syntax error")

    def graceful_reload(self, proven: Optional[Callable[[], bool]] = None) -> Optional[GraceWatch]:
        self.calls.append("graceful")
        if self.fail_reloads:
            self.fail_reloads -= 1
            raise ReloadError("httpd is not running after the graceful reload")
        self._load()
        if proven is not None and proven():  # the rest of a 2 s grace, on the fake's clock
            return GraceWatch(lambda: self.running, self.now + 2.0, lambda: self.now)
        return None

    def start(self) -> None:
        self.calls.append("start")
        self.running = True
        self._load()

    def _load(self) -> None:
        for name, path in self.paths.items():
            self.loaded[name] = first_cert_der(path.read_bytes()) if path.exists() else None


class FakeServed:
    """Fresh handshakes: each port serves what httpd loaded for its certificate at the last
    reload, unless the port is broken (a vhost that serves something else)."""

    def __init__(self, httpd: FakeHttpd, ports: Dict[int, str]) -> None:
        self.httpd = httpd
        self.ports = ports
        self.broken_ports: Set[int] = set()
        self.calls: List[int] = []

    def __call__(self, target: VerifyTarget, expected_der: bytes, timeout_s: float) -> float:
        self.calls.append(target.port)
        if not self.httpd.running and target.port not in self.broken_ports:
            raise TargetUnreachable(f"cannot connect to {target}: Connection refused")
        served = self.httpd.loaded.get(self.ports[target.port])
        if target.port in self.broken_ports or served != expected_der:
            raise ReloadError(f"{target} does not serve the new certificate after {timeout_s:g} s")
        return 0.01


@pytest.fixture
def world(tmp_path: Path):  # type: ignore[no-untyped-def]
    text = "\n".join(
        [
            "[agent]",
            f"live_dir = {tmp_path / 'live'}",
            f"state_dir = {tmp_path / 'state'}",
            "",
            *[
                f"[cert:{name}]\nsecret_arn = arn:aws:secretsmanager:us-east-1:111122223333:secret:{name}\n"
                f"server_name = www.example.com\nverify = 127.0.0.1:{port}\n"
                for name, port in (("a", 1001), ("b", 1002))
            ],
        ]
    )
    config: Config = parse_config(text, str(tmp_path / "c.conf"))
    source, httpd = FakeSource(), FakeHttpd(tmp_path / "live", ["a", "b"])
    served = FakeServed(httpd, {1001: "a", 1002: "b"})
    agent = Agent(
        config,
        source=source,
        httpd=httpd,
        state_file=StateFile(str(tmp_path / "state")),
        live_dir_for=live_dir_factory(config, None),
        compat_for=compat_factory(config),
        served_check=served,
    )
    return agent, source, httpd, served, tmp_path


def arn(name: str) -> str:
    return f"arn:aws:secretsmanager:us-east-1:111122223333:secret:{name}"


def put(source: FakeSource, name: str, version: str, leaf: Issued) -> None:
    source.put(arn(name), version, PKI.secret_string(leaf))


def live_cert(tmp_path: Path, name: str) -> bytes:
    return (tmp_path / "live" / name / "cert.pem").read_bytes()


def statuses(report) -> Dict[str, str]:  # type: ignore[no-untyped-def]
    return {o.name: o.status for o in report.outcomes}


def install_both(agent: Agent, source: FakeSource, httpd: FakeHttpd) -> None:
    put(source, "a", "a1", PKI.leaf(slot=10))
    put(source, "b", "b1", PKI.leaf(slot=11))
    assert statuses(agent.sync()) == {"a": Status.INSTALLED, "b": Status.INSTALLED}
    httpd.calls.clear()
    source.calls.clear()


def test_two_changed_certs_cost_one_config_test_and_one_reload(world) -> None:  # type: ignore[no-untyped-def]
    agent, source, httpd, _served, _ = world
    install_both(agent, source, httpd)
    put(source, "a", "a2", PKI.leaf(slot=12))
    put(source, "b", "b2", PKI.leaf(slot=13))
    assert statuses(agent.sync()) == {"a": Status.INSTALLED, "b": Status.INSTALLED}
    assert httpd.calls == ["configtest", "graceful"]


def test_current_certs_cost_one_describe_each_and_nothing_else(world) -> None:  # type: ignore[no-untyped-def]
    agent, source, httpd, _, _ = world
    install_both(agent, source, httpd)
    assert statuses(agent.sync()) == {"a": Status.CURRENT, "b": Status.CURRENT}
    assert source.calls == ["DescribeSecret", "DescribeSecret"]
    assert httpd.calls == []


def test_config_test_failure_rolls_back_every_cert_of_the_pass_without_reload(world) -> None:  # type: ignore[no-untyped-def]
    agent, source, httpd, _, tmp = world
    install_both(agent, source, httpd)
    before = {n: live_cert(tmp, n) for n in "ab"}
    put(source, "a", "a2", PKI.leaf(slot=12))
    put(source, "b", "b2", PKI.leaf(slot=13))
    httpd.fail_config_test = True
    report = agent.sync()
    assert statuses(report) == {"a": Status.FAILED, "b": Status.FAILED}
    assert all(
        "config test fails with the previous files too" in o.message and "rolled back" in o.message
        for o in report.outcomes
    )
    assert httpd.calls == ["configtest", "configtest"]  # the second with the previous files
    assert {n: live_cert(tmp, n) for n in "ab"} == before


def test_httpd_dying_on_reload_rolls_back_and_reloads_the_old_files(world) -> None:  # type: ignore[no-untyped-def]
    agent, source, httpd, _, tmp = world
    install_both(agent, source, httpd)
    before = live_cert(tmp, "a")
    put(source, "a", "a2", PKI.leaf(slot=12))
    httpd.fail_reloads = 1
    report = agent.sync(["a"])
    assert statuses(report) == {"a": Status.FAILED}
    assert "graceful reload failed" in report.outcomes[0].message
    assert httpd.calls == ["configtest", "graceful", "graceful"]
    assert live_cert(tmp, "a") == before


def test_one_cert_failing_verification_is_rolled_back_alone(world) -> None:  # type: ignore[no-untyped-def]
    agent, source, httpd, served, tmp = world
    install_both(agent, source, httpd)
    before_a = live_cert(tmp, "a")
    leaf_b = PKI.leaf(slot=13)
    put(source, "a", "a2", PKI.leaf(slot=12))
    put(source, "b", "b2", leaf_b)
    served.broken_ports.add(1001)
    report = agent.sync()
    assert statuses(report) == {"a": Status.FAILED, "b": Status.INSTALLED}
    assert live_cert(tmp, "a") == before_a
    assert live_cert(tmp, "b") == leaf_b.pem.encode()
    assert httpd.calls == ["configtest", "graceful", "graceful"]
    state = json.loads((tmp / "state" / "state.json").read_text())
    assert state["certs"]["a"]["installed"]["version_id"] == "a1"
    assert state["certs"]["a"]["consecutive_failures"] == 1
    assert state["certs"]["b"]["installed"]["version_id"] == "b2"


def test_first_install_failing_verification_keeps_the_files_and_says_why(world) -> None:  # type: ignore[no-untyped-def]
    agent, source, _httpd, served, tmp = world
    put(source, "a", "a1", PKI.leaf(slot=10))
    served.broken_ports.add(1001)
    report = agent.sync(["a"])
    assert statuses(report) == {"a": Status.FAILED}
    assert "first install: no previous version" in report.outcomes[0].message
    assert live_cert(tmp, "a")


def test_httpd_not_running_installs_without_config_test_or_reload(world) -> None:  # type: ignore[no-untyped-def]
    agent, source, httpd, served, _tmp = world
    httpd.running = False
    put(source, "a", "a1", PKI.leaf(slot=10))
    assert statuses(agent.sync(["a"])) == {"a": Status.INSTALLED}
    assert httpd.calls == []
    assert len(served.calls) == 1  # one look: nothing answers, so httpd really is stopped


@pytest.mark.parametrize("transient", [True, False])
def test_source_errors_are_recorded_and_leave_files_alone(world, transient: bool) -> None:  # type: ignore[no-untyped-def]
    agent, source, httpd, _, tmp = world
    install_both(agent, source, httpd)
    before = live_cert(tmp, "a")
    source.errors[arn("a")] = SourceError(
        "DescribeSecret: ThrottlingException", transient, "ThrottlingException"
    )
    report = agent.sync()
    assert statuses(report) == {"a": Status.FAILED, "b": Status.CURRENT}
    assert report.outcomes[0].transient is transient
    assert report.outcomes[0].message == f"a ({arn('a')}): DescribeSecret: ThrottlingException"
    assert live_cert(tmp, "a") == before and httpd.calls == []


def test_same_bytes_under_a_new_version_only_records_the_version(world) -> None:  # type: ignore[no-untyped-def]
    agent, source, httpd, _, _tmp = world
    leaf = PKI.leaf(slot=10)
    put(source, "a", "a1", leaf)
    agent.sync(["a"])
    httpd.calls.clear()
    put(source, "a", "a2", leaf)
    assert statuses(agent.sync(["a"])) == {"a": Status.UNCHANGED}
    assert httpd.calls == []
    assert statuses(agent.sync(["a"])) == {"a": Status.CURRENT}


def test_rollback_holds_the_version_until_a_new_one_arrives(world) -> None:  # type: ignore[no-untyped-def]
    agent, source, _httpd, _, tmp = world
    first = PKI.leaf(slot=10)
    put(source, "a", "a1", first)
    agent.sync(["a"])
    put(source, "a", "a2", PKI.leaf(slot=12))
    agent.sync(["a"])
    assert agent.rollback("a").status == Status.INSTALLED
    assert live_cert(tmp, "a") == first.pem.encode()
    assert statuses(agent.sync(["a"])) == {"a": Status.HELD}
    assert live_cert(tmp, "a") == first.pem.encode()
    third = PKI.leaf(slot=13)
    put(source, "a", "a3", third)
    assert statuses(agent.sync(["a"])) == {"a": Status.INSTALLED}
    assert live_cert(tmp, "a") == third.pem.encode()


def test_deleted_link_is_repaired_and_counted_as_drift(world) -> None:  # type: ignore[no-untyped-def]
    agent, source, httpd, _, tmp = world
    install_both(agent, source, httpd)
    (tmp / "live" / "a" / "privkey.pem").unlink()
    assert statuses(agent.sync(["a"])) == {"a": Status.CURRENT}
    assert (tmp / "live" / "a" / "privkey.pem").exists()
    state = json.loads((tmp / "state" / "state.json").read_text())
    assert state["certs"]["a"]["drift_count"] == 1


def test_edited_live_file_is_republished(world) -> None:  # type: ignore[no-untyped-def]
    agent, source, httpd, _, tmp = world
    install_both(agent, source, httpd)
    good = live_cert(tmp, "a")
    target = (tmp / "live" / "a" / "cert.pem").resolve()
    target.write_bytes(PKI.leaf(slot=20).pem.encode())
    report = agent.sync(["a"])
    assert statuses(report) == {"a": Status.INSTALLED}
    assert live_cert(tmp, "a") == good
    assert httpd.calls == ["configtest", "graceful"]


def test_a_version_the_daemon_defers_is_pending_without_a_fetch_then_installs(world) -> None:  # type: ignore[no-untyped-def]
    agent, source, httpd, _, tmp = world
    install_both(agent, source, httpd)
    before = live_cert(tmp, "a")
    put(source, "a", "a2", PKI.leaf(slot=12))
    asked: List[tuple] = []  # type: ignore[type-arg]

    def defer(name: str, version_id: str, not_after: object) -> Optional[float]:
        asked.append((name, version_id, not_after is not None))
        return 1_900_000_000.0 if name == "a" else None

    report = agent.sync(["a", "b"], defer=defer)
    assert statuses(report) == {"a": Status.PENDING, "b": Status.CURRENT}
    assert "a2 found by the safety poll; installing it at 2030-03-17T17:46:40+00:00" in str(
        [o.message for o in report.outcomes]
    )
    assert asked == [("a", "a2", True)]  # asked only for the version that moved, with the expiry
    assert source.calls == ["DescribeSecret", "DescribeSecret"]  # no GetSecretValue for it
    assert live_cert(tmp, "a") == before and httpd.calls == []
    assert statuses(agent.sync(["a"], defer=lambda *args: None)) == {"a": Status.INSTALLED}


def test_a_dry_run_is_never_deferred(world) -> None:  # type: ignore[no-untyped-def]
    agent, source, httpd, _, _ = world
    install_both(agent, source, httpd)
    put(source, "a", "a2", PKI.leaf(slot=12))
    report = agent.sync(["a"], dry_run=True, defer=lambda *args: 1_900_000_000.0)
    assert statuses(report) == {"a": Status.WOULD_INSTALL}


# --- issue 10: the pass deadline, httpd started on a first install, the wrong httpd ----------


def test_certificates_not_begun_by_the_deadline_are_deferred_and_not_recorded(
    tmp_path: Path,
) -> None:  # type: ignore[no-untyped-def]
    ticks = iter([0.0, 61.0, 62.0])  # the second certificate begins after the deadline
    text = f"[agent]\nlive_dir = {tmp_path / 'live'}\nstate_dir = {tmp_path / 'state'}\n" + "".join(
        f"[cert:{n}]\nsecret_arn = {arn(n)}\n" for n in ("a", "b")
    )
    config = parse_config(text, str(tmp_path / "c.conf"))
    source, httpd = FakeSource(), FakeHttpd(tmp_path / "live", ["a", "b"])
    agent = Agent(
        config,
        source=source,
        httpd=httpd,
        state_file=StateFile(str(tmp_path / "state")),
        live_dir_for=live_dir_factory(config, None),
        compat_for=compat_factory(config),
        monotonic=lambda: next(ticks),
    )
    source.errors[arn("a")] = SourceError("DescribeSecret: Read timeout", True, "ReadTimeout")
    put(source, "b", "b1", PKI.leaf(slot=11))
    report = agent.sync(deadline=60.0)
    assert statuses(report) == {"a": Status.FAILED, "b": Status.DEFERRED}
    assert "deadline" in report.outcomes[1].message
    state = json.loads((tmp_path / "state" / "state.json").read_text())
    assert "Read timeout" in state["certs"]["a"]["last_error"]  # saved although the pass ran late
    assert not (state["certs"].get("b") or {}).get("last_error")
    assert source.calls == ["DescribeSecret"]  # b was never asked for


def test_a_first_install_starts_a_stopped_httpd_when_the_daemon_says_so(world) -> None:  # type: ignore[no-untyped-def]
    agent, source, httpd, _served, _ = world
    httpd.running = False
    put(source, "a", "a1", PKI.leaf(slot=10))
    report = agent.sync(["a"], start_httpd=lambda: True)
    assert statuses(report) == {"a": Status.INSTALLED}
    assert httpd.calls == ["start"] and httpd.running
    state = json.loads((_ / "state" / "state.json").read_text())
    assert state["certs"]["a"]["last_verify_ok"] is True  # served, proven by a handshake


def test_a_first_install_before_ready_leaves_httpd_to_its_own_start(world) -> None:  # type: ignore[no-untyped-def]
    agent, source, httpd, _served, _ = world
    httpd.running = False
    put(source, "a", "a1", PKI.leaf(slot=10))
    assert statuses(agent.sync(["a"], start_httpd=lambda: False)) == {"a": Status.INSTALLED}
    assert httpd.calls == [] and not httpd.running


def test_a_rotation_never_starts_a_stopped_httpd(world) -> None:  # type: ignore[no-untyped-def]
    agent, source, httpd, _served, _ = world
    install_both(agent, source, httpd)
    httpd.running = False
    put(source, "a", "a2", PKI.leaf(slot=12))
    assert statuses(agent.sync(["a"], start_httpd=lambda: True)) == {"a": Status.INSTALLED}
    assert httpd.calls == []  # the operator stopped it: files load when it starts


def test_httpd_looking_stopped_while_the_verify_target_answers_is_a_misconfiguration(world) -> None:  # type: ignore[no-untyped-def]
    agent, source, httpd, served, tmp = world
    install_both(agent, source, httpd)
    before = live_cert(tmp, "a")
    httpd.running = False  # what a wrong httpd_pid_file makes of a running httpd
    served.broken_ports.add(1001)  # ... which still answers, with the old certificate
    put(source, "a", "a2", PKI.leaf(slot=12))
    report = agent.sync(["a"])
    assert statuses(report) == {"a": Status.FAILED}
    message = report.outcomes[0].message
    assert "httpd looks stopped to certpull (pid file /run/fake.pid)" in message
    assert "127.0.0.1:1001 answers TLS: certpull watches the wrong httpd" in message
    assert "\n" not in message
    assert live_cert(tmp, "a") == before  # rolled back: disk keeps matching what is served


# -- the daemon's agent: httpd's liveness grace ends once the new leaf is served (defer_grace) --


@pytest.fixture
def deferred(world):  # type: ignore[no-untyped-def]
    agent, source, httpd, served, tmp = world
    return daemon_agent(agent, source, httpd, served, tmp), source, httpd, served, tmp


def daemon_agent(
    agent: Agent, source: FakeSource, httpd: FakeHttpd, served: FakeServed, tmp: Path
) -> Agent:
    """An agent as the daemon builds it (defer_grace) over the same world as ``agent``."""
    return Agent(
        agent.config,
        source=source,
        httpd=httpd,
        state_file=StateFile(str(tmp / "state")),
        live_dir_for=live_dir_factory(agent.config, None),
        compat_for=compat_factory(agent.config),
        served_check=served,
        defer_grace=True,
    )


def saved(tmp: Path) -> Dict[str, Any]:
    return json.loads((tmp / "state" / "state.json").read_text())  # type: ignore[no-any-return]


def rotate(agent: Agent, source: FakeSource) -> Issued:
    """a1 installed, a2 published; a1's leaf."""
    first = PKI.leaf(slot=10)
    put(source, "a", "a1", first)
    assert statuses(agent.sync(["a"])) == {"a": Status.INSTALLED}
    put(source, "a", "a2", PKI.leaf(slot=12))
    return first


def test_the_pass_ends_before_the_grace_and_the_rest_is_watched(deferred) -> None:  # type: ignore[no-untyped-def]
    agent, source, httpd, _, _ = deferred
    rotate(agent, source)
    httpd.now = 0.0
    assert statuses(agent.sync(["a"])) == {"a": Status.INSTALLED}
    assert agent.watching_s() == pytest.approx(0.05)  # look again soon: 2 s of grace are left
    assert agent.watch_reload() == []  # alive, window not over
    httpd.now = 2.5
    assert agent.watch_reload() == []  # lived through the grace
    assert agent.watching_s() is None


def test_httpd_dying_after_the_early_end_is_rolled_back_started_and_refused(deferred) -> None:  # type: ignore[no-untyped-def]
    agent, source, httpd, _, tmp = deferred
    first = rotate(agent, source)
    old_pem = live_cert(tmp, "a")
    assert statuses(agent.sync(["a"])) == {"a": Status.INSTALLED}
    httpd.calls.clear()
    httpd.running = False  # dies 1 s into the grace
    httpd.now = 1.0
    assert agent.watch_reload() == ["a"]
    assert live_cert(tmp, "a") == old_pem
    assert httpd.calls == ["start"] and httpd.running
    assert httpd.loaded["a"] == first.der  # served again: the previous leaf
    record = saved(tmp)["certs"]["a"]
    assert record["installed"]["version_id"] == "a1"
    assert record["rejected"]["version_id"] == "a2"
    assert "httpd stopped within its liveness grace" in record["last_error"]
    assert agent.watching_s() is None
    report = agent.sync(["a"])  # the daemon's next pass: refused again, nothing reloaded
    assert statuses(report) == {"a": Status.FAILED}
    assert "not installing it again" in report.outcomes[0].message
    assert httpd.calls == ["start"]


def test_the_next_pass_first_catches_a_death_in_the_rest_of_the_grace(deferred) -> None:  # type: ignore[no-untyped-def]
    agent, source, httpd, _, tmp = deferred
    first = rotate(agent, source)
    agent.sync(["a"])
    httpd.running = False
    put(source, "b", "b1", PKI.leaf(slot=11))
    report = agent.sync(["b"])  # a rotation of another certificate arrives at once
    assert statuses(report) == {"b": Status.INSTALLED}
    assert saved(tmp)["certs"]["a"]["installed"]["version_id"] == "a1"
    assert live_cert(tmp, "a") == first.pem.encode()
    assert httpd.running


def test_a_one_shot_agent_waits_the_grace_out(world) -> None:  # type: ignore[no-untyped-def]
    agent, source, _, _, _ = world
    rotate(agent, source)
    assert statuses(agent.sync(["a"])) == {"a": Status.INSTALLED}
    assert agent.watching_s() is None  # the reload was not asked to end early


def test_the_rest_of_a_grace_goes_on_in_the_agent_a_config_reload_builds(deferred) -> None:  # type: ignore[no-untyped-def]
    """A SIGHUP or drop-in edit builds a new Agent; a death within the rest of the grace of the
    last reload must still be rolled back by it."""
    agent, source, httpd, served, tmp = deferred
    rotate(agent, source)
    assert statuses(agent.sync(["a"])) == {"a": Status.INSTALLED}
    reloaded = daemon_agent(agent, source, httpd, served, tmp)
    reloaded.keep_watch(agent.take_watch())
    assert agent.watching_s() is None
    httpd.running = False
    httpd.now = 1.0
    assert reloaded.watch_reload() == ["a"]
    assert saved(tmp)["certs"]["a"]["installed"]["version_id"] == "a1"


class FailingX509(InProcess):
    """The daemon's X.509 worker when its child cannot start (fork refused, interpreter gone)."""

    def validate(self, *args: object, **kwargs: object) -> CertBundle:
        raise X509WorkerError("cannot start the X.509 worker: Resource temporarily unavailable")


class PreparingX509(InProcess):
    """Records when the agent asks the worker to get ready, against the source's calls."""

    def __init__(self, calls: List[str]) -> None:
        self.calls = calls

    def prepare(self) -> None:
        self.calls.append("prepare")

    def validate(self, *args: Any, **kwargs: Any) -> CertBundle:
        self.calls.append("validate")
        return super().validate(*args, **kwargs)


def test_the_worker_is_readied_only_before_a_new_version_is_fetched(world) -> None:  # type: ignore[no-untyped-def]
    agent, source, httpd, _, _ = world
    install_both(agent, source, httpd)
    source.calls.clear()
    agent.x509 = PreparingX509(source.calls)
    assert statuses(agent.sync(["a"])) == {"a": Status.CURRENT}
    assert source.calls == ["DescribeSecret"]  # nothing new: no child started for nothing
    put(source, "a", "a2", PKI.leaf(slot=13))
    source.calls.clear()
    assert statuses(agent.sync(["a"])) == {"a": Status.INSTALLED}
    assert source.calls == ["DescribeSecret", "prepare", "GetSecretValue", "validate"]


def test_a_worker_that_cannot_validate_keeps_the_last_good_and_is_transient(world) -> None:  # type: ignore[no-untyped-def]
    agent, source, httpd, _, tmp_path = world
    install_both(agent, source, httpd)
    before = live_cert(tmp_path, "a")
    agent.x509 = FailingX509()
    put(source, "a", "a2", PKI.leaf(slot=12))
    report = agent.sync(["a"])
    (outcome,) = report.outcomes
    assert outcome.status == Status.FAILED and outcome.transient
    assert "cannot start the X.509 worker" in outcome.message
    assert live_cert(tmp_path, "a") == before and httpd.calls == []
    assert agent.state_file.load().certs["a"].rejected is None  # the bundle was never judged
    agent.x509 = InProcess()
    assert statuses(agent.sync(["a"])) == {"a": Status.INSTALLED}
