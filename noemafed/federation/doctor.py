"""`doctor`'s checks: facts gathered elsewhere (federation/probe.py) in, findings out, with no I/O, so every
rule is tested on plain values. Each finding has a severity, a stable code, what it is about, what is wrong and
the command or edit that fixes it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from enum import StrEnum

from noemafed.records import Record
from noemafed.text.gotext import format_rfc3339, go_quote
from noemafed.text.versions import semver_baseline

CLOCK_SKEW_WARNING = 60.0  # seconds: ULID cursors and lag are read against this host's clock
CERT_WARNING = timedelta(days=14)
DISK_FREE_WARNING = 0.10  # of the file system holding the cortex
QUICK_CHECK_OK = "ok"


class Severity(StrEnum):
    """How much a finding matters: errors stop federation, warnings will, info is worth knowing."""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


class Finding(Record):
    """One thing doctor found: `fix` is the command to run or the edit to make."""

    severity: Severity
    code: str  # stable, for scripts: the `code` field of `doctor --json`
    subject: str  # what it is about: "cortex.md", "peer laptop", "db/noema.db", ...
    message: str
    fix: str


# ---- the facts ------------------------------------------------------------------------------------------


class CertFacts(Record):
    """A TLS certificate's validity window, or why it could not be read."""

    path: str
    not_after: datetime | None
    error: str = ""


class FileFacts(Record):
    """A file or folder doctor checks the mode of; `mode` None when it is missing."""

    label: str  # "signing key file", "access key file", "cortex folder", ...
    path: str
    mode: int | None
    secret: bool  # 0600 or stricter, or noema refuses to read it


class LockFacts(Record):
    """The sync lock: who the file names, whether anyone holds it, whether that process lives here."""

    path: str
    written_pid: int  # 0: empty file (released cleanly) or no file
    held: bool
    holder_alive: bool


class PeerFacts(Record):
    """One configured peer: what federation_state remembers and, online, what it answered."""

    name: str
    paused: bool
    pinned_id: str
    stored_version: str  # health.version from the last sync
    advertised_key: str  # the manifest's hard pin, or the TOFU pin of its pinned id
    contacted: bool = False
    reach_error: str = ""  # online: the failure, "" when it answered
    reported_id: str = ""
    reported_version: str = ""  # serverInfo.version
    reported_key: str = ""
    clock_skew: float | None = None  # seconds the peer's Date header is ahead of this host (negative: behind)
    cert_not_after: datetime | None = None  # its TLS certificate, when it is https and answered
    cert_expired: bool = False  # the handshake failed because its certificate expired

    @property
    def cortex_id(self) -> str:
        return self.reported_id or self.pinned_id

    @property
    def version(self) -> str:
        return self.reported_version or self.stored_version

    @property
    def signing_key(self) -> str:
        return self.reported_key or self.advertised_key


class DoctorFacts(Record):
    """Everything the checks look at, gathered once."""

    now: datetime
    cortex_id: str
    manifest_errors: tuple[str, ...]  # noema's validation and federation readiness, in order
    verify: str
    peers: tuple[PeerFacts, ...]
    own_cert: CertFacts | None  # None: no access.tls_cert_path
    files: tuple[FileFacts, ...]
    lock: LockFacts | None
    quick_check: tuple[str, ...]  # PRAGMA quick_check rows; ("ok",) when sound
    database_error: str  # the database could not be opened for the check
    disk_free: float | None  # the fraction free for unprivileged users
    online: bool


# ---- the checks -----------------------------------------------------------------------------------------


def check_manifest(facts: DoctorFacts) -> Iterable[Finding]:
    for error in facts.manifest_errors:
        yield Finding(Severity.ERROR, "manifest_invalid", "cortex.md", error, "edit cortex.md: " + error)


