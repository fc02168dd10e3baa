"""Exit codes and the one error hierarchy that the CLI translates into them."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit statuses; docs/exit-codes.md lists each with its meaning."""

    OK = 0
    ERROR = 1  # a command refused or failed (Go noema exits 1 for every error)
    USAGE = 2  # usage errors: unknown option, wrong argument count, a bad argument value, --yes missing
    PEER_TRANSIENT = 3  # sync: a peer failed for a reason that may heal by itself
    PEER_NEEDS_OPERATOR = 4  # sync: a peer failed in a way only an operator can fix
    CORTEX_NOT_FOUND = 66  # EX_NOINPUT: no cortex could be resolved
    CORTEX_UNAVAILABLE = 69  # EX_UNAVAILABLE: the cortex exists but is unsafe to open now
    CANT_CREATE = 73  # EX_CANTCREAT: a file or folder cannot be created (a read-only file system)
    IO_ERROR = 74  # EX_IOERR: reading or writing failed (disk full, an I/O error, a full stdout)
    LOCKED = 75  # EX_TEMPFAIL: another noemafed sync holds this cortex
    NO_PERMISSION = 77  # EX_NOPERM: the user may not read or write what the command needs
    CONFIG = 78  # EX_CONFIG: cortex.md or the access key is invalid


class NoemafedError(Exception):
    """Base of every error the CLI reports; carries a stable code, an exit code and a hint."""

    code = "error"
    exit_code = ExitCode.ERROR

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class CommandError(NoemafedError):
    """A command refused its input (unknown peer, aborted prompt, duplicate name)."""

    code = "command_failed"


class ArgumentError(NoemafedError):
    """A command-line value is wrong in itself (a bad endpoint, peer name, CA file, key, mode or interval): fix
    the command, not the cortex. Checked before anything is written."""

    code = "bad_argument"
    exit_code = ExitCode.USAGE


class ConfirmationRequiredError(ArgumentError):
    """A command that asks before it changes anything, run without a terminal to ask on and without --yes."""

    code = "confirmation_required"


class ManifestError(NoemafedError):
    """cortex.md is unreadable, not the YAML subset we accept, or fails validation."""

    code = "manifest_invalid"
    exit_code = ExitCode.CONFIG


class FrontmatterError(NoemafedError):
    """Text outside the YAML subset noema writes; `line` is 1-based within the YAML text."""

    code = "frontmatter_invalid"
    exit_code = ExitCode.CONFIG

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(f"line {line}: {message}" if line is not None else message)
        self.line = line


class AccessKeyError(NoemafedError):
    """The shared bearer key could not be loaded (env or sidecar file rules)."""

    code = "access_key_invalid"
    exit_code = ExitCode.CONFIG


class SigningKeyError(NoemafedError):
    """This cortex's event signing key could not be loaded (sidecar file rules, seed, public_key mismatch)."""

    code = "signing_key_invalid"
    exit_code = ExitCode.CONFIG


class CortexNotFoundError(NoemafedError):
    """No cortex at the path or name given, nor in the environment, registry or cwd."""

    code = "cortex_not_found"
    exit_code = ExitCode.CORTEX_NOT_FOUND


class CortexUnavailableError(NoemafedError):
    """The cortex exists but must not be opened now (old schema, pending Rust mutation, storage move)."""

    code = "cortex_unavailable"
    exit_code = ExitCode.CORTEX_UNAVAILABLE


class StateError(NoemafedError):
    """A federation_state read or write failed at the database level."""

    code = "state_error"


class VClockTooLargeError(NoemafedError):
    """A merged vector clock would exceed the 256-entry cap (federation.md §5)."""

    code = "vclock_too_large"


class ReplayError(NoemafedError):
    """Replaying one event failed; classify_replay_error looks through its cause chain."""

    code = "replay_failed"


class InvalidTraceIDError(ReplayError):
    """Go's sentinel `invalid trace ID`: the trace id fails the pattern or could escape its folder."""

    code = "invalid_trace_id"

    def __init__(self, message: str = "invalid trace ID") -> None:
        super().__init__(message)


class InvalidTraceFrontmatterError(ReplayError):
    """Go's sentinel `invalid trace frontmatter`: a trace file or snapshot that fails validation."""

    code = "invalid_frontmatter"

    def __init__(self, message: str = "invalid trace frontmatter") -> None:
        super().__init__(message)


INTERNAL_ERROR_HINT = (
    "this is a bug in noemafed: run the command again with --traceback and report what it prints"
)


class InternalError(NoemafedError):
    """A bug: an exception no command expected, shown as one error; `--traceback` shows where it came from."""

    code = "internal_error"

    def __init__(self, exc: Exception) -> None:
        super().__init__(f"internal error: {type(exc).__name__}: {exc}", INTERNAL_ERROR_HINT)


class HostError(NoemafedError):
    """The host refused a file or database operation no command handles itself: named, never a traceback."""

    code = "host_error"

    def __init__(self, message: str, exit_code: ExitCode, hint: str) -> None:
        super().__init__(message, hint)
        self.exit_code = exit_code
