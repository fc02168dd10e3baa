"""Classifiers, outcomes and hints: Go test twins (federation.md §7), §4 tables and real-socket errors."""

from __future__ import annotations

import errno
import http.client
import socket
import ssl
import threading
from collections.abc import Callable, Iterator

import pytest

from noemafed.errors import (
    ExitCode,
    InvalidTraceFrontmatterError,
    InvalidTraceIDError,
    NoemafedError,
    ReplayError,
)
from noemafed.federation import classify
from noemafed.federation.classify import IdentityFailure, Phase, Reason, TlsFailure
from noemafed.mcp.client import HttpStatusError, McpSession, PeerTarget, WireError

# ----- Go test twins: TestClassifyReplayError -----------------------------------------------------------


def test_TestClassifyReplayError_invalid_trace_id_sentinel() -> None:
    assert classify.classify_replay_error(InvalidTraceIDError()) == "invalid_trace_id"


def _raise_explicitly_wrapped_sentinel() -> None:
    try:
        raise InvalidTraceIDError()
    except InvalidTraceIDError as inner:
        raise ReplayError("rejecting: something unrelated") from inner


def _raise_implicitly_chained_sentinel() -> None:
    try:
        raise InvalidTraceIDError()
    except InvalidTraceIDError:
        raise RuntimeError("disk full")  # noqa: B904 - implicit chaining is the point


def test_TestClassifyReplayError_wrapped_invalid_trace_id() -> None:
    # Go: fmt.Errorf("rejecting: %w", trace.ErrInvalidTraceID); the wrapper text is unrelated.
    with pytest.raises(ReplayError) as explicit:
        _raise_explicitly_wrapped_sentinel()
    assert classify.classify_replay_error(explicit.value) == "invalid_trace_id"

    plain = Exception("rejecting: something unrelated")
    plain.__cause__ = InvalidTraceIDError()
    assert classify.classify_replay_error(plain) == "invalid_trace_id"

    # Implicit chaining (raised while handling the sentinel) counts too.
    with pytest.raises(RuntimeError) as implicit:
        _raise_implicitly_chained_sentinel()
    assert classify.classify_replay_error(implicit.value) == "invalid_trace_id"


def test_TestClassifyReplayError_invalid_frontmatter_sentinel() -> None:
    assert classify.classify_replay_error(InvalidTraceFrontmatterError()) == "invalid_frontmatter"


def test_TestClassifyReplayError_unknown_action_text() -> None:
    assert classify.classify_replay_error(ReplayError("unknown action foo")) == "unknown_action"


def test_TestClassifyReplayError_unrecognized_type_text() -> None:
    assert classify.classify_replay_error(ReplayError("unrecognized type bar")) == "unknown_type"


def test_TestClassifyReplayError_something_else() -> None:
    assert classify.classify_replay_error(ReplayError("disk full")) == "other"


# ----- Go test twins: TestClassifyNetworkError, TestIsSchemaWidening --------------------------------------

GO_NETWORK_CASES = [
    ("dial tcp 1.2.3.4:3000: connection refused", "network_refused"),
    ('Get "...": context deadline exceeded', "network_timeout"),
    ("dial tcp: lookup foo: no such host", "network_dns"),
    ("x509: certificate signed by unknown authority", "network_tls"),
    ("read tcp: connection reset by peer", "network_reset"),
    ("unexpected EOF", "network_eof"),
    ("401 Unauthorized", "auth"),
    ("something random", "other"),
]


@pytest.mark.parametrize(("text", "expected"), GO_NETWORK_CASES)
def test_TestClassifyNetworkError(text: str, expected: str) -> None:
    assert classify.classify_network_error(text) == expected
    assert classify.classify_network_error(NoemafedError(text)) == expected
    assert classify.classify_network_error(Exception(text)) == expected


def test_TestIsSchemaWidening() -> None:
    for reason in ("invalid_trace_id", "unknown_action", "unknown_type"):
        assert classify.is_schema_widening(reason), reason
    for reason in (
        "auth",
        "network_tls",
        "network_refused",
        "identity_mismatch",
        "invalid_frontmatter",
        "other",
    ):
        assert not classify.is_schema_widening(reason), reason