def check_identities(facts: DoctorFacts) -> Iterable[Finding]:
    """A peer with our own id is a copy of this cortex; two peers with one id are copies of each other."""
    by_id: dict[str, list[str]] = {}
    for peer in facts.peers:
        if not peer.cortex_id:
            continue
        if facts.cortex_id and peer.cortex_id == facts.cortex_id:
            yield Finding(
                Severity.ERROR,
                "peer_reports_own_id",
                f"peer {peer.name}",
                f"peer {go_quote(peer.name)} reports this cortex's own id {peer.cortex_id}: it is a copy of this "
                "cortex (or the endpoint points back here)",
                f"give the copy a new identity there (`noema migrate cortex-id --reset`), then "
                f"`noemafed reset-peer {peer.name}`; or fix the endpoint with `noemafed set-peer {peer.name} "
                "--endpoint URL`",
            )
        by_id.setdefault(peer.cortex_id, []).append(peer.name)
    for cortex_id, names in by_id.items():
        if len(names) > 1 and cortex_id != facts.cortex_id:
            listed = ", ".join(go_quote(name) for name in names)
            yield Finding(
                Severity.ERROR,
                "peers_share_id",
                "peers " + ", ".join(names),
                f"peers {listed} report the same cortex id {cortex_id}: one is a copy of another (a cloned "
                "cortex), and their events and clocks mix",
                "give each copy its own identity (`noema migrate cortex-id --reset` on it), then "
                f"`noemafed reset-peer {' '.join(names)}`",
            )


def check_clocks(facts: DoctorFacts) -> Iterable[Finding]:
    for peer in facts.peers:
        if peer.clock_skew is not None and abs(peer.clock_skew) > CLOCK_SKEW_WARNING:
            direction = "ahead of" if peer.clock_skew > 0 else "behind"
            yield Finding(
                Severity.WARNING,
                "clock_skew",
                f"peer {peer.name}",
                f"peer {go_quote(peer.name)}'s clock is {abs(peer.clock_skew):.0f} s {direction} this host's "
                f"(more than {CLOCK_SKEW_WARNING:.0f} s): event ids, cursors and lag depend on both clocks",
                "synchronise both hosts with NTP (`timedatectl set-ntp true`, chrony or ntpd)",
            )


def _cert_finding(subject: str, code: str, not_after: datetime, now: datetime, fix: str) -> Finding | None:
    when = format_rfc3339(not_after)
    if not_after <= now:
        return Finding(Severity.ERROR, code, subject, f"{subject}'s TLS certificate expired at {when}", fix)
    left = not_after - now
    if left < CERT_WARNING:
        days = int(left.total_seconds()) // 86_400
        message = f"{subject}'s TLS certificate expires in {days} day(s), at {when}"
        return Finding(Severity.WARNING, code, subject, message, fix)
    return None


def check_certificates(facts: DoctorFacts) -> Iterable[Finding]:
    cert = facts.own_cert
    if cert is not None:
        fix = f"rotate the certificate at {cert.path} (and its key), then restart serve"
        if cert.not_after is None:
            yield Finding(Severity.ERROR, "tls_cert_unreadable", "this cortex", cert.error, fix)
        else:
            found = _cert_finding("this cortex", "tls_cert_expiry", cert.not_after, facts.now, fix)
            if found:
                yield found
    for peer in facts.peers:
        fix = f"ask the operator of {go_quote(peer.name)} to rotate its TLS certificate"
        if peer.cert_expired:
            message = f"peer {go_quote(peer.name)}'s TLS certificate has expired: {peer.reach_error}"
            yield Finding(Severity.ERROR, "peer_tls_cert_expiry", f"peer {peer.name}", message, fix)
        elif peer.cert_not_after is not None:
            found = _cert_finding(
                f"peer {peer.name}", "peer_tls_cert_expiry", peer.cert_not_after, facts.now, fix
            )
            if found:
                yield found


def check_reachability(facts: DoctorFacts) -> Iterable[Finding]:
    for peer in facts.peers:
        if peer.contacted and peer.reach_error and not peer.cert_expired:
            yield Finding(
                Severity.WARNING,
                "peer_unreachable",
                f"peer {peer.name}",
                f"peer {go_quote(peer.name)} did not answer: {peer.reach_error}",
                f"check the endpoint (`noemafed peers`), the network and the peer; "
                f"`noemafed sync --once --peer {peer.name} -v` shows the whole failure",
            )


def check_versions(facts: DoctorFacts) -> Iterable[Finding]:
    """Peers on different release series: the newer side may write what the older one cannot replay."""
    series: dict[str, list[str]] = {}
    for peer in facts.peers:
        baseline = semver_baseline(peer.version) if peer.version else None
        if baseline is not None:
            series.setdefault(baseline, []).append(peer.name)
    if len(series) > 1:
        listed = "; ".join(f"{base}: {', '.join(names)}" for base, names in sorted(series.items()))
        yield Finding(
            Severity.WARNING,
            "version_series_differ",
            "peers",
            f"peers run different noema release series ({listed})",
            "upgrade the older peers to the same release",
        )


