"""`set-interval` and `set-verify`: the cortex-wide federation settings in cortex.md, checked before writing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from noemafed.cortex.manifest import VERIFY_MODES, read_manifest, with_federation_setting, write_manifest_raw
from noemafed.errors import ArgumentError
from noemafed.federation.lock import sync_running
from noemafed.reports.config import SettingChange
from noemafed.text.durations import parse_go_duration
from noemafed.text.gotext import go_quote

INTERVAL_INVALID = "invalid interval {value}: not a Go duration"
INTERVAL_NOT_POSITIVE = "invalid interval {value}: it must be more than zero"
INTERVAL_HINT = (
    "write a number and a unit (ns, us, ms, s, m, h), such as 30s, 5m or 1h30m; there is no day unit"
)
# Worded as noema's `invalid mode` (federation.md §6.5).
VERIFY_INVALID = "invalid verify mode {value}; use off, warn, or enforce"


def _set(locate: Callable[[], Path], key: str, value: str, default: str = "") -> SettingChange:
    """Write `federation.<key>` unless it already holds `value`; `default` is written by removing the key."""
    cortex_dir = locate()
    manifest = read_manifest(cortex_dir)
    federation = manifest.federation
    previous = getattr(federation, key) if federation else ""
    if (previous or default) == value:
        return SettingChange(key, previous or default, value)
    raw = with_federation_setting(manifest, key, "" if value == default else value)
    write_manifest_raw(manifest.path, raw, manifest.body)
    return SettingChange(key, previous or default, value, sync_running(cortex_dir))


def set_interval(locate: Callable[[], Path], value: str) -> SettingChange:
    """Set how often the daemon polls each peer; checked as Go's time.ParseDuration, which silently falls
    back to 30s on anything it cannot parse."""
    seconds = parse_go_duration(value)
    if seconds is None:
        raise ArgumentError(INTERVAL_INVALID.format(value=go_quote(value)), INTERVAL_HINT)
    if seconds <= 0:
        raise ArgumentError(INTERVAL_NOT_POSITIVE.format(value=go_quote(value)), INTERVAL_HINT)
    return _set(locate, "interval", value)


def set_verify(locate: Callable[[], Path], mode: str) -> SettingChange:
    """Set how replay treats event signatures; `off`, the default, is written by removing the key."""
    if mode not in VERIFY_MODES:
        raise ArgumentError(VERIFY_INVALID.format(value=go_quote(mode)))
    return _set(locate, "verify", mode, default="off")