# ----- reason enum --------------------------------------------------------------------------------------


def test_reason_values_are_the_spec_strings() -> None:
    assert [reason.value for reason in Reason] == [
        "invalid_trace_id",
        "invalid_frontmatter",
        "unknown_action",
        "unknown_type",
        "network_refused",
        "network_timeout",
        "network_dns",
        "network_tls",
        "network_reset",
        "network_eof",
        "auth",
        "identity_mismatch",
        "identity_missing",
        "other",
        "invalid_event_id",
        "local_storage",
    ]
    assert str(Reason.NETWORK_EOF) == "network_eof"
    assert Reason("network_eof") is Reason.NETWORK_EOF
    assert f"{Reason.AUTH}" == "auth"


def test_schema_widening_over_every_reason() -> None:
    widening = {reason for reason in Reason if classify.is_schema_widening(reason)}
    assert widening == {Reason.INVALID_TRACE_ID, Reason.UNKNOWN_ACTION, Reason.UNKNOWN_TYPE}
    assert not classify.is_schema_widening("")


# ----- outcome: (phase, cause) -> health reason, needs an operator, exit code -----------------------------

NETWORK = (
    (Reason.NETWORK_REFUSED, "network_refused"),
    (Reason.NETWORK_TIMEOUT, "network_timeout"),
    (Reason.NETWORK_DNS, "network_dns"),
    (Reason.NETWORK_TLS, "network_tls"),
    (Reason.NETWORK_RESET, "network_reset"),
    (Reason.NETWORK_EOF, "network_eof"),
)

# Every pair the syncer and the scheduler can produce (a call to a peer is classified by
# classify_network_error, which gives a network reason, auth or other).
OUTCOMES = [
    (Phase.OPEN, Reason.OTHER, "other", False, 3),
    (Phase.OPEN, Reason.LOCAL_STORAGE, "local_storage", False, 3),  # a compaction holds the storage lock
    # A CA file that is missing, unreadable or empty, an endpoint that is not http(s): fix cortex.md.
    (Phase.CONNECT, Reason.OTHER, "other", True, 4),
    *[(Phase.INITIALIZE, cause, reason, False, 3) for cause, reason in NETWORK],
    (Phase.INITIALIZE, Reason.AUTH, "auth", True, 4),
    # A certificate the configured trust rejects: noema's reason, an operator's to fix (issue 13).
    (Phase.INITIALIZE, TlsFailure.UNTRUSTED, "network_tls", True, 4),
    (Phase.IDENTITY, TlsFailure.UNTRUSTED, "network_tls", True, 4),
    (Phase.EVENTS, TlsFailure.UNTRUSTED, "network_tls", True, 4),
    (Phase.INITIALIZE, Reason.OTHER, "other", False, 3),
    *[(Phase.IDENTITY, cause, reason, False, 3) for cause, reason in NETWORK],
    (Phase.IDENTITY, Reason.AUTH, "auth", True, 4),
    (Phase.IDENTITY, Reason.OTHER, "other", False, 3),
    (Phase.IDENTITY, IdentityFailure.REFUSED, "other", False, 3),
    (Phase.IDENTITY, IdentityFailure.EMPTY, "identity_missing", True, 4),
    (Phase.IDENTITY, IdentityFailure.PARSE, "other", False, 3),
    (Phase.IDENTITY, IdentityFailure.VERSION, "invalid_frontmatter", True, 4),
    (Phase.IDENTITY, IdentityFailure.NO_ID, "identity_missing", True, 4),
    (Phase.IDENTITY, IdentityFailure.OWN_ID, "identity_mismatch", True, 4),
    (Phase.IDENTITY, IdentityFailure.MISMATCH, "identity_mismatch", True, 4),
    # Go says `other` for a signing-key mismatch; an operator must act, so noemafed says identity_mismatch.
    (Phase.IDENTITY, IdentityFailure.SIGNING, "identity_mismatch", True, 4),
    (Phase.IDENTITY, IdentityFailure.DB, "other", False, 3),
    *[(Phase.EVENTS, cause, reason, False, 3) for cause, reason in NETWORK],
    (Phase.EVENTS, Reason.AUTH, "auth", True, 4),
    (Phase.EVENTS, Reason.OTHER, "other", False, 3),
    # An id we must not store and serve on: the peer's operator (or a clock) must be fixed.
    (Phase.EVENTS, Reason.INVALID_EVENT_ID, "invalid_event_id", True, 4),
    # Between two batches the database can be locked by a local writer or the disk can fill: may heal.
    (Phase.EVENTS, Reason.LOCAL_STORAGE, "local_storage", False, 3),
    (Phase.REPLAY, Reason.INVALID_TRACE_ID, "invalid_trace_id", True, 4),
    (Phase.REPLAY, Reason.UNKNOWN_ACTION, "unknown_action", True, 4),
    (Phase.REPLAY, Reason.UNKNOWN_TYPE, "unknown_type", True, 4),
    # One trace file that fails validation is not a peer behind the ring: it may heal, exit 3.
    (Phase.REPLAY, Reason.INVALID_FRONTMATTER, "invalid_frontmatter", False, 3),
    (Phase.REPLAY, Reason.IDENTITY_MISMATCH, "identity_mismatch", True, 4),  # our own key cannot sign
    (Phase.REPLAY, Reason.OTHER, "other", False, 3),
    (Phase.REPLAY, Reason.LOCAL_STORAGE, "local_storage", False, 3),
    (Phase.USAGE, Reason.LOCAL_STORAGE, "local_storage", False, 3),
    (Phase.INTERNAL, Reason.OTHER, "other", False, 3),
]


