"""Names that vulture cannot see being used: code that a framework calls by name, never our own code.

vulture reads this file together with noemafed/ (pyproject.toml, [tool.vulture]) and counts every name below
as used. tests/test_docs.py imports it, so an entry for something that no longer exists fails there. Code that
only tests reach does not belong here: it is dead in the pyz. Parameters that a callback's signature forces on us
(signal handlers, urllib's and http.server's hooks) are in `ignore_names` in pyproject.toml instead.
"""

from __future__ import annotations

import socketserver
from http.server import BaseHTTPRequestHandler

from noemafed.cli import app, completion, config, doctor, peers, serve, status, sync

# click calls every command function through its group (the root group finds each by name in app.COMMANDS), and
# the root group's methods.
_CLICK_COMMANDS = (
    app.LazyCortexGroup.list_commands,
    app.LazyCortexGroup.get_command,
    app.cli,
    config.init,
    status.status,
    peers.peers,
    peers.add_peer,
    peers.set_peer,
    peers.reset_peer,
    peers.remove_peer,
    config.set_mode,
    config.set_interval,
    config.set_verify,
    peers.pause_peer,
    peers.resume_peer,
    config.key,
    config.key_fingerprint,
    completion.completion,
    sync.sync,
    serve.serve,
    config.keygen,
    doctor.doctor,
    peers.retry_now,
    peers.skip_event,
)

# Class attributes and methods the standard library's servers and handlers look up on our subclasses
# (mcp: the HTTP handler and the server). `do_<METHOD>` is in ignore_names.
_STDLIB_HOOKS = (
    BaseHTTPRequestHandler.server_version,
    BaseHTTPRequestHandler.sys_version,
    BaseHTTPRequestHandler.log_message,
    socketserver.ThreadingMixIn.daemon_threads,
    socketserver.TCPServer.request_queue_size,
    socketserver.TCPServer.address_family,
    socketserver.BaseServer.process_request,
)
