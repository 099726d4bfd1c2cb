"""The doorbell's host side under the shipped unit: `certpull check-now` (as Run Command runs it,
root, outside the sandbox) asks the agent through /run/certpull/control.sock, which the unit's
RuntimeDirectory= makes inside its read-only /run; and the fleet view lands in node_exporter's
textfile directory through the unit's ReadWritePaths=."""

from __future__ import annotations

import pytest

from tests.aws_local import LocalAws
from tests.host.host import Host, Image, wait_for
from tests.pki import Pki

TEXTFILE_DIR = "/var/lib/node_exporter/textfile_collector"


@pytest.mark.releases("bookworm")
@pytest.mark.timeout(240, func_only=True)
def test_check_now_through_the_units_control_socket_installs_and_publishes(
    image: Image, local_aws: LocalAws, pki: Pki
) -> None:
    with Host(image, local_aws, pki, "doorbell") as host:
        host.add_site("www")
        host.write_config(
            {
                "doorbell": "yes",
                "startup_splay_s": "0",
                "host_splay_s": "0",
                "prometheus_textfile_dir": TEXTFILE_DIR,
            }
        )
        host.write_file(f"{TEXTFILE_DIR}/.keep", "")
        host.write_apache()
        host.boot()
        host.provision()
        mode = host.sh("stat", "-c", "%a %U", "/run/certpull").stdout.split()
        assert mode == ["700", "root"], mode
        new = host.rotate("www")
        version = host.current_version()
        done = host.certpull("check-now", "--secret", host.sites["www"].secret_arn)
        assert done.returncode == 0, done.stdout + done.stderr + host.describe()
        assert "syncing" not in done.stderr  # the running agent answered, not a fallback
        assert version in done.stdout
        assert host.serves("www", new)
        prom = host.root / TEXTFILE_DIR.lstrip("/") / "certpull.prom"
        wait_for("the textfile", prom.exists, 10, context=host.describe)
        assert version in prom.read_text()
        host.sh("systemctl", "stop", "certpull.service")
        assert host.sh("test", "-e", "/run/certpull", check=False).returncode != 0
        done = host.certpull("check-now", "--no-fallback", "www")
        assert done.returncode == 3, done.stdout + done.stderr
