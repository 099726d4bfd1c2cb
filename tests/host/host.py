"""A fresh host for one scenario: Debian booted under systemd, certpull installed by rpm, the
distribution's apache2 with mod_ssl, a secret in moto, and what a client and systemd see.

Layers (overlayfs, top first): the host's own upper dir; the release's *image* (the package
installed with rpm by a booted builder, certpull and apache2 enabled, as an image builder does);
the cached debootstrap rootfs. What the tier adds on top of the package, all documented in
tests/host/README.md:
- AWS credentials in a drop-in (on EC2 they come from the instance profile);
- the [cert:...] sections and endpoint_url in /etc/certpull/certpull.conf, as an operator edits it;
- Debian's names for httpd (`DEBIAN_HTTPD`), except where a test checks the shipped defaults;
- Apache on 127.0.0.1:PORT, PORT free on this machine (the network is shared).
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Type

from certpull.httpd import VerifyTarget, fetch_served_leaf
from tests.apache import free_port
from tests.aws_local import LocalAws
from tests.aws_proxy import AwsProxy
from tests.host import packages, rootfs
from tests.host.container import (
    WORK_DIR,
    Container,
    ContainerError,
    lower_in_use,
    mount_overlay,
    unmount,
)
from tests.pki import Issued, Pki

CONFIG = "/etc/certpull/certpull.conf"
STATE = "/var/lib/certpull/state.json"
LIVE = "/etc/pki/certpull"
SERVER_NAME = "www.example.com"
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_EC2_METADATA_DISABLED": "true",
}
CREDENTIALS_DROPIN = "/etc/systemd/system/certpull.service.d/10-host-tier-credentials.conf"
# Debian's name for what Amazon Linux 2023 calls httpd.service. No httpd_pid_file: as with the
# shipped defaults, the agent asks systemd for the unit's MainPID.
# (`apachectl configtest`, the shipped configtest_command, works on both: Debian links apachectl.)
DEBIAN_HTTPD = {
    "reload_command": "systemctl reload apache2",
    "start_command": "systemctl start apache2",
}


# --- images -------------------------------------------------------------------------------------


@dataclass
class Image:
    """A release with the package installed: overlay lower dirs, top first."""

    release: str
    base: Path
    installed: Path
    rpm: Path  # what is installed
    newer_rpm: Path  # the upgrade
    session: Path  # the run's session dir (container.open_session)

    @property
    def lowers(self) -> List[Path]:
        return [self.installed, self.base]


def base_dir(release: str) -> Path:
    """The cached rootfs unpacked (once per cache key) under WORK_DIR/base; older unpacked
    rootfs of the release are removed unless a live overlay still uses them."""
    tarball = rootfs.cached_rootfs(release)
    dest = WORK_DIR / "base" / tarball.name.replace(".tar.zst", "")
    with rootfs.locked(f"base-{release}"):
        if not (dest / ".complete").exists():
            shutil.rmtree(dest, ignore_errors=True)
            rootfs.unpack(tarball, dest)
            (dest / ".complete").write_text("")
        for stale in (WORK_DIR / "base").glob(f"{release}-*"):
            if stale != dest and not lower_in_use(stale):
                shutil.rmtree(stale, ignore_errors=True)
    return dest


def rpms_for(release: str, base: Path) -> Sequence[Path]:
    """(installed, newer) RPMs for ``release``: the real ones, or bookworm's repacks of them."""
    version = packages.source_version()
    real = packages.real_rpm(version)
    newer = packages.real_rpm(packages.newer_version(version))
    if release == "bookworm":
        return packages.bookworm_rpm(real, base), packages.bookworm_rpm(newer, base)
    return real, newer


def build_image(release: str, session_dir: Path) -> Image:
    """1. Boot the rootfs (an image builder). 2. rpm -i the package: its %post presets the unit.
    3. Enable certpull and apache2, as the image's recipe would. 4. Shut down; forget the builder's
    machine-id and journal, so every host booted from it is a fresh one."""
    base = base_dir(release)
    rpm, newer = rpms_for(release, base)
    top = session_dir / f"image-{release}"
    installed = top / "upper"
    merged = top / "root"
    mount_overlay([base], installed, top / "work", merged)
    container = Container(
        f"cph-image-{release}-{uuid.uuid4().hex[:6]}", merged, top / "nspawn.log", session_dir
    )
    try:
        container.start()  # (1)
        shutil.copy2(rpm, merged / "var/tmp" / rpm.name)
        container.exec(["rpm", "-i", "--nodeps", "--force-debian", f"/var/tmp/{rpm.name}"])  # (2)
        container.exec(["systemctl", "enable", "certpull.service", "apache2.service"])  # (3)
        (merged / "var/tmp" / rpm.name).unlink()
    finally:
        container.stop()  # (4)
        unmount(merged)
    (installed / "etc/machine-id").write_text("")
    for leftover in ("var/log/journal", "var/lib/systemd/random-seed", "var/lib/systemd/timers"):
        path = installed / leftover
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    return Image(release, base, installed, rpm, newer, session_dir)