def check_verify(facts: DoctorFacts) -> Iterable[Finding]:
    signing = [peer.name for peer in facts.peers if peer.signing_key]
    if facts.verify == "off" and signing:
        yield Finding(
            Severity.WARNING,
            "verify_off_with_signing_peers",
            "cortex.md",
            f"verify is off while peers advertise signing keys ({', '.join(signing)}): their signatures are "
            "never checked",
            "`noemafed set-verify warn` (log bad signatures) or `noemafed set-verify enforce` (refuse them)",
        )


def check_lock(facts: DoctorFacts) -> Iterable[Finding]:
    lock = facts.lock
    if lock is None or not lock.written_pid:
        return
    if lock.held and not lock.holder_alive:
        yield Finding(
            Severity.WARNING,
            "sync_lock_foreign",
            lock.path,
            f"the sync lock is held, but pid {lock.written_pid} it names is not running on this host (a sync on "
            "another host sharing this folder, or another pid namespace)",
            "run noemafed sync for this cortex on one host only",
        )
    elif not lock.held:
        yield Finding(
            Severity.INFO,
            "sync_lock_stale",
            lock.path,
            f"the sync lock names pid {lock.written_pid}, which ended without releasing it (killed); the lock "
            "itself was released with it, so the next sync runs",
            "nothing to do; look for why that sync was killed (OOM, a timeout in cron or systemd)",
        )


def check_files(facts: DoctorFacts) -> Iterable[Finding]:
    for item in facts.files:
        if item.mode is None:
            continue
        if item.secret and item.mode & 0o077:
            yield Finding(
                Severity.ERROR,
                "key_file_mode",
                item.path,
                f"{item.label} {item.path} has mode 0{item.mode:o}: noema refuses a key others can read",
                f"chmod 600 {item.path}",
            )
        elif not item.secret and item.mode & 0o002:
            yield Finding(
                Severity.WARNING,
                "cortex_mode",
                item.path,
                f"{item.label} {item.path} has mode 0{item.mode:o}: anyone on this host can change it",
                f"chmod o-w {item.path}",
            )


def check_database(facts: DoctorFacts) -> Iterable[Finding]:
    if facts.database_error:
        yield Finding(
            Severity.ERROR,
            "database_unavailable",
            "db/noema.db",
            facts.database_error,
            "see `noemafed status` for what the database needs",
        )
    elif facts.quick_check != (QUICK_CHECK_OK,):
        # SQLite may put many problems in one row, one per line, under a "*** in database main ***" banner.
        problems = [
            line for row in facts.quick_check for line in row.splitlines() if line and "***" not in line
        ]
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        yield Finding(
            Severity.ERROR,
            "database_corrupt",
            "db/noema.db",
            "PRAGMA quick_check: " + "; ".join(problems[:3]) + more,
            "stop noema and noemafed, back up db/, then rebuild it (`sqlite3 db/noema.db .recover`) or restore a "
            "backup",
        )


def check_disk(facts: DoctorFacts) -> Iterable[Finding]:
    if facts.disk_free is not None and facts.disk_free < DISK_FREE_WARNING:
        yield Finding(
            Severity.WARNING,
            "disk_space_low",
            "file system",
            f"only {facts.disk_free:.1%} of the file system holding the cortex is free",
            "free space or grow the file system: a full disk stops replay (local_storage, exit 3)",
        )


def check_offline(facts: DoctorFacts) -> Iterable[Finding]:
    if not facts.online and facts.peers:
        yield Finding(
            Severity.INFO,
            "offline",
            "peers",
            "peers were not contacted: clocks, certificates and reported ids of peers were not checked",
            "run `noemafed doctor --online`",
        )


CHECKS = (
    check_manifest,
    check_identities,
    check_clocks,
    check_certificates,
    check_reachability,
    check_versions,
    check_verify,
    check_lock,
    check_files,
    check_database,
    check_disk,
    check_offline,
)


def diagnose(facts: DoctorFacts) -> tuple[Finding, ...]:
    """Every finding, errors first, then warnings, then info; within a severity, in the order of CHECKS."""
    findings: Sequence[Finding] = [finding for check in CHECKS for finding in check(facts)]
    order = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}
    return tuple(sorted(findings, key=lambda finding: order[finding.severity]))
