"""`doctor`: what stands between this cortex and working federation, each with the command or edit that fixes it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from noemafed.federation.doctor import diagnose
from noemafed.federation.probe import gather
from noemafed.reports.config import DoctorReport
from noemafed.text.gotext import format_rfc3339


def doctor(cortex_dir: Path, environ: Mapping[str, str], *, online: bool, timeout: float) -> DoctorReport:
    """Gather the facts (peers only when `online`, each within `timeout` seconds), then judge them."""
    facts = gather(cortex_dir, environ, online=online, timeout=timeout)
    return DoctorReport(format_rfc3339(facts.now), cortex_dir, facts.cortex_id, online, diagnose(facts))
