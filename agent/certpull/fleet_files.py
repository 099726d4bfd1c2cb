"""Writes the fleet view (``fleet_view.py``) where SSM Inventory and node_exporter read it.

Each file is replaced atomically: a temporary file in the same directory whose name the readers
ignore (a leading dot and a ``.tmp`` suffix: the SSM agent reads ``*.json``, node_exporter
``*.prom``), fsync, rename, fsync of the directory. A file whose contents did not change is not
rewritten. Failures are returned as one line each (the caller logs them); they never stop a pass.

Paths:
- SSM custom inventory: ``/var/lib/amazon/ssm/<instance-id>/inventory/custom/CertpullCertificate.json``.
  The SSM agent creates that directory when it starts; when it does not exist, there is no SSM
  agent to read it and nothing is written.
- Prometheus: ``<textfile_dir>/certpull.prom`` (node_exporter's ``--collector.textfile.directory``).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from typing import List, Optional

from certpull.fleet_view import INVENTORY_FILE, inventory_json, prometheus_text
from certpull.state import State

SSM_DATA_DIR = "/var/lib/amazon/ssm"
PROMETHEUS_FILE = "certpull.prom"
FILE_MODE = 0o644  # node_exporter reads as its own user; nothing secret is in these files


def inventory_dir(instance_id: str, data_dir: str = SSM_DATA_DIR) -> str:
    return os.path.join(data_dir, instance_id, "inventory", "custom")


def write_atomic(path: str, data: bytes, mode: int = FILE_MODE) -> bool:
    """Replace ``path`` with ``data`` atomically; False when it already held exactly that."""
    try:
        with open(path, "rb") as handle:
            if handle.read(len(data) + 1) == data:
                return False
    except OSError:
        pass
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return True


@dataclass(frozen=True)
class FleetFiles:
    """Where this host publishes its certificates' state (None: not published there)."""

    inventory_dir: Optional[str] = None
    prometheus_dir: Optional[str] = None

    def publish(self, state: State, agent_version: str) -> List[str]:
        """Write both views; one line per failure (nothing raised)."""
        problems: List[str] = []
        if self.inventory_dir and os.path.isdir(self.inventory_dir):
            path = os.path.join(self.inventory_dir, INVENTORY_FILE)
            problems += _write(path, inventory_json(state, agent_version), "SSM inventory")
        if self.prometheus_dir:
            path = os.path.join(self.prometheus_dir, PROMETHEUS_FILE)
            problems += _write(path, prometheus_text(state), "Prometheus textfile")
        return problems


def _write(path: str, text: str, what: str) -> List[str]:
    try:
        write_atomic(path, text.encode("utf-8"))
    except OSError as exc:
        return [f"{what}: cannot write {path}: {exc.strerror or exc}"]
    return []
