"""httpd.py against a real Apache httpd on 127.0.0.1 (tests/apache.py), with real signals and TLS."""

from __future__ import annotations

import hashlib
import os
import signal
import time
from typing import Iterator

import pytest

from certpull.errors import CommandError, ReloadError
from certpull.httpd import (
    DEFAULT_ALIVE_GRACE_S,
    Httpd,
    VerifyTarget,
    fetch_served_leaf,
    wait_until_served,
)
from certpull.proc import CommandRunner
from tests.apache import ApacheFactory, ApacheInstance, apache_factory, free_port
from tests.pki import Issued, Pki

pytestmark = pytest.mark.integration

SERVE_TIMEOUT_S = 10.0


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki()


@pytest.fixture(scope="module")
def old(pki: Pki) -> Issued:
    return pki.leaf(slot=0)


@pytest.fixture(scope="module")
def new(pki: Pki) -> Issued:
    return pki.leaf(slot=1)


@pytest.fixture
def apaches(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApacheFactory]:
    yield from apache_factory(tmp_path_factory)


@pytest.fixture
def server(apaches: ApacheFactory, pki: Pki, old: Issued) -> ApacheInstance:
    return apaches.started(pki, old)


def httpd_for(server: ApacheInstance, alive_grace_s: float = DEFAULT_ALIVE_GRACE_S) -> Httpd:
    runner = CommandRunner(default_timeout_s=30)
    return Httpd(
        runner,
        server.configtest_argv(),
        server.reload_argv(),
        str(server.pid_file),
        alive_grace_s=alive_grace_s,
    )


def test_fetch_served_leaf_returns_the_installed_leaf(server: ApacheInstance, old: Issued) -> None:
    expected = old.der
    assert fetch_served_leaf(server.target(), 5.0) == expected
    # Without SNI (an IP target and no server name) the same vhost answers.
    assert fetch_served_leaf(VerifyTarget("127.0.0.1", server.port, None), 5.0) == expected
    assert server.http_get("/index.html") == "<h1>certpull test</h1>\n"


def test_fetch_served_leaf_names_the_target_when_nothing_listens() -> None:
    target = VerifyTarget("127.0.0.1", free_port(), None)
    with pytest.raises(
        ReloadError, match=rf"^cannot connect to 127.0.0.1:{target.port}: Connection refused$"
    ):
        fetch_served_leaf(target, 2.0)


def test_config_test_passes_on_a_good_config(server: ApacheInstance) -> None:
    httpd_for(server).config_test()


def test_config_test_failure_names_the_line_and_the_reason(server: ApacheInstance) -> None:
    server.write_config(["NoSuchDirective on"])
    with pytest.raises(ReloadError) as caught:
        httpd_for(server).config_test()
    err = caught.value
    assert isinstance(err, CommandError)
    assert err.returncode == 1
    assert err.argv == server.configtest_argv()
    line = server.conf_path.read_text().splitlines().index("  NoSuchDirective on") + 1
    where = f"AH00526: Syntax error on line {line} of {server.conf_path}"
    assert f"{where}: Invalid command 'NoSuchDirective'" in str(err)
    assert server.is_running(), "a config test must not touch the running httpd"


def test_config_test_fails_when_a_certificate_file_is_missing(server: ApacheInstance) -> None:
    (server.cert_dir / "cert.pem").unlink()
    with pytest.raises(
        ReloadError, match=r"SSLCertificateFile: file '.*/cert.pem' does not exist or is empty"
    ):
        httpd_for(server).config_test()


def test_graceful_reload_switches_the_served_leaf(
    server: ApacheInstance, pki: Pki, old: Issued, new: Issued
) -> None:
    httpd = httpd_for(server)
    pid = httpd.main_pid()
    for leaf in (new, old, new):
        server.install_issued(pki, leaf)
        httpd.config_test()
        httpd.graceful_reload()
        waited = wait_until_served(server.target(), leaf.der, SERVE_TIMEOUT_S)
        assert waited >= 0
        assert server.served_leaf_der() == leaf.der
        assert httpd.main_pid() == pid, "a graceful reload keeps the main process"
    assert server.http_get() == "<h1>certpull test</h1>\n"


