"""A Debian host booted under a real systemd with systemd-nspawn, and what systemd says about it.

The container's root is an overlay (the cached rootfs and the installed image below, a per-host
upper dir on top), so every host starts from the same image in no time and a reboot keeps what the
host wrote. The container shares the machine's network: moto on 127.0.0.1 is reachable and the
container's Apache listens on 127.0.0.1 only.

A run owns a session dir (WORK_DIR/sessions/PID): its overlays are mounted there and every
container it starts registers its nspawn pid there. ``open_session`` first stops and unmounts
what the sessions of dead processes left behind, so a killed run cannot wedge later ones, and
leaves the sessions of live runs (another checkout on this machine) alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from tests.proc_tree import children, tree

WORK_DIR = Path(os.environ.get("CERTPULL_HOST_WORK", "/var/tmp/certpull-host"))
MACHINE_PREFIX = "cph-"
BOOT_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0
EXEC_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "TERM": "dumb",
    "SYSTEMD_PAGER": "",
    "SYSTEMD_COLORS": "0",
}
REBOOT_EXIT_CODE = 133  # systemd-nspawn's exit status when the container asked for a reboot


class ContainerError(RuntimeError):
    pass


# --- overlays -------------------------------------------------------------------------------------


def mount_overlay(lowers: Sequence[Path], upper: Path, work: Path, merged: Path) -> None:
    """Mount ``lowers`` (top first) under ``upper`` at ``merged`` (inside a session dir)."""
    for d in (upper, work, merged):
        d.mkdir(parents=True, exist_ok=True)
    options = f"lowerdir={':'.join(map(str, lowers))},upperdir={upper},workdir={work}"
    result = subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", options, str(merged)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise ContainerError(f"cannot mount the overlay at {merged}: {result.stderr.strip()}")


def unmount(path: Path) -> None:
    if _is_mount_point(path):
        result = subprocess.run(["umount", str(path)], capture_output=True, check=False)
        if result.returncode != 0:  # still busy: detach it, the kernel frees it when unused
            subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def _mount_points_under(root: Path) -> List[Path]:
    points = []
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            point = Path(line.split()[4].encode().decode("unicode_escape"))
            if point == root or root in point.parents:
                points.append(point)
    return sorted(points, key=lambda p: len(p.parts), reverse=True)


def lower_in_use(path: Path) -> bool:
    """Whether a mounted overlay has ``path`` among its lower dirs."""
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        return any(f"{path}:" in line or f"{path}," in line for line in f if " overlay " in line)


def _is_mount_point(path: Path) -> bool:
    return path in _mount_points_under(path)


# --- sessions: what a run owns, and what killed runs left behind -------------------------------


def open_session(name: str = "") -> Path:
    """A work dir for this process (WORK_DIR/sessions/PID): containers register there, overlays
    are mounted there. Sessions of dead processes are reaped first; live ones (another checkout's
    run on this machine) are left alone."""
    for line in reap_dead_sessions():
        print(f"host tier: {line}")
    session = WORK_DIR / "sessions" / (name or str(os.getpid()))
    session.mkdir(parents=True, exist_ok=False)
    (session / "owner").write_text(_identity(os.getpid()))
    return session


def close_session(session: Path) -> None:
    _reap(session)


def _identity(pid: int) -> str:
    """pid and kernel start time: a recycled pid is not the same owner."""
    try:
        start = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19]
    except (OSError, IndexError):
        return ""
    return f"{pid} {start}"


def reap_dead_sessions() -> List[str]:
    """Stop containers and unmount overlays of sessions whose process is gone; say what."""
    done: List[str] = []
    sessions = WORK_DIR / "sessions"
    if not sessions.is_dir():
        return done
    for session in sorted(sessions.iterdir()):
        try:
            owner = (session / "owner").read_text()
        except OSError:
            owner = ""
        if owner and _identity(int(owner.split()[0])) == owner:
            continue  # a live run
        done += _reap(session)
    return done


def _reap(session: Path) -> List[str]:
    done = []
    for pid_file in sorted((session / "run").glob("*.pid")) if (session / "run").is_dir() else []:
        machine = pid_file.stem
        with contextlib.suppress(ValueError, OSError):
            pid = int(pid_file.read_text().strip())
            if _is_our_nspawn(pid, machine):
                _terminate(pid, STOP_TIMEOUT_S)
                done.append(f"stopped stale container {machine} (pid {pid})")
        pid_file.unlink(missing_ok=True)
        forget_propagation_dir(machine)
    for point in _mount_points_under(session):
        unmount(point)
        done.append(f"unmounted stale {point}")
    if not _mount_points_under(session):
        shutil.rmtree(session, ignore_errors=True)
    return done


def _is_our_nspawn(pid: int, machine: str) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return bool(argv) and argv[0].endswith(b"systemd-nspawn") and machine.encode() in argv


def _terminate(pid: int, timeout_s: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    if _alive(pid):
        for child in children(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(
                    child, signal.SIGKILL
                )  # the container's init: takes its PID namespace along
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def forget_propagation_dir(machine: str) -> None:
    """nspawn's per-machine directory on the host, which it cannot remove from a disk /run."""
    path = Path("/run/systemd/nspawn/propagate") / machine
    if path.is_dir() and not _is_mount_point(path):
        with contextlib.suppress(OSError):
            path.rmdir()


# --- the container ---------------------------------------------------------------------------