@pytest.mark.parametrize(("phase", "cause", "reason", "needs_operator", "exit_code"), OUTCOMES)
def test_outcome(
    phase: Phase,
    cause: Reason | IdentityFailure | TlsFailure,
    reason: str,
    needs_operator: bool,
    exit_code: int,
) -> None:
    result = classify.outcome(phase, cause)
    assert result == (reason, needs_operator, exit_code)
    assert type(result.reason) is Reason
    assert type(result.exit_code) is ExitCode


def test_outcome_table_covers_every_phase_and_identity_failure() -> None:
    assert {row[0] for row in OUTCOMES} == set(Phase)
    assert {row[1] for row in OUTCOMES if isinstance(row[1], IdentityFailure)} == set(IdentityFailure)
    assert len({row[:2] for row in OUTCOMES}) == len(OUTCOMES)


def test_phase_and_identity_failure_values() -> None:
    # `phase` is a field of `sync --once --json` (docs/sync.schema.json).
    assert [phase.value for phase in Phase] == [
        "open",
        "connect",
        "initialize",
        "identity",
        "events",
        "replay",
        "usage",
        "internal",
    ]
    assert [kind.value for kind in IdentityFailure] == [
        "refused",
        "empty",
        "parse",
        "version",
        "no_id",
        "own_id",
        "mismatch",
        "signing",
        "db",
    ]


# ----- network classifier: text rules and Go's quirks ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("read tcp 127.0.0.1:1->127.0.0.1:2: i/o timeout", "network_timeout"),
        ("rpc error: deadline exceeded", "network_timeout"),
        ("dial tcp: lookup peer on 127.0.0.53:53: server misbehaving", "network_dns"),
        ("dial tcp 10.0.0.9:8080: connect: no route to host", "network_dns"),
        ("remote error: tls: bad certificate", "network_tls"),
        ("tls: first record does not look like a TLS handshake", "network_tls"),
        ("the certificate is not trusted", "network_tls"),
        ('Post "http://peer/mcp": EOF', "network_eof"),
        # Go's quirks (§8.1 item 3): 401 anywhere, EOF before auth, case-sensitive matching.
        ("401 Unauthorized after EOF", "network_eof"),
        ("401 ... EOF", "network_eof"),
        ("replay event 01ARZ3NDEKTSV4RRFFQ69G5401: disk full", "auth"),
        ("Unauthorized", "auth"),
        ("unauthorized", "other"),
        ("unexpected eof", "other"),
        ("Connection refused", "other"),
        ("context canceled", "other"),
        ("connect: network is unreachable", "other"),
        ("write: broken pipe", "other"),
        ("", "other"),
        # A URL in the text never decides: its port may hold 401, its host EOF.
        ('Post "http://127.0.0.1:34010/mcp": malformed HTTP status code', "other"),
        ("POST https://eof.example:3000/mcp: HTTP/1.1 2OO OK", "other"),
        ('Post "http://127.0.0.1:34010/mcp": EOF', "network_eof"),
        # First rule wins when several match.
        ("connection refused; i/o timeout; EOF; 401", "network_refused"),
        ("i/o timeout then no such host", "network_timeout"),
        ("no such host, x509: bad", "network_dns"),
        ("tls: handshake, connection reset", "network_tls"),
        ("connection reset by peer (EOF)", "network_reset"),
    ],
)
def test_network_text_rules(text: str, expected: str) -> None:
    assert classify.classify_network_error(text) == expected