def test_mismatched_key_passes_config_test_but_graceful_kills_httpd(
    server: ApacheInstance, pki: Pki, old: Issued, new: Issued
) -> None:
    # The case the agent must catch itself before touching disk; here we prove why.
    server.install_issued(pki, new, key_of=old)
    httpd = httpd_for(server)
    httpd.config_test()  # passes: -t does not pair keys with certificates
    with pytest.raises(ReloadError, match=r"^httpd stopped after the graceful reload"):
        httpd.graceful_reload()
    assert not httpd.is_running()
    assert "AH02565" in server.error_log.read_text()
    with pytest.raises(ReloadError, match="Connection refused"):
        fetch_served_leaf(server.target(), 2.0)


def test_graceful_reload_ends_once_proven_and_its_watch_sees_a_later_death(
    server: ApacheInstance, pki: Pki, new: Issued
) -> None:
    server.install_issued(pki, new)
    httpd = httpd_for(server)

    def proven() -> bool:
        try:
            return fetch_served_leaf(server.target(), 1.0) == new.der
        except ReloadError:
            return False

    watch = httpd.graceful_reload(proven)
    assert watch is not None, "the new leaf is served well within the grace"
    assert watch.remaining_s() > 0
    assert watch.poll() is None
    pid = httpd.main_pid()
    assert pid is not None
    os.kill(pid, signal.SIGTERM)  # httpd goes down within the grace, after the early end
    deadline = time.monotonic() + 10
    while watch.poll() is not False:
        assert time.monotonic() < deadline, "the watch never saw httpd die"
        time.sleep(0.02)


def test_wait_until_served_times_out_on_the_old_leaf(
    server: ApacheInstance, old: Issued, new: Issued
) -> None:
    with pytest.raises(ReloadError) as caught:
        wait_until_served(server.target(), new.der, 0.3)
    message = str(caught.value)
    assert message.startswith(
        f"127.0.0.1:{server.port} does not serve the new certificate after 0.3 s"
    )
    assert hashlib.sha256(old.der).hexdigest()[:16] in message
    assert hashlib.sha256(new.der).hexdigest()[:16] in message


def test_wait_until_served_reports_a_stopped_httpd(server: ApacheInstance, old: Issued) -> None:
    server.stop()
    with pytest.raises(ReloadError, match="Connection refused"):
        wait_until_served(server.target(), old.der, 0.3)


def test_httpd_stays_alive_over_many_good_reloads(
    server: ApacheInstance, pki: Pki, old: Issued, new: Issued
) -> None:
    httpd = httpd_for(server, alive_grace_s=0.25)  # measured death: <= 8 ms after the command
    leaves = [old, new]
    for i in range(6):
        leaf = leaves[i % 2]
        server.install_issued(pki, leaf)
        httpd.graceful_reload()
        wait_until_served(server.target(), leaf.der, SERVE_TIMEOUT_S)
    assert httpd.is_running()
    assert "AH00020" not in server.error_log.read_text()  # "Configuration Failed, exiting"


def test_graceful_reload_with_a_failing_command_is_a_reload_error(server: ApacheInstance) -> None:
    # -k graceful runs the config test itself first; a bad config makes the command fail and
    # leaves the running httpd alone.
    server.write_config(["NoSuchDirective on"])
    with pytest.raises(CommandError, match="Invalid command 'NoSuchDirective'"):
        httpd_for(server).graceful_reload()
    assert server.is_running()


def test_apache_instances_are_stopped_by_the_factory(
    tmp_path_factory: pytest.TempPathFactory, pki: Pki, old: Issued, new: Issued
) -> None:
    gen = apache_factory(tmp_path_factory)
    factory = next(gen)
    one = factory.started(pki, old)
    two = factory.started(pki, new, name="api")
    assert one.is_running() and two.is_running()
    with pytest.raises(StopIteration):
        next(gen)
    assert not one.is_running() and not two.is_running()
    assert one._leftover_pids() == [] and two._leftover_pids() == []
