"""`init`: create a new, empty cortex."""

from __future__ import annotations

from pathlib import Path

from noemafed.cortex.open import init_cortex
from noemafed.reports.config import InitReport


def init(directory: Path, name: str | None) -> InitReport:
    """Create the cortex noema can open; the name defaults to the directory's."""
    manifest = init_cortex(directory, name)
    return InitReport(directory, manifest.id, manifest.name)