class Container:
    """One booted systemd. ``start`` boots it, ``stop`` shuts it down (idempotent), ``reboot``
    asks systemd inside for a reboot and boots the same root again."""

    def __init__(self, machine: str, root: Path, log_path: Path, session: Path) -> None:
        if not machine.startswith(MACHINE_PREFIX) or len(machine) > 60:
            raise ValueError(f"machine name {machine!r}")
        self.machine = machine
        self.pid_file = session / "run" / f"{machine}.pid"
        self.root = root
        self.log_path = log_path
        self.process: Optional[subprocess.Popen[bytes]] = None
        self.init_pid = 0
        self.boot_started = 0.0  # time.monotonic() when nspawn was started
        self.boots = 0

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        """1. Start nspawn (--keep-unit: this machine's PID 1 is not systemd and has no bus).
        2. Find the container's init: nspawn's child once it has exec'd systemd.
        3. Wait until systemd says boot is finished (running, or degraded if a unit failed)."""
        if self.running:
            raise ContainerError(f"{self.machine} is already running")
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - nspawn keeps writing after this returns
        self.boot_started = time.monotonic()
        self.process = subprocess.Popen(  # (1)
            [
                "systemd-nspawn",
                "--quiet",
                "--boot",
                "--register=no",
                "--keep-unit",
                "--link-journal=no",
                "--console=read-only",
                "-D",
                str(self.root),
                "-M",
                self.machine,
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a ^C in the terminal reaches pytest, which stops us cleanly
        )
        log.close()
        self.pid_file.write_text(str(self.process.pid))
        self.boots += 1
        deadline = self.boot_started + BOOT_TIMEOUT_S
        self.init_pid = self._wait_for_init(deadline)  # (2)
        while True:  # (3)
            state = self.exec(
                ["systemctl", "is-system-running", "--wait"],
                check=False,
                timeout=max(1.0, deadline - time.monotonic()),
            ).stdout.strip()
            if state in ("running", "degraded"):
                return
            if time.monotonic() > deadline:
                raise ContainerError(f"{self.machine}: boot did not finish (state {state!r})")
            time.sleep(0.2)

    def _wait_for_init(self, deadline: float) -> int:
        assert self.process is not None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ContainerError(
                    f"systemd-nspawn exited with {self.process.returncode}: {self.log_tail()}"
                )
            for child in children(self.process.pid):
                with contextlib.suppress(OSError):
                    if Path(f"/proc/{child}/comm").read_text().strip() == "systemd":
                        return child
            time.sleep(0.05)
        raise ContainerError(f"{self.machine}: no init process after {BOOT_TIMEOUT_S:g} s")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> Optional[int]:
        """Orderly shutdown through nspawn (SIGTERM: poweroff inside); SIGKILL after timeout_s."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            _terminate(self.process.pid, timeout_s)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        self.pid_file.unlink(missing_ok=True)
        forget_propagation_dir(self.machine)
        code = self.process.returncode
        self.process = None
        return code

    def reboot(self, timeout_s: float = 60.0) -> None:
        """`systemctl reboot` inside; nspawn exits with 133; boot the same root again."""
        assert self.process is not None
        self.exec(["systemctl", "reboot"], check=False)
        try:
            code = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise ContainerError(f"{self.machine}: no reboot after {timeout_s:g} s") from None
        self.pid_file.unlink(missing_ok=True)
        self.process = None
        if code != REBOOT_EXIT_CODE:
            raise ContainerError(f"{self.machine}: nspawn exited {code} instead of rebooting")
        forget_propagation_dir(self.machine)
        self.start()

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # -- commands inside -------------------------------------------------------------------------

    def exec(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float = 60.0,
        env: Optional[Mapping[str, str]] = None,
        input_text: Optional[str] = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in every namespace of the container's init (nsenter -a), as root."""
        if not self.running:
            raise ContainerError(f"{self.machine} is not running")
        result = subprocess.run(
            ["nsenter", "-t", str(self.init_pid), "-a", "--", *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**EXEC_ENV, **(env or {})},
            input=input_text,
            check=False,
        )
        if check and result.returncode != 0:
            raise ContainerError(
                f"`{' '.join(argv)}` exited {result.returncode} in {self.machine}: "
                f"{(result.stderr or result.stdout).strip()[-600:]}"
            )
        return result

    def in_service_namespace(
        self, pid: int, argv: Sequence[str], *, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in the mount namespace of container process ``pid`` (a service's sandbox)."""
        host_pid = self.host_pid(pid)
        result = subprocess.run(
            ["nsenter", "-t", str(host_pid), "-m", "--", *argv],
            capture_output=True,
            text=True,
            timeout=60,
            env=EXEC_ENV,
            check=False,
        )
        if check and result.returncode != 0:
            raise ContainerError(f"`{' '.join(argv)}` in pid {pid}'s namespace: {result.stderr}")
        return result

    def host_pid(self, pid: int) -> int:
        """The machine's pid of container pid ``pid`` (NSpid in /proc/PID/status)."""
        for candidate in tree(self.init_pid):
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{candidate}/status").read_text().splitlines():
                    if line.startswith("NSpid:") and line.split()[-1] == str(pid):
                        return candidate
        raise ContainerError(f"no process {pid} in {self.machine}")

    # -- what systemd says ---------------------------------------------------------------------

    def show(self, unit: str, *props: str) -> Dict[str, str]:
        out = self.exec(["systemctl", "show", unit, "-p", ",".join(props)]).stdout
        values = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        return {p: values.get(p, "") for p in props}

    def journal(
        self, *matches: str, unit: Optional[str] = None, boot: bool = True
    ) -> List[Dict[str, Any]]:
        argv = ["journalctl", "--no-pager", "-o", "json"]
        if boot:
            argv.append("-b")
        if unit:
            argv += ["-u", unit]
        argv += list(matches)
        out = self.exec(argv, check=False, timeout=60).stdout
        entries = []
        for line in out.splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                entries.append(json.loads(line))
        return entries

    def messages(self, unit: str, boot: bool = True) -> List[str]:
        return [str(e.get("MESSAGE", "")) for e in self.journal(unit=unit, boot=boot)]
