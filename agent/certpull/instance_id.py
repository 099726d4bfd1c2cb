"""This host's EC2 instance id, from the first source that knows it (readers are injected).

Sources, in the order ``default_readers`` tries them:

1. ``AWS_SSM_INSTANCE_ID``: set by the SSM agent in the environment of the commands it runs
   (the doorbell's ``certpull check-now``).
2. ``/var/lib/cloud/data/instance-id``: written by cloud-init at boot (Amazon Linux 2023 runs it);
   a file read, no network, and readable inside the unit's sandbox.
3. IMDSv2: ``PUT /latest/api/token`` then ``GET /latest/meta-data/instance-id`` with the token
   (the launch template requires IMDSv2 and a hop limit of 1, which a host process satisfies).
4. ``/etc/machine-id``: not an instance id, but stable per host: on premises or in a container
   the splay stays per host.

A reader returns None when its source does not know (missing file, no such variable, IMDS not
answering within its timeout); ``first_of`` returns the first answer.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from typing import Any, Callable, Mapping, Optional, Sequence

SSM_ENV = "AWS_SSM_INSTANCE_ID"
CLOUD_INIT_FILE = "/var/lib/cloud/data/instance-id"
MACHINE_ID_FILE = "/etc/machine-id"
IMDS_URL = "http://169.254.169.254"
IMDS_TOKEN_TTL_S = 60

# EC2 instances (i-...) and SSM hybrid managed nodes (mi-...).
INSTANCE_ID = re.compile(r"^(i|mi)-[0-9a-f]{8,17}$")

Reader = Callable[[], Optional[str]]


def from_env(environ: Mapping[str, str]) -> Reader:
    def read() -> Optional[str]:
        return _valid(environ.get(SSM_ENV, ""))

    return read


def from_file(
    path: str = CLOUD_INIT_FILE, read_text: Optional[Callable[[str], str]] = None
) -> Reader:
    """cloud-init's instance-id file (``iid-datasource-none`` and other non-EC2 ids are ignored)."""
    reader = read_text or _read_text

    def read() -> Optional[str]:
        try:
            return _valid(reader(path))
        except OSError:
            return None

    return read


def from_machine_id(
    path: str = MACHINE_ID_FILE, read_text: Optional[Callable[[str], str]] = None
) -> Reader:
    """systemd's machine id: any non-empty line (a per-host fallback, not an instance id)."""
    reader = read_text or _read_text

    def read() -> Optional[str]:
        try:
            value = reader(path).strip()
        except OSError:
            return None
        return value or None

    return read


def from_imds(
    base_url: str = IMDS_URL,
    timeout_s: float = 1.0,
    urlopen: Optional[Callable[..., Any]] = None,
) -> Reader:
    """IMDSv2: a session token first, then the instance id with it. No proxy: an ``HTTP_PROXY``
    in the environment must not carry metadata requests off the host."""
    if not base_url.startswith("http://"):
        raise ValueError(f"IMDS URL must be http://, got {base_url!r}")
    opener = urlopen or urllib.request.build_opener(urllib.request.ProxyHandler({})).open

    def read() -> Optional[str]:
        try:
            token_request = urllib.request.Request(  # noqa: S310 - http:// checked above
                f"{base_url}/latest/api/token",
                method="PUT",
                headers={"X-aws-ec2-metadata-token-ttl-seconds": str(IMDS_TOKEN_TTL_S)},
            )
            with opener(token_request, timeout=timeout_s) as response:
                token = response.read().decode("ascii", "replace").strip()
            id_request = urllib.request.Request(  # noqa: S310 - http:// checked above
                f"{base_url}/latest/meta-data/instance-id",
                headers={"X-aws-ec2-metadata-token": token},
            )
            with opener(id_request, timeout=timeout_s) as response:
                return _valid(response.read().decode("ascii", "replace"))
        except (OSError, urllib.error.URLError, ValueError):
            return None

    return read


def default_readers(environ: Mapping[str, str]) -> Sequence[Reader]:
    return (from_env(environ), from_file(), from_imds(), from_machine_id())


def first_of(readers: Sequence[Reader]) -> Optional[str]:
    """The first answer of ``readers``, in order."""
    for reader in readers:
        value = reader()
        if value:
            return value
    return None


def _valid(value: str) -> Optional[str]:
    value = value.strip()
    return value if INSTANCE_ID.match(value) else None


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read(4096)
