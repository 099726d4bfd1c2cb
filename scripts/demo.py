"""The README's demo: certpull end to end on this machine, with nothing outside 127.0.0.1.

1. Start a local AWS endpoint (moto's server) and create a private CA in ACM PCA.
2. Create a secret holding the rotation function's settings, and rotate it with certpull's own
   rotation function (createSecret, setSecret, testSecret, finishSecret): a certificate issued by
   the CA, for www.example.com and 127.0.0.1.
3. `certpull sync` installs it into a live directory; a real Apache httpd with mod_ssl starts on
   127.0.0.1 serving it.
4. Rotate again; `certpull sync` picks up the new version, reloads httpd gracefully and verifies.
5. Show the served certificate before and after, and `certpull status`.
6. `certpull doctor`: every check that applies on this machine passes.
Everything is cleaned up at the end (httpd stopped, the temporary directory removed).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import List

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "agent"))

from cryptography import x509  # noqa: E402

from certpull.httpd import fetch_served_leaf  # noqa: E402
from certpull.rotation.issuers import AwsIssuers  # noqa: E402
from certpull.rotation.steps import STEPS, Rotation  # noqa: E402
from tests.apache import ApacheInstance  # noqa: E402
from tests.aws_local import LocalAws  # noqa: E402

END_ENTITY_TEMPLATE = "arn:aws:acm-pca:::template/EndEntityCertificate/V1"

# The local endpoint accepts any credentials; never let the demo pick up real ones or reach AWS.
os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "demo",
        "AWS_SECRET_ACCESS_KEY": "demo",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
)
for _name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
    os.environ.pop(_name, None)


def say(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


def describe(der: bytes) -> str:
    cert = x509.load_der_x509_certificate(der)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return (
        f"serial {cert.serial_number:x}  subject {cert.subject.rfc4514_string()}  "
        f"SAN {', '.join(str(n.value) for n in names)}  notAfter {cert.not_valid_after_utc:%Y-%m-%d}"
    )


def certpull(config: Path, *args: str) -> int:
    argv: List[str] = [sys.executable, "-m", "certpull", "-c", str(config), *args]
    print(f"$ certpull {' '.join(args)}", flush=True)
    done = subprocess.run(argv, check=False)
    print(f"(exit {done.returncode})", flush=True)
    return done.returncode


def rotate(aws: LocalAws, secret_arn: str) -> str:
    token = aws.begin_rotation(secret_arn)
    rotation = Rotation(aws.client("secretsmanager"), AwsIssuers(aws.client))
    for step in STEPS:
        rotation.run(secret_arn, token, step)
        print(f"   rotation function: {step} ok", flush=True)
    return token


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="certpull-demo-"))
    apache = None
    failures = 0
    with LocalAws() as aws:
        try:
            say(f"local AWS endpoint (moto server) at {aws.endpoint_url}")
            ca_arn = aws.create_private_ca(common_name="certpull demo root CA")
            print(f"   ACM PCA root CA: {ca_arn}")

            say("secret with the rotation function's settings, then its first rotation")
            settings = {
                "CERTIFICATE_TYPE": "ACM_PCA_ISSUED",
                "CA_ARN": ca_arn,
                "COMMON_NAME": "www.example.com",
                "SUBJECT_ALTERNATIVE_NAMES": ["127.0.0.1"],
                "TEMPLATE_ARN": END_ENTITY_TEMPLATE,
                "KEY_ALGORITHM": "TYPE_EC",
                "KEY_SIZE": 256,
                "SIGNING_HASH": "sha256",
                "SIGNING_ALGORITHM": "SHA256WITHECDSA",
            }
            secret_arn = aws.put_certificate_secret("demo/www-tls", settings)
            print(f"   secret: {secret_arn}")
            print(f"   AWSCURRENT is now version {rotate(aws, secret_arn)}")

            apache = ApacheInstance(workdir / "httpd", name="www")
            config = workdir / "certpull.conf"
            config.write_text(
                "\n".join(
                    [
                        "[agent]",
                        f"endpoint_url = {aws.endpoint_url}",
                        f"reload_command = {' '.join(apache.reload_argv())}",
                        f"configtest_command = {' '.join(apache.configtest_argv())}",
                        f"start_command = {' '.join(apache.start_argv())}",
                        f"httpd_pid_file = {apache.pid_file}",
                        f"live_dir = {apache.live_dir}",
                        f"state_dir = {workdir / 'state'}",
                        "",
                        "[cert:www]",
                        f"secret_arn = {secret_arn}",
                        "server_name = www.example.com",
                        f"verify = 127.0.0.1:{apache.port}",
                        "",
                    ]
                )
            )
            say(f"certpull config ({config})")
            print(config.read_text())
            failures += certpull(config, "check-config")

            say("first install: httpd is not running yet, so certpull installs without reloading")
            if certpull(config, "sync") != 0:
                raise SystemExit("demo: the first install failed")
            for name in ("cert.pem", "chain.pem", "fullchain.pem", "privkey.pem"):
                link = apache.cert_dir / name
                mode = oct(link.stat().st_mode & 0o777)
                print(f"   {link} -> {link.readlink()}  ({mode})")

            say(f"Apache httpd with mod_ssl on 127.0.0.1:{apache.port}, serving the live files")
            apache.start()
            before = fetch_served_leaf(apache.target(), 5)
            print(f"   served: {describe(before)}")

            say("nothing changed: a sync costs one DescribeSecret and no reload")
            failures += certpull(config, "sync")

            say("rotation: the rotation function issues a new certificate with a new key")
            print(f"   AWSCURRENT is now version {rotate(aws, secret_arn)}")
            failures += certpull(config, "sync")
            after = fetch_served_leaf(apache.target(), 5)

            say("served certificate before and after the rotation")
            print(f"   before: {describe(before)}")
            print(f"   after:  {describe(after)}")
            if before == after:
                print("   ERROR: httpd still serves the old certificate")
                failures += 1

            say("certpull status")
            failures += certpull(config, "status")
            state = json.loads((workdir / "state" / "state.json").read_text())
            print(
                f"   state.json records version {state['certs']['www']['installed']['version_id']}"
            )

            say("certpull doctor: credentials, permissions, clock, the secret, httpd, the files")
            failures += certpull(config, "doctor")
        finally:
            say("cleaning up")
            if apache is not None:
                apache.stop()
            if args.keep:
                print(f"   kept {workdir}")
            else:
                shutil.rmtree(workdir, ignore_errors=True)
    say("demo " + ("OK" if failures == 0 else f"FAILED ({failures})"))
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
