"""`certpull doctor`'s host checks: httpd, what it serves, compat links, sandbox, SELinux, files.

Read-only: the config test is the one `sync` runs before every reload (it only parses), the
served-leaf check is one TLS handshake, `systemctl show`, `httpd -S` and `restorecon -n` change
nothing. Every command goes through the agent's CommandRunner; what the host looks like (systemd,
SELinux, a container) comes in as small functions so tests can say.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import re
import shutil
import stat
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from certpull.config import CertConfig, Config
from certpull.doctor_report import Check, Fix, failed, not_applicable, passed
from certpull.errors import CommandError, ReloadError
from certpull.httpd import Httpd, VerifyTarget, describe_cert, fetch_served_leaf
from certpull.layout import CERT_FILE, KEY_FILE
from certpull.live_view import LiveView
from certpull.pem import first_cert_der
from certpull.proc import CommandRunner

UNIT = "certpull.service"
_MAX_HANDSHAKE_S = 10.0
_VHOST = re.compile(
    r"^\s*(?:(?P<addr>\S+:(?P<port>\d+))|port (?P<nport>\d+) namevhost)\s+(?P<name>\S+)"
    r"\s+\((?P<file>[^()]+):(?P<line>\d+)\)\s*$"
)
_READ_ONLY_UNDER = {
    "yes": ("/usr", "/boot", "/efi"),
    "true": ("/usr", "/boot", "/efi"),
    "full": ("/usr", "/boot", "/efi", "/etc"),
    "strict": ("/",),
}


def systemd_running() -> bool:
    """systemd's own test (sd_booted): is systemd the init system here?"""
    return os.path.isdir("/run/systemd/system")


def selinux_mode() -> Optional[str]:
    """ "enforcing" or "permissive" when SELinux is on, None when it is off or absent."""
    try:
        with open("/sys/fs/selinux/enforce", encoding="ascii") as f:
            return "enforcing" if f.read().strip() == "1" else "permissive"
    except OSError:
        return None


