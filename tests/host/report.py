"""Numbers the host tier measures: printed at the end of the session, saved as JSON."""

from __future__ import annotations

from typing import Any, Dict, List

MEASUREMENTS: List[Dict[str, Any]] = []


def record(name: str, value: Any, unit: str = "", **detail: Any) -> None:
    MEASUREMENTS.append({"name": name, "value": value, "unit": unit, **detail})
