"""First boot of a fresh host: certpull and apache2 enabled, no certificate yet, the secret in AWS.

The host must end up serving the secret's certificate with no manual step (issue 10, part 2).
"""

from __future__ import annotations

import time

import pytest

from tests.aws_local import LocalAws
from tests.host.host import Host, Image, wait_for
from tests.host.report import record
from tests.pki import Pki

FIRST_CERT_BUDGET_S = 90.0  # readiness gated on the first install is bounded at 60 s, plus boot


@pytest.mark.timeout(240, func_only=True)
def test_fresh_host_serves_the_secret_after_first_boot(
    image: Image, local_aws: LocalAws, pki: Pki
) -> None:
    with Host(image, local_aws, pki, "firstboot") as host:
        host.add_site("www")
        host.write_config()
        host.write_apache()
        host.boot()
        waited = wait_for(
            "a fresh handshake serving the secret's leaf",
            host.serves,
            FIRST_CERT_BUDGET_S,
            context=host.describe,
        )
        since_boot = time.monotonic() - host.container.boot_started
        record(
            f"first boot ({image.release}): boot to first certificate served",
            round(since_boot, 1),
            "s",
        )
        assert waited >= 0
        certpull = host.show("certpull.service", "ActiveState", "SubState", "NRestarts")
        apache = host.show("apache2.service", "ActiveState", "SubState")
        assert certpull == {"ActiveState": "active", "SubState": "running", "NRestarts": "0"}
        assert apache == {"ActiveState": "active", "SubState": "running"}
        installed = [
            e
            for e in host.journal()
            if e.get("CERT_NAME") == "www" and "installed version" in str(e.get("MESSAGE"))
        ]
        assert installed, host.describe()
        assert installed[0]["PRIORITY"] == "6"
        assert installed[0]["SECRET_ARN"] == host.sites["www"].secret_arn
        assert installed[0]["VERSION_ID"] == host.current_version()
