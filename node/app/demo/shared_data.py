"""Where the real, labelled reference images live (never copied into the repository)."""

from __future__ import annotations

import os
from pathlib import Path

ENV = "MYONODE_TEST_DATA"


def shared_data_dir() -> Path | None:
    """`$MYONODE_TEST_DATA`, else `../shared/data` beside a source checkout, else None."""
    configured = os.environ.get(ENV)
    if configured:
        path = Path(configured)
        return path if path.is_dir() else None
    beside_checkout = Path(__file__).resolve().parents[4] / "shared" / "data"
    return beside_checkout if beside_checkout.is_dir() else None