# ----- network classifier: typed path with constructed stdlib exceptions --------------------------------


def _http_error(code: int, msg: str) -> HttpStatusError:
    return HttpStatusError(code, msg, "")


def _wire(cause: BaseException) -> WireError:
    """A failure as the wire raises it: its own text, the stdlib's exception as the cause."""
    error = WireError(f"POST http://peer/mcp: {cause}")
    error.__cause__ = cause
    return error


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda: _http_error(401, "Unauthorized"), "auth"),
        (lambda: _http_error(401, ""), "auth"),
        (lambda: _http_error(500, "Internal Server Error"), "other"),
        (lambda: _http_error(403, "Forbidden"), "other"),
        (lambda: ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), "network_refused"),
        (lambda: OSError(errno.ECONNREFUSED, "Connection refused"), "network_refused"),
        (lambda: TimeoutError("timed out"), "network_timeout"),
        (lambda: socket.timeout("timed out"), "network_timeout"),  # noqa: UP041 - the alias is the point
        (lambda: socket.gaierror(socket.EAI_NONAME, "Name or service not known"), "network_dns"),
        (lambda: socket.herror(1, "Unknown host"), "network_dns"),
        (lambda: OSError(errno.EHOSTUNREACH, "No route to host"), "network_dns"),
        (lambda: OSError(errno.ENETUNREACH, "Network is unreachable"), "network_dns"),
        (lambda: ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"), "network_tls"),
        (lambda: ssl.SSLCertVerificationError(1, "certificate verify failed"), "network_tls"),
        (lambda: ssl.CertificateError("hostname 'x' doesn't match 'y'"), "network_tls"),
        # A closed TLS stream is Go's io.EOF, not a tls: error (even though SSLEOFError is an SSLError).
        (lambda: ssl.SSLEOFError(8, "EOF occurred in violation of protocol"), "network_eof"),
        (lambda: ssl.SSLZeroReturnError(6, "TLS/SSL connection has been closed"), "network_eof"),
        (lambda: ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"), "network_reset"),
        (lambda: BrokenPipeError(errno.EPIPE, "Broken pipe"), "network_reset"),
        (
            lambda: ConnectionAbortedError(errno.ECONNABORTED, "Software caused connection abort"),
            "network_reset",
        ),
        # RemoteDisconnected subclasses ConnectionResetError but is checked first: Go says EOF.
        (
            lambda: http.client.RemoteDisconnected("Remote end closed connection without response"),
            "network_eof",
        ),
        (lambda: http.client.IncompleteRead(b"partial", 10), "network_eof"),
        (lambda: _wire(ConnectionRefusedError(111, "Connection refused")), "network_refused"),
        (lambda: _wire(socket.gaierror(-2, "Name or service not known")), "network_dns"),
        (lambda: _wire(TimeoutError("timed out")), "network_timeout"),
        # An exception whose type says nothing falls through to the text rules on the wire error's text.
        (lambda: _wire(ValueError("unknown url type: ftp")), "other"),
        (lambda: _wire(ValueError("x509: certificate has expired")), "network_tls"),
        (lambda: ValueError("plain"), "other"),
    ],
)
def test_typed_path(make: Callable[[], BaseException], expected: str) -> None:
    assert classify.classify_network_error(make()) == expected