# --- config edits ------------------------------------------------------------------------------


def edit_ini(text: str, changes: Mapping[str, Mapping[str, str]]) -> str:
    """Set ``key = value`` in sections of the shipped config, keeping its comments; sections that
    are not there yet are appended."""
    lines = text.splitlines()
    out: List[str] = []
    section = None
    pending: Dict[str, Dict[str, str]] = {s: dict(kv) for s, kv in changes.items()}

    def flush(name: Optional[str]) -> None:
        if name in pending:
            out.extend(f"{k} = {v}" for k, v in pending.pop(name).items())

    for line in lines:
        header = re.match(r"^\[(.+)\]\s*$", line)
        if header:
            flush(section)
            section = header.group(1)
        else:
            key = re.match(r"^([A-Za-z_]+)\s*=", line)
            if key and section in pending and key.group(1) in pending[section]:
                out.append(f"{key.group(1)} = {pending[section].pop(key.group(1))}")
                continue
        out.append(line)
    flush(section)
    for name, kv in pending.items():
        out += ["", f"[{name}]", *(f"{k} = {v}" for k, v in kv.items())]
    return "\n".join(out) + "\n"


@dataclass
class Site:
    """One certificate of a host: its [cert:NAME] section, secret and Apache virtual host."""

    name: str
    secret_arn: str
    server_name: str
    extra: Dict[str, str] = field(default_factory=dict)


# --- the host ------------------------------------------------------------------------------------


