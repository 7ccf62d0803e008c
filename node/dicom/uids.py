"""Deterministic identifiers for the node's outputs.

A re-run of the same pipeline version on the same source series yields the same UIDs, so an
archive replaces the earlier SEG/SR instead of collecting duplicates.
"""

from __future__ import annotations

import uuid

_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://myonode.org/uids")


def derived_uid(*parts: str) -> str:
    """A name-based (UUID v5) UID under the 2.25 root (PS3.5 B.2), stable for `parts`."""
    return "2.25." + str(uuid.uuid5(_NAMESPACE, "\x1f".join(parts)).int)