def test_typed_path_beats_text() -> None:
    # Python's texts are capitalised ("Connection refused"), so only the type identifies them.
    assert (
        classify.classify_network_error(ConnectionRefusedError(111, "Connection refused"))
        == "network_refused"
    )
    # The type wins even when the text would match a different Go rule.
    assert classify.classify_network_error(ConnectionResetError("unexpected EOF")) == "network_reset"
    assert classify.classify_network_error(_http_error(401, "EOF")) == "auth"


def test_typed_path_follows_cause_and_context() -> None:
    cause = _wire(ConnectionRefusedError(111, "Connection refused"))
    wrapper = NoemafedError("calling sync_events: failed")
    wrapper.__cause__ = cause
    assert classify.classify_network_error(wrapper) == "network_refused"
    assert classify.categorize_error(wrapper) == "refused"

    with pytest.raises(NoemafedError) as implicit:
        _raise_during(socket.gaierror(-2, "Name or service not known"), suppress=False)
    assert classify.classify_network_error(implicit.value) == "network_dns"


def _raise_during(inner: BaseException, *, suppress: bool) -> None:
    try:
        raise inner
    except BaseException:
        if suppress:
            raise NoemafedError("gave up") from None
        raise NoemafedError("opening session")  # noqa: B904 - implicit chaining is the point


def test_suppressed_context_is_not_followed() -> None:
    with pytest.raises(NoemafedError) as suppressed:
        _raise_during(ConnectionRefusedError(111, "Connection refused"), suppress=True)
    assert classify.classify_network_error(suppressed.value) == "other"


def test_outermost_typed_exception_wins() -> None:
    outer = TimeoutError("timed out")
    outer.__cause__ = ConnectionRefusedError(111, "Connection refused")
    assert classify.classify_network_error(outer) == "network_timeout"


def test_exception_group_members_are_searched() -> None:
    group = ExceptionGroup("both failed", [ValueError("x"), ConnectionResetError(104, "reset")])
    assert classify.classify_network_error(group) == "network_reset"


def test_cycles_terminate() -> None:
    a = NoemafedError("a")
    b = NoemafedError("b")
    a.__cause__ = b
    b.__cause__ = a
    assert classify.classify_network_error(a) == "other"
    assert classify.classify_replay_error(a) == "other"
    self_loop = NoemafedError("loop")
    self_loop.__context__ = self_loop
    assert classify.classify_network_error(self_loop) == "other"


def test_an_exception_met_twice_is_skipped_and_the_walk_goes_on() -> None:
    """Mutation survivor (`continue` -> `break` in chain): a cause shared by two members of a group is seen
    twice; the walk must go on to the members after them, where the typed reason is."""
    shared = NoemafedError("shared cause")
    first, second = NoemafedError("first"), NoemafedError("second")
    first.__cause__ = second.__cause__ = shared
    group = ExceptionGroup("all failed", [first, second, ConnectionRefusedError(111, "Connection refused")])
    assert classify.classify_network_error(group) == "network_refused"
    group = ExceptionGroup("all failed", [first, second, InvalidTraceIDError("bad id")])
    assert classify.classify_replay_error(group) == "invalid_trace_id"


# ----- network classifier: real sockets -----------------------------------------------------------------


@pytest.fixture
def closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    sock.close()
    return port


def _one_shot_server(handler: Callable[[socket.socket], None]) -> Iterator[int]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(5)
    connections: list[socket.socket] = []

    def run() -> None:
        try:
            conn, _ = server.accept()
        except OSError:
            return
        connections.append(conn)
        handler(conn)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        server.close()
        thread.join(5)
        for conn in connections:
            conn.close()


def _close_after_request(conn: socket.socket) -> None:
    conn.recv(65536)
    conn.close()


def _never_answer(conn: socket.socket) -> None:
    conn.settimeout(5)
    try:
        conn.recv(65536)
        conn.recv(65536)
    except OSError:
        pass


def _plain_http_400(conn: socket.socket) -> None:
    conn.recv(65536)
    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
    conn.close()


@pytest.fixture
def closing_server() -> Iterator[int]:
    yield from _one_shot_server(_close_after_request)


@pytest.fixture
def silent_server() -> Iterator[int]:
    yield from _one_shot_server(_never_answer)


