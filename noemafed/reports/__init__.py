"""What each command found or did, as frozen values: commands/ builds them, render/ prints them.

One module per family of commands (status, sync, the configuration commands), because each report class costs
some 80 microseconds to define at import and `status --check`, which a monitoring system runs every minute,
should define only its own (docs/performance.md, status). Here: the schema versions and the error document,
which every command shares.
"""

from __future__ import annotations

from typing import NamedTuple

from noemafed.errors import NoemafedError

# The `schema_version` of each JSON document (docs/*.schema.json).
STATUS_SCHEMA_VERSION = 2  # docs/status.schema.json
PEERS_SCHEMA_VERSION = 1  # docs/peers.schema.json
SYNC_SCHEMA_VERSION = 2  # docs/sync.schema.json
DOCTOR_SCHEMA_VERSION = 1  # docs/doctor.schema.json


class ErrorReport(NamedTuple):
    """A failed command as a `--json` caller sees it: the error's stable code, its texts and the exit code."""

    schema_version: int  # the document the command would have printed (status or sync)
    code: str
    message: str
    hint: str | None
    exit_code: int

    @classmethod
    def of(cls, exc: NoemafedError, schema_version: int) -> ErrorReport:
        return cls(schema_version, exc.code, exc.message, exc.hint, int(exc.exit_code))
