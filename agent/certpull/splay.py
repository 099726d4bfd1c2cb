"""A fixed per-host delay derived from its instance id, so the hosts of one wave do not reload
httpd (and call Secrets Manager) in the same second.

Pure. SHA-256 of the id, read as a fraction in [0, 1), times ``max_s``: uniform over the fleet,
the same on every run of a host (so a host's place in a wave does not change), and independent
of how the ids were issued.
"""

from __future__ import annotations

import hashlib


def host_splay_s(host_id: str, max_s: float) -> float:
    """Seconds in ``[0, max_s)`` for this host; 0 when ``max_s`` is 0 or the id is empty."""
    if max_s <= 0 or not host_id:
        return 0.0
    digest = hashlib.sha256(host_id.encode("utf-8")).digest()
    return max_s * int.from_bytes(digest[:8], "big") / 2.0**64