@pytest.fixture
def plain_http_server() -> Iterator[int]:
    yield from _one_shot_server(_plain_http_400)


def _wire_error(endpoint: str, timeout: float = 2.0) -> WireError:
    """What the wire raises for a session it cannot open: a WireError, the stdlib's exception in its chain."""
    try:
        McpSession(PeerTarget("p", endpoint, timeout=timeout)).initialize()
    except WireError as exc:
        return exc
    pytest.fail(f"initialize at {endpoint} unexpectedly succeeded")


def test_real_connection_refused(closed_port: int) -> None:
    err = _wire_error(f"http://127.0.0.1:{closed_port}")
    assert isinstance(err.__cause__, ConnectionRefusedError)
    assert classify.classify_network_error(err) == "network_refused"
    assert classify.categorize_error(err) == "refused"


def test_real_remote_disconnected(closing_server: int) -> None:
    err = _wire_error(f"http://127.0.0.1:{closing_server}")
    assert isinstance(err.__cause__, http.client.RemoteDisconnected)
    assert classify.classify_network_error(err) == "network_eof"
    assert classify.categorize_error(err) == "eof"


def test_real_read_timeout(silent_server: int) -> None:
    err = _wire_error(f"http://127.0.0.1:{silent_server}", timeout=0.2)
    assert classify.classify_network_error(err) == "network_timeout"
    assert classify.categorize_error(err) == "timeout"


def test_real_tls_against_plain_http(plain_http_server: int) -> None:
    err = _wire_error(f"https://127.0.0.1:{plain_http_server}")
    assert isinstance(err.__cause__, ssl.SSLError)
    assert classify.classify_network_error(err) == "network_tls"
    assert classify.categorize_error(err) == "tls"


def test_real_tls_peer_closes(closing_server: int) -> None:
    err = _wire_error(f"https://127.0.0.1:{closing_server}")
    assert classify.classify_network_error(err) == "network_eof"


def test_real_dns_failure() -> None:
    # Resolution runs in a thread so a sandbox with a slow or absent resolver skips instead of hanging.
    result: list[BaseException | None] = []

    def resolve() -> None:
        try:
            socket.getaddrinfo("nonexistent.invalid", 80)
        except OSError as exc:
            result.append(exc)
        else:
            result.append(None)

    thread = threading.Thread(target=resolve, daemon=True)
    thread.start()
    thread.join(3)
    if not result or not isinstance(result[0], socket.gaierror):
        pytest.skip("the resolver here does not fail fast with gaierror for .invalid")
    err = _wire_error("http://nonexistent.invalid")
    assert classify.classify_network_error(err) == "network_dns"
    assert classify.categorize_error(err) == "dns"


def test_constructed_dns_failure() -> None:
    err = _wire(socket.gaierror(socket.EAI_NONAME, "Name or service not known"))
    assert classify.classify_network_error(err) == "network_dns"


# ----- categorize_error (§4.3) ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("err", "expected"),
    [
        ("dial tcp 1.2.3.4:3000: connection refused", "refused"),
        ('Get "...": context deadline exceeded', "timeout"),
        ("dial tcp: lookup foo: no such host", "dns"),
        ("x509: certificate signed by unknown authority", "tls"),
        ("read tcp: connection reset by peer", "reset"),
        ("unexpected EOF", "eof"),
        # Auth and anything else fold into other.
        ("401 Unauthorized", "other"),
        ("something random", "other"),
        ("replay event 01X: invalid trace ID", "other"),
        ('peer "beta" identity mismatch: pinned id is A but the endpoint now reports B', "other"),
        ("", "other"),
    ],
)
def test_categorize_error(err: str, expected: str) -> None:
    assert classify.categorize_error(err) == expected
    assert classify.categorize_error(Exception(err)) == expected


def test_categorize_error_typed() -> None:
    assert classify.categorize_error(_http_error(401, "Unauthorized")) == "other"
    assert classify.categorize_error(ssl.SSLCertVerificationError(1, "verify failed")) == "tls"
    assert classify.categorize_error(BrokenPipeError(32, "Broken pipe")) == "reset"


# ----- classify_replay_error beyond the Go tests --------------------------------------------------------


