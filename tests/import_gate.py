"""Hold a child process at its first import of chosen packages until the test opens the gate.

`ImportGate.env()` puts a directory holding a `sitecustomize` on the child's PYTHONPATH; its
import hook blocks the first import of each held package (signals are still handled meanwhile),
writing `<gate>.waiting` with the module's name, until `open()` creates the gate file. A test thus
proves what a process does before it imports them, without timing anything.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Optional, Sequence

SITECUSTOMIZE = """
import os, sys, time
_GATE = os.environ["CERTPULL_TEST_IMPORT_GATE"]
_HELD = set(os.environ["CERTPULL_TEST_IMPORT_GATE_HOLDS"].split(","))


class _Gate:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in _HELD and not os.path.exists(_GATE):
            with open(_GATE + ".waiting", "w") as note:
                note.write(name)
            while not os.path.exists(_GATE):
                time.sleep(0.02)
        return None


sys.meta_path.insert(0, _Gate())
"""


class ImportGate:
    def __init__(self, root: Path, holds: Sequence[str]) -> None:
        self.dir = root / "import-gate"
        self.dir.mkdir()
        (self.dir / "sitecustomize.py").write_text(SITECUSTOMIZE)
        self.gate = root / "import-gate.open"
        self.holds = list(holds)

    def env(self, pythonpath: str = "") -> Dict[str, str]:
        """The child's environment additions; ``pythonpath`` follows the gate's directory."""
        return {
            "PYTHONPATH": os.pathsep.join(p for p in (str(self.dir), pythonpath) if p),
            "CERTPULL_TEST_IMPORT_GATE": str(self.gate),
            "CERTPULL_TEST_IMPORT_GATE_HOLDS": ",".join(self.holds),
        }

    def waiting_at(self) -> Optional[str]:
        """The module the child is held at (or was, once open), else None."""
        note = Path(str(self.gate) + ".waiting")
        return note.read_text() if note.exists() else None

    def open(self) -> None:
        self.gate.touch()