class Host:
    """One scenario's host. Use as a context manager: on exit the container is stopped and the
    overlay unmounted, whatever happened; on failure the journal is kept under WORK_DIR/logs."""

    def __init__(self, image: Image, aws: LocalAws, pki: Pki, scenario: str) -> None:
        self.image = image
        self.aws = aws
        self.pki = pki
        self.scenario = scenario
        tag = uuid.uuid4().hex[:6]
        self.machine = f"cph-{image.release[:4]}-{re.sub('[^a-z0-9]', '', scenario)[:24]}-{tag}"
        self.dir = image.session / "hosts" / self.machine
        self.root = self.dir / "root"
        self.port = free_port()
        self.proxy = AwsProxy(aws.endpoint_url)
        self.container = Container(self.machine, self.root, self.dir / "nspawn.log", image.session)
        self.sites: Dict[str, Site] = {}
        self.leaves: Dict[str, Issued] = {}

    # -- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> Host:
        mount_overlay(self.image.lowers, self.dir / "upper", self.dir / "work", self.root)
        self.proxy.start()
        (self.root / CREDENTIALS_DROPIN.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (self.root / CREDENTIALS_DROPIN.lstrip("/")).write_text(
            "# tests/host: AWS credentials, which an EC2 host gets from its instance profile.\n"
            "[Service]\n" + "".join(f"Environment={k}={v}\n" for k, v in AWS_ENV.items())
        )
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        try:
            if exc_type is not None and self.container.running:
                self._keep_journal()
        finally:
            try:
                self.container.stop()
            finally:
                self.proxy.stop()
                unmount(self.root)
                if exc_type is None:
                    shutil.rmtree(self.dir, ignore_errors=True)

    def _keep_journal(self) -> None:
        logs = WORK_DIR / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(Exception):
            text = self.container.exec(
                ["journalctl", "--no-pager", "-o", "short-monotonic"], check=False
            ).stdout
            (logs / f"{self.machine}.journal.txt").write_text(text)

    def boot(self) -> None:
        self.container.start()

    # -- what the operator set up ---------------------------------------------------------------

    def add_site(
        self,
        name: str = "www",
        leaf: Optional[Issued] = None,
        server_name: str = SERVER_NAME,
        **extra: str,
    ) -> Site:
        """A secret in moto holding a fresh leaf, a [cert:NAME] section, an Apache vhost."""
        leaf = leaf or self.pki.leaf(names=(server_name, "127.0.0.1"))
        arn = self.aws.put_certificate_secret(f"{self.machine}-{name}", self.pki.secret(leaf))
        site = Site(name, arn, server_name, dict(extra))
        self.sites[name] = site
        self.leaves[name] = leaf
        return site

    def rotate(
        self,
        name: str = "www",
        leaf: Optional[Issued] = None,
        secret: Optional[Mapping[str, object]] = None,
    ) -> Issued:
        """A new AWSCURRENT version of the site's secret; returns the leaf it holds."""
        site = self.sites[name]
        leaf = leaf or self.pki.leaf(names=(site.server_name, "127.0.0.1"))
        self.aws.put_certificate_secret(f"{self.machine}-{name}", secret or self.pki.secret(leaf))
        if secret is None:
            self.leaves[name] = leaf
        return leaf

    def current_version(self, name: str = "www") -> str:
        stages = self.aws.version_stages(self.sites[name].secret_arn)
        return next(v for v, s in stages.items() if "AWSCURRENT" in s)

    def write_config(
        self, agent: Optional[Mapping[str, str]] = None, debian_names: bool = True
    ) -> str:
        """/etc/certpull/certpull.conf: the shipped file, edited like an operator does: the
        endpoint, Debian's httpd names (unless ``debian_names`` is false), one [cert:NAME] per site
        (the shipped example [cert:www] is dropped when there is no www site)."""
        shipped = (self.image.installed / CONFIG.lstrip("/")).read_text()
        agent_keys = {"endpoint_url": self.proxy.endpoint_url}
        if debian_names:
            agent_keys.update(DEBIAN_HTTPD)
        agent_keys.update(agent or {})
        changes: Dict[str, Dict[str, str]] = {"agent": agent_keys}
        for site in self.sites.values():
            changes[f"cert:{site.name}"] = {
                "secret_arn": site.secret_arn,
                "server_name": site.server_name,
                "verify": f"127.0.0.1:{self.port}",
                **site.extra,
            }
        text = edit_ini(shipped, changes)
        if "www" not in self.sites:
            text = _drop_section(text, "cert:www")
        (self.root / CONFIG.lstrip("/")).write_text(text)
        return text

    def write_apache(self, files: Optional[Mapping[str, Mapping[str, str]]] = None) -> None:
        """Listen on 127.0.0.1:PORT only; one name-based TLS vhost per site (SNI), on certpull's
        live files unless ``files`` names others (compat-link set-ups)."""
        (self.root / "etc/apache2/ports.conf").write_text(
            f"ServerName localhost\nListen 127.0.0.1:{self.port}\n"
        )
        blocks = []
        for site in self.sites.values():
            paths = (files or {}).get(site.name) or {
                "SSLCertificateFile": f"{LIVE}/{site.name}/cert.pem",
                "SSLCertificateKeyFile": f"{LIVE}/{site.name}/privkey.pem",
                "SSLCertificateChainFile": f"{LIVE}/{site.name}/chain.pem",
            }
            blocks.append(
                f"<VirtualHost 127.0.0.1:{self.port}>\n  ServerName {site.server_name}\n  SSLEngine on\n"
                + "".join(f"  {k} {v}\n" for k, v in paths.items())
                + "</VirtualHost>\n"
            )
        available = self.root / "etc/apache2/sites-available/certpull-tier.conf"
        available.write_text("".join(blocks))
        enabled = self.root / "etc/apache2/sites-enabled/certpull-tier.conf"
        if not enabled.is_symlink():
            enabled.symlink_to("../sites-available/certpull-tier.conf")

    def write_file(self, path: str, data: str, mode: int = 0o644) -> None:
        target = self.root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(data)
        target.chmod(mode)

    # -- inside the host --------------------------------------------------------------------------

    def sh(self, *argv: str, check: bool = True, timeout: float = 60.0, aws: bool = False) -> Any:
        return self.container.exec(argv, check=check, timeout=timeout, env=AWS_ENV if aws else None)

    def certpull(self, *args: str, timeout: float = 120.0) -> Any:
        """The CLI as an operator runs it on the host (root, outside the unit's sandbox)."""
        return self.container.exec(["certpull", *args], check=False, timeout=timeout, env=AWS_ENV)

    def show(self, unit: str, *props: str) -> Dict[str, str]:
        return self.container.show(unit, *props)

    def main_pid(self, unit: str = "certpull.service") -> int:
        return int(self.show(unit, "MainPID")["MainPID"] or 0)

    def state(self) -> Dict[str, Any]:
        path = self.root / STATE.lstrip("/")
        try:
            return json.loads(path.read_text())  # type: ignore[no-any-return]
        except (OSError, ValueError):
            return {}

    def status_json(self) -> tuple[int, Dict[str, Any]]:
        result = self.certpull("status", "--json")
        try:
            return result.returncode, json.loads(result.stdout)
        except ValueError:
            return result.returncode, {"raw": result.stdout + result.stderr}

    def journal(self, unit: str = "certpull.service", boot: bool = True) -> List[Dict[str, Any]]:
        return self.container.journal(unit=unit, boot=boot)

    def messages(self, unit: str = "certpull.service", boot: bool = True) -> List[str]:
        return self.container.messages(unit, boot)

    def provision(self) -> None:
        """The README's quick start on a running host: sync once, (re)start httpd on the files it
        installed, enable --now the agent. Lifecycle scenarios start from here."""
        result = self.certpull("sync")
        if result.returncode != 0:
            raise ContainerError(
                f"certpull sync exited {result.returncode}: {result.stdout}{result.stderr}"
            )
        self.sh("systemctl", "restart", "apache2.service")
        self.sh("systemctl", "enable", "--now", "certpull.service")
        for name in self.sites:
            wait_for(f"{name} served", lambda n=name: self.serves(n), 20)
        wait_for(
            "certpull running",
            lambda: self.show("certpull.service", "SubState")["SubState"] == "running",
            30,
        )

    def describe(
        self, units: Sequence[str] = ("certpull.service", "apache2.service"), lines: int = 12
    ) -> str:
        """What systemd says about ``units`` and their last journal lines, for failure messages."""
        out = []
        for unit in units:
            try:
                props = self.show(
                    unit, "ActiveState", "SubState", "Result", "NRestarts", "ExecMainStatus"
                )
                tail = self.messages(unit)[-lines:]
            except Exception as exc:  # a failure message must not fail itself
                out.append(f"{unit}: cannot ask systemd: {exc}")
                continue
            out.append(f"{unit}: {' '.join(f'{k}={v}' for k, v in props.items())}")
            out += [f"  | {m}" for m in tail]
        return "\n".join(out)

    # -- what a client sees -----------------------------------------------------------------------

    def served_der(self, name: str = "www", timeout_s: float = 3.0) -> bytes:
        target = VerifyTarget("127.0.0.1", self.port, self.sites[name].server_name)
        return fetch_served_leaf(target, timeout_s)

    def serves(self, name: str = "www", leaf: Optional[Issued] = None) -> bool:
        """A fresh handshake returns the leaf of the site's current secret (or ``leaf``)."""
        expected = (leaf or self.leaves[name]).der
        try:
            return self.served_der(name) == expected
        except Exception:  # refused, reset, TLS alert: not serving it
            return False


def _drop_section(text: str, name: str) -> str:
    out, skipping = [], False
    for line in text.splitlines():
        header = re.match(r"^\[(.+)\]\s*$", line)
        if header:
            skipping = header.group(1) == name
        if not skipping:
            out.append(line)
    return "\n".join(out) + "\n"


def wait_for(
    what: str,
    check: Callable[[], bool],
    timeout_s: float,
    interval_s: float = 0.2,
    context: Optional[Callable[[], str]] = None,
) -> float:
    """Poll ``check`` until true; return the seconds it took. On timeout an AssertionError names
    ``what`` and adds ``context()`` (what systemd and the journal said)."""
    started = time.monotonic()
    while True:
        if check():
            return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            extra = f"\n{context()}" if context else ""
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for: {what}{extra}")
        time.sleep(interval_s)


@contextlib.contextmanager
def handshakes(
    host: Host, name: str = "www", interval_s: float = 0.1
) -> Iterator[List[Optional[bytes]]]:
    """Fresh TLS handshakes in a thread while the block runs: the list of served leaves (None for
    a failed handshake)."""
    import threading

    seen: List[Optional[bytes]] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                seen.append(host.served_der(name, timeout_s=2.0))
            except Exception:  # refused, reset: a failed handshake
                seen.append(None)
            stop.wait(interval_s)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join(5)