def test_replay_unknown_trace_type_text() -> None:
    assert classify.classify_replay_error(ReplayError("unknown trace type widget")) == "unknown_type"


def test_replay_substrings_are_case_sensitive() -> None:
    assert classify.classify_replay_error(ReplayError("Unknown action foo")) == "other"


def test_replay_sentinels_beat_substrings() -> None:
    err = ReplayError("unknown action foo")
    err.__cause__ = InvalidTraceFrontmatterError()
    assert classify.classify_replay_error(err) == "invalid_frontmatter"


def test_replay_outermost_sentinel_wins() -> None:
    outer = InvalidTraceFrontmatterError()
    outer.__cause__ = InvalidTraceIDError()
    assert classify.classify_replay_error(outer) == "invalid_frontmatter"
    wrapper = ReplayError("rejecting")
    middle = InvalidTraceIDError("bad id 'x/../y'")
    middle.__cause__ = InvalidTraceFrontmatterError()
    wrapper.__cause__ = middle
    assert classify.classify_replay_error(wrapper) == "invalid_trace_id"


def test_replay_sentinel_text_alone_is_not_a_sentinel() -> None:
    # Go uses errors.Is, not the text; a plain error that merely says so is not the sentinel.
    assert classify.classify_replay_error(ReplayError("invalid trace ID")) == "other"


# ----- health hints (§4.5) ------------------------------------------------------------------------------

UPGRADE = "likely cause: peer binary predates schema changes elsewhere on the ring; upgrade the peer"


@pytest.mark.parametrize(
    ("reason", "hint"),
    [
        ("invalid_trace_id", UPGRADE),
        ("unknown_action", UPGRADE),
        ("unknown_type", UPGRADE),
        (
            "invalid_frontmatter",
            "likely cause: peer received an event whose trace shape it doesn't recognise",
        ),
        (
            "network_refused",
            "likely cause: nothing listening on the peer's endpoint; is `noema serve` running?",
        ),
        ("network_timeout", "likely cause: peer unreachable on the network"),
        ("network_dns", "likely cause: hostname resolution failed"),
        ("network_tls", "likely cause: TLS handshake failed \u2014 check cert validity and CA trust"),
        ("auth", "likely cause: shared-key mismatch between local and peer"),
        (
            "identity_mismatch",
            "likely cause: peer cortex id changed \u2014 `noema federation reset-peer` after verifying",
        ),
        ("identity_missing", "likely cause: peer predates cortex-id federation handshake; upgrade the peer"),
        ("network_reset", None),
        ("network_eof", None),
        ("other", None),
        ("", None),
        ("something_new", None),
        ("AUTH", None),
    ],
)
def test_health_hint(reason: str, hint: str | None) -> None:
    assert classify.health_hint(reason) == hint


def test_health_hint_dashes_are_em_dashes() -> None:
    tls = classify.health_hint("network_tls")
    assert tls is not None
    assert "\u2014".encode() in tls.encode()
    assert tls.encode("utf-8").count(b"\xe2\x80\x94") == 1


def test_health_hint_accepts_enum_members() -> None:
    assert classify.health_hint(Reason.AUTH) == "likely cause: shared-key mismatch between local and peer"


# ----- local storage: this host's fault, not the peer's ---------------------------------------------------


def test_local_storage_failures_are_told_from_a_peer_event_s_fault() -> None:
    import sqlite3

    locked = ReplayError("replay event X: database is locked")
    locked.__cause__ = sqlite3.OperationalError("database is locked")
    assert classify.classify_replay_error(locked) == "local_storage"
    full = ReplayError("writing trace")
    full.__cause__ = OSError(errno.ENOSPC, "No space left on device")
    assert classify.classify_replay_error(full) == "local_storage"
    # A constraint the event broke is the event's fault, whatever wraps it.
    broken = ReplayError("replay event X: UNIQUE constraint failed")
    broken.__cause__ = sqlite3.IntegrityError("UNIQUE constraint failed: tags.trace_id")
    assert classify.classify_replay_error(broken) == "other"
    assert classify.classify_replay_error(ReplayError("disk full")) == "other"  # text alone says nothing
    assert not classify.is_local_storage_failure(OSError(errno.ECONNRESET, "reset"))
