"""Names that vulture cannot see being used: code that a framework calls by name, never our own code.

vulture reads this file together with noemafed/ (pyproject.toml, [tool.vulture]) and counts every name below
as used. tests/test_docs.py imports it, so an entry for something that no longer exists fails there. Code that
only tests reach does not belong here: it is dead in the pyz. Parameters that a callback's signature forces on us
(signal handlers, urllib's and http.server's hooks) are in `ignore_names` in pyproject.toml instead.
"""

from __future__ import annotations

import socketserver
from http.server import BaseHTTPRequestHandler

from noemafed import cli

# click calls every command function through its group, and looks up a group's class attributes.
_CLICK_COMMANDS = (
    cli.CortexGroup.group_class,
    cli.cli,
    cli.init,
    cli.status,
    cli.peers,
    cli.add_peer,
    cli.set_peer,
    cli.reset_peer,
    cli.remove_peer,
    cli.set_mode,
    cli.set_interval,
    cli.set_verify,
    cli.pause_peer,
    cli.resume_peer,
    cli.key,
    cli.key_fingerprint,
    cli.completion,
    cli.sync,
    cli.serve,
    cli.keygen,
    cli.doctor,
    cli.retry_now,
    cli.skip_event,
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