def in_container() -> bool:
    """Docker, Podman, systemd-nspawn or a Kubernetes pod: one more network hop to IMDS."""
    if any(
        os.path.exists(p) for p in ("/.dockerenv", "/run/.containerenv", "/run/systemd/container")
    ):
        return True
    try:
        with open("/proc/1/cgroup", encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return False
    return any(word in text for word in ("docker", "kubepods", "containerd", "libpod", "lxc"))


def _mode(st: os.stat_result) -> str:
    return oct(stat.S_IMODE(st.st_mode))[2:].zfill(4)


def _under(path: str, root: str) -> bool:
    root = root.rstrip("/") or "/"
    return root in ("/", path) or path.startswith(root + "/")


class HostChecks:
    """Checks of this host for the agent as configured."""

    def __init__(
        self,
        config: Config,
        httpd: Httpd,
        runner: CommandRunner,
        *,
        fetch_leaf: Callable[[VerifyTarget, float], bytes] = fetch_served_leaf,
        which: Callable[[str], Optional[str]] = shutil.which,
        systemd: Callable[[], bool] = systemd_running,
        selinux: Callable[[], Optional[str]] = selinux_mode,
        systemctl: str = "systemctl",
        restorecon: str = "restorecon",
        euid: Callable[[], int] = os.geteuid,
    ) -> None:
        self.config = config
        self.httpd = httpd
        self.runner = runner
        self.fetch_leaf = fetch_leaf
        self.which = which
        self.systemd = systemd
        self.selinux = selinux
        self.systemctl = systemctl
        self.restorecon = restorecon
        self.euid = euid

    # --- httpd ----------------------------------------------------------------------------------

    def httpd_checks(self) -> List[Check]:
        return [self.binaries(), self.config_test(), self.running()]

    def binaries(self) -> Check:
        agent = self.config.agent
        commands = {
            "configtest_command": agent.configtest_command,
            "reload_command": agent.reload_command,
            "start_command": agent.start_command,
        }
        found, missing = [], []
        for key_name, argv in commands.items():
            path = argv[0] if os.path.isabs(argv[0]) else self.which(argv[0])
            if path and os.access(path, os.X_OK):
                found.append(f"{argv[0]} ({path})" if path != argv[0] else path)
            else:
                missing.append(f"{key_name}'s {argv[0]}")
        if missing:
            return failed(
                "httpd.binaries",
                "httpd commands",
                f"not found or not executable: {', '.join(missing)}",
                fixes=(
                    Fix(
                        "install Apache httpd with mod_ssl (Amazon Linux: dnf install httpd "
                        "mod_ssl; Debian: apt-get install apache2), or set these keys in [agent] "
                        f"of {self.config.path} to commands that exist"
                    ),
                ),
            )
        return passed("httpd.binaries", "httpd commands", "found: " + ", ".join(sorted(set(found))))

    def config_test(self) -> Check:
        argv = " ".join(self.httpd.configtest_argv)
        try:
            self.httpd.config_test()
        except ReloadError as exc:
            return failed(
                "httpd.configtest",
                "httpd config test",
                str(exc),
                fixes=(
                    Fix(
                        f"correct httpd's configuration until `{argv}` passes: certpull runs it "
                        "before every reload and does not reload while it fails"
                    ),
                ),
            )
        return passed("httpd.configtest", "httpd config test", f"`{argv}` passes")

    def _unit_of_reload(self) -> str:
        argv = self.config.agent.reload_command
        if os.path.basename(argv[0]) == "systemctl" and len(argv) >= 3:
            return argv[-1]
        return "httpd"

    def systemctl_show(self, unit: str, properties: Sequence[str]) -> Dict[str, str]:
        """`systemctl show UNIT -p A -p B` as a dict; {} when it cannot run."""
        argv = [self.systemctl, "show", unit]
        for prop in properties:
            argv += ["-p", prop]
        try:
            result = self.runner.run(argv, timeout_s=15, check=False)
        except CommandError:
            return {}
        if result.returncode != 0:
            return {}
        values = {}
        for line in result.stdout.splitlines():
            name, sep, value = line.partition("=")
            if sep:
                values[name.strip()] = value.strip()
        return values

    def running(self) -> Check:
        pid_file = self.config.agent.httpd_pid_file
        pid = self.httpd.main_pid()
        if pid is not None:
            return passed(
                "httpd.running", "httpd running", f"main process {pid} ({self.httpd.describe()})"
            )
        unit = self._unit_of_reload()
        shown = self.systemctl_show(unit, ("MainPID", "ActiveState")) if self.systemd() else {}
        active = shown.get("ActiveState") == "active" and shown.get("MainPID", "0") != "0"
        if active and pid_file:
            return failed(
                "httpd.running",
                "httpd running",
                f"{unit} is active (MainPID {shown['MainPID']}), but httpd_pid_file {pid_file} "
                "names no live process: certpull would take httpd for stopped and install "
                "without reloading",
                fixes=(
                    Fix(
                        f"set httpd_pid_file in [agent] of {self.config.path} to httpd's PidFile "
                        "(Amazon Linux: /run/httpd/httpd.pid; Debian: /run/apache2/apache2.pid)"
                    ),
                ),
            )
        if active:
            return passed(
                "httpd.running", "httpd running", f"{unit} is active (MainPID {shown['MainPID']})"
            )
        where = f"no live process in {self.httpd.describe()}"
        return failed(
            "httpd.running",
            "httpd running",
            f"httpd is not running ({where}): certpull installs files but cannot reload or verify",
            fixes=(
                Fix(
                    "start httpd",
                    commands=(" ".join(self.config.agent.start_command),),
                ),
            ),
        )

    # --- per certificate ------------------------------------------------------------------------

    def cert_checks(self, cert: CertConfig) -> List[Check]:
        return [self.served(cert), self.compat_links(cert), self.files(cert)]

    def _installed_leaf(self, cert: CertConfig) -> Optional[bytes]:
        try:
            with open(os.path.join(self.config.live_path(cert.name), CERT_FILE), "rb") as f:
                return first_cert_der(f.read())
        except OSError:
            return None

    def served(self, cert: CertConfig) -> Check:
        """A fresh handshake with ``verify`` returns the leaf in the live cert.pem."""
        id_, title = f"{cert.name}.served", "served certificate"
        if cert.verify is None:
            return not_applicable(id_, title, "no verify target set", cert.name)
        expected = self._installed_leaf(cert)
        if expected is None:
            return not_applicable(
                id_, title, "nothing installed yet: run `certpull sync` first", cert.name
            )
        target = VerifyTarget(cert.verify[0], cert.verify[1], cert.server_name)
        timeout = min(self.config.agent.verify_timeout_s, _MAX_HANDSHAKE_S)
        try:
            served = self.fetch_leaf(target, timeout)
        except (ReloadError, OSError) as exc:
            return failed(
                id_,
                title,
                str(exc),
                cert.name,
                fixes=(
                    Fix(
                        f"set verify in [cert:{cert.name}] to the address and port of the virtual "
                        "host that serves this certificate (one of httpd's Listen addresses), or "
                        "start httpd"
                    ),
                ),
            )
        live = self.config.live_path(cert.name)
        if served == expected:
            return passed(
                id_,
                title,
                f"{target} serves {live}/{CERT_FILE}: {describe_cert(expected)}",
                cert.name,
            )
        return failed(
            id_,
            title,
            f"{target} serves {describe_cert(served)}, but {live}/{CERT_FILE} holds "
            f"{describe_cert(expected)}: httpd reads its certificate from somewhere else",
            cert.name,
            fixes=(self._vhost_fix(cert, target, live),),
        )

    def _vhost_fix(self, cert: CertConfig, target: VerifyTarget, live: str) -> Fix:
        where = self.vhost_location(target.port, cert.server_name)
        place = (
            f"the virtual host at {where}" if where else f"the virtual host on port {target.port}"
        )
        return Fix(
            f"make {place} use the files certpull manages (then reload httpd), or set compat "
            f"links (cert_file, key_file, chain_file in [cert:{cert.name}]) to the paths it uses",
            lines=(
                f"SSLCertificateFile      {live}/cert.pem",
                f"SSLCertificateKeyFile   {live}/{KEY_FILE}",
                f"SSLCertificateChainFile {live}/chain.pem",
            ),
        )

    def vhost_location(self, port: int, server_name: Optional[str]) -> Optional[str]:
        """FILE:LINE of the virtual host for ``port`` from `httpd -S` (None when unknown)."""
        argv = list(self.httpd.configtest_argv)
        if argv[-1] == "configtest":
            argv[-1] = "-S"
        elif "-t" in argv:
            argv[argv.index("-t")] = "-S"
        else:
            return None
        try:
            result = self.runner.run(argv, timeout_s=15, check=False)
        except CommandError:
            return None
        return vhost_location(result.stdout + "\n" + result.stderr, port, server_name)

    def compat_links(self, cert: CertConfig) -> Check:
        id_, title = f"{cert.name}.compat_links", "compat links"
        links = cert.compat_links
        if not links:
            return not_applicable(id_, title, "none configured", cert.name)
        if self._installed_leaf(cert) is None:
            return not_applicable(
                id_, title, "nothing installed yet: `certpull sync` makes them", cert.name
            )
        live = self.config.live_path(cert.name)
        problems = []
        for path, filename in links:
            want = os.path.join(live, filename)
            try:
                target = os.readlink(path)
            except FileNotFoundError:
                problems.append(f"{path} does not exist")
                continue
            except OSError:
                problems.append(f"{path} is not a symlink")
                continue
            if target != want:
                problems.append(f"{path} points to {target}, not {want}")
        if problems:
            return failed(
                id_,
                title,
                "; ".join(problems),
                cert.name,
                fixes=(
                    Fix(
                        f"run `certpull sync {cert.name}`: it makes each path a symlink into "
                        f"{live} (keeping a regular file once as PATH.certpull-orig); if the links "
                        "still do not appear, see the sandbox check",
                    ),
                ),
            )
        return passed(
            id_, title, ", ".join(f"{path} -> {filename}" for path, filename in links), cert.name
        )

    def _expected_ids(self, cert: CertConfig) -> Tuple[int, Optional[int]]:
        uid = self.euid()
        if cert.owner:
            with contextlib.suppress(KeyError):
                uid = int(cert.owner) if cert.owner.isdigit() else pwd.getpwnam(cert.owner).pw_uid
        gid = None
        if cert.group:
            with contextlib.suppress(KeyError):
                gid = int(cert.group) if cert.group.isdigit() else grp.getgrnam(cert.group).gr_gid
        return uid, gid

    def files(self, cert: CertConfig) -> Check:
        """The live directory: not writable by others; the files intact with their modes/owners."""
        id_, title = f"{cert.name}.files", "live files"
        live = self.config.live_path(cert.name)
        try:
            dir_st = os.stat(live)
        except OSError:
            return not_applicable(id_, title, f"{live} does not exist yet", cert.name)
        problems = []
        if dir_st.st_mode & 0o022:
            problems.append(f"{live} is writable by group or others (mode {_mode(dir_st)})")
        view = LiveView(live)
        if view.current() is None:
            return not_applicable(id_, title, f"nothing installed in {live} yet", cert.name)
        problems.extend(view.verify_links())
        uid, gid = self._expected_ids(cert)
        key_path = os.path.join(live, KEY_FILE)
        try:
            key_st = os.stat(key_path)
        except OSError as exc:
            problems.append(f"{key_path}: {exc.strerror}")
        else:
            if key_st.st_mode & 0o007:
                problems.append(f"{key_path} is readable by others (mode {_mode(key_st)})")
            if key_st.st_uid != uid or (gid is not None and key_st.st_gid != gid):
                problems.append(
                    f"{key_path} is owned by {key_st.st_uid}:{key_st.st_gid}, configured "
                    f"{cert.owner or uid}:{cert.group or 'any'}"
                )
        if problems:
            return failed(
                id_,
                title,
                "; ".join(problems),
                cert.name,
                fixes=(
                    Fix(
                        f"run `certpull sync {cert.name}`: a pass republishes files whose content, "
                        f"modes or owners changed; make {live} writable by its owner only",
                        commands=(f"chmod go-w {live}",) if dir_st.st_mode & 0o022 else (),
                    ),
                ),
            )
        return passed(
            id_,
            title,
            f"{live}: intact; {KEY_FILE} mode {_mode(key_st)} owner {key_st.st_uid}",
            cert.name,
        )

    # --- the agent's directories, sandbox, SELinux ----------------------------------------------

    def state_dir(self) -> Check:
        path = self.config.agent.state_dir
        try:
            st = os.stat(path)
        except OSError:
            return not_applicable(
                "state_dir",
                "state directory",
                f"{path} does not exist yet (certpull makes it 0700)",
            )
        problems = []
        if st.st_mode & 0o077:
            problems.append(f"mode {_mode(st)}, not 0700")
        if st.st_uid != self.euid():
            problems.append(f"owned by uid {st.st_uid}, not {self.euid()}")
        if problems:
            return failed(
                "state_dir",
                "state directory",
                f"{path}: {', '.join(problems)}",
                fixes=(
                    Fix(
                        f"{path} holds state.json and the lock: it must be the agent's only",
                        commands=(f"chown {self.euid()} {path}", f"chmod 0700 {path}"),
                    ),
                ),
            )
        return passed("state_dir", "state directory", f"{path}: mode {_mode(st)}, uid {st.st_uid}")

    def _needed_writable(self) -> List[str]:
        paths = [self.config.agent.live_dir, self.config.agent.state_dir]
        for cert in self.config.certs:
            paths.extend(os.path.dirname(path) for path, _ in cert.compat_links)
        return list(dict.fromkeys(os.path.abspath(p) for p in paths))

    def sandbox(self) -> Check:
        """certpull.service's ReadWritePaths cover the live dir, state dir and compat links."""
        id_, title = "sandbox", "systemd sandbox"
        if not self.systemd():
            return not_applicable(id_, title, "not under systemd (no /run/systemd/system)")
        shown = self.systemctl_show(
            UNIT, ("LoadState", "ProtectSystem", "ReadWritePaths", "StateDirectory")
        )
        if shown.get("LoadState") != "loaded":
            return not_applicable(id_, title, f"{UNIT} is not installed here")
        protect = shown.get("ProtectSystem", "no") or "no"
        read_only = _READ_ONLY_UNDER.get(protect, ())
        writable = [p.lstrip("-+") for p in shown.get("ReadWritePaths", "").split() if p]
        writable += [f"/var/lib/{d}" for d in shown.get("StateDirectory", "").split() if d]
        blocked = [
            path
            for path in self._needed_writable()
            if any(_under(path, ro) for ro in read_only)
            and not any(_under(path, rw) for rw in writable)
        ]
        setting = f"ProtectSystem={protect}; ReadWritePaths={' '.join(writable) or '(none)'}"
        if blocked:
            return failed(
                id_,
                title,
                f"{UNIT} may not write {', '.join(blocked)} ({setting})",
                fixes=(
                    Fix(
                        "allow them with a drop-in (`sudo systemctl edit certpull` opens one), "
                        "then restart the agent",
                        lines=("[Service]", f"ReadWritePaths={' '.join(blocked)}"),
                        commands=(
                            "sudo systemctl edit certpull",
                            "sudo systemctl restart certpull",
                        ),
                    ),
                ),
            )
        return passed(
            id_, title, f"{UNIT} may write {', '.join(self._needed_writable())} ({setting})"
        )

    def selinux_labels(self) -> Check:
        """The live files carry the labels the SELinux policy gives them (httpd may read them)."""
        id_, title = "selinux", "SELinux labels"
        mode = self.selinux()
        if mode is None:
            return not_applicable(id_, title, "SELinux is off")
        paths = [self.config.agent.live_dir]
        for cert in self.config.certs:
            paths.extend(path for path, _ in cert.compat_links if os.path.lexists(path))
        existing = [p for p in paths if os.path.lexists(p)]
        if not existing:
            return not_applicable(id_, title, f"SELinux is {mode}; nothing installed yet")
        argv = [self.restorecon, "-R", "-n", "-v", *existing]
        try:
            result = self.runner.run(argv, timeout_s=60, check=False)
        except CommandError as exc:
            return failed(
                id_,
                title,
                f"SELinux is {mode}, but restorecon cannot run: {exc}",
                fixes=(Fix("install policycoreutils (it provides restorecon)"),),
            )
        wrong = [line.strip() for line in result.stdout.splitlines() if line.strip()]
        if wrong or result.returncode != 0:
            detail = wrong[0] if wrong else result.stderr.strip()[:200]
            return failed(
                id_,
                title,
                f"SELinux is {mode} and {len(wrong)} path(s) carry labels the policy does not "
                f"give them, e.g. {detail}",
                fixes=(
                    Fix(
                        "restore the labels (certpull restores them on every install; a file "
                        "copied or moved in by hand keeps its old label, which httpd may not read)",
                        commands=(
                            f"sudo restorecon -R -v {' '.join(existing)}",
                            "sudo ausearch -m avc -c httpd",
                        ),
                    ),
                ),
            )
        return passed(
            id_, title, f"SELinux is {mode}; labels of {', '.join(existing)} match the policy"
        )


def vhost_location(text: str, port: int, server_name: Optional[str]) -> Optional[str]:
    """From `httpd -S` output: FILE:LINE of the virtual host on ``port`` (by name when several)."""
    found: List[Tuple[str, str]] = []
    for line in text.splitlines():
        match = _VHOST.match(line)
        if not match or int(match.group("port") or match.group("nport")) != port:
            continue
        found.append((match.group("name"), f"{match.group('file')}:{match.group('line')}"))
    for name, where in found:
        if server_name and name.lower() == server_name.lower():
            return where
    return found[0][1] if found else None
