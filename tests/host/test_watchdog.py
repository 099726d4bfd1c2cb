"""The unit's watchdog (WatchdogSec=60): a hung agent is killed and restarted; a healthy agent
whose AWS calls hang is not.
"""

from __future__ import annotations

import time

import pytest

from tests.aws_local import LocalAws
from tests.aws_proxy import Fault
from tests.host.host import Host, Image, handshakes, wait_for
from tests.host.report import record
from tests.pki import Pki

STALL_S = 200.0  # several minutes: more than three WatchdogSec periods
NEVER_S = 3600.0  # the proxy holds each call this long: the endpoint accepts and never answers


def provisioned(host: Host, names: tuple = ("www",)) -> Host:  # type: ignore[type-arg]
    for name in names:
        host.add_site(
            name, server_name=f"{name}.example.com", **({} if name == "www" else {"verify": ""})
        )
    host.write_config({"startup_splay_s": "0"})
    host.write_apache()
    host.boot()
    host.provision()
    return host


@pytest.mark.releases("bookworm")
@pytest.mark.timeout(240, func_only=True)
def test_a_hung_agent_is_killed_by_the_watchdog_and_restarted(
    image: Image, local_aws: LocalAws, pki: Pki
) -> None:
    with Host(image, local_aws, pki, "hung") as host:
        provisioned(host)
        pid = host.main_pid()
        stopped = time.monotonic()
        with handshakes(host) as seen:
            host.sh("kill", "-STOP", str(pid))
            wait_for(
                "a new agent after the watchdog fired",
                lambda: (
                    host.main_pid() not in (0, pid)
                    and host.show("certpull.service", "SubState")["SubState"] == "running"
                ),
                150,
                context=host.describe,
            )
        record(
            f"watchdog ({image.release}): SIGSTOP to agent restarted",
            round(time.monotonic() - stopped, 1),
            "s",
        )
        assert host.show("certpull.service", "NRestarts")["NRestarts"] == "1"
        systemd_said = [e["MESSAGE"] for e in host.journal() if e.get("UNIT") == "certpull.service"]
        assert any("Watchdog timeout" in m for m in systemd_said), systemd_said[-10:]
        assert any("Failed with result 'watchdog'" in m for m in systemd_said), systemd_said[-10:]
        assert seen and all(der == host.leaves["www"].der for der in seen)  # httpd unaffected


@pytest.mark.releases("bookworm")
@pytest.mark.timeout(STALL_S + 180, func_only=True)
def test_a_stalled_aws_endpoint_does_not_get_a_healthy_agent_killed(
    image: Image, local_aws: LocalAws, pki: Pki
) -> None:
    """Three certificates, the shipped timeouts (read_timeout_s=15, max_attempts=3), and an
    endpoint that accepts connections and never answers for several minutes: the agent stays
    the same process (no watchdog kill, no restart loop), failures reach state.json and `certpull
    status`, and httpd keeps serving."""
    with Host(image, local_aws, pki, "stall") as host:
        provisioned(host, ("www", "api", "web"))
        pid = host.main_pid()
        host.proxy.inject(Fault(operation="*", delay_s=NEVER_S))
        stalled = time.monotonic()
        host.sh(
            "systemctl", "kill", "--kill-who=main", "-s", "USR1", "certpull.service"
        )  # check all now
        samples = []
        with handshakes(host, interval_s=1.0) as seen:
            while time.monotonic() - stalled < STALL_S:
                props = host.show("certpull.service", "MainPID", "NRestarts", "SubState")
                samples.append(props)
                assert props == {"MainPID": str(pid), "NRestarts": "0", "SubState": "running"}, (
                    f"after {time.monotonic() - stalled:.0f} s of stalled AWS:\n{host.describe(lines=20)}"
                )
                time.sleep(5)
        assert not [m for m in host.messages() if "Watchdog timeout" in m]
        state = host.state()["certs"]
        for name in ("www", "api", "web"):
            assert state[name]["last_error"], f"{name}: no failure recorded after {STALL_S:g} s"
            assert state[name]["consecutive_failures"] >= 1
        code, status = host.status_json()
        assert code == 1, status
        assert all(status["certs"][n]["last_error"] for n in ("www", "api", "web"))
        assert status["daemon"]["running"] is True
        assert seen and all(der == host.leaves["www"].der for der in seen)
        record(f"stall ({image.release}): observed", len(samples), "samples")
