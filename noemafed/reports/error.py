"""The error document: what a `--json` command prints instead of its report when it fails."""

from __future__ import annotations

from noemafed.errors import NoemafedError
from noemafed.records import Record


class ErrorReport(Record):
    """A failed command as a `--json` caller sees it: the error's stable code, its texts and the exit code."""

    schema_version: int  # the document the command would have printed (status or sync)
    code: str
    message: str
    hint: str | None
    exit_code: int

    @classmethod
    def of(cls, exc: NoemafedError, schema_version: int) -> ErrorReport:
        return cls(schema_version, exc.code, exc.message, exc.hint, int(exc.exit_code))
