"""The command line: the only package that imports click, and the one place errors become exit codes.

`app` holds the group, the process's entry points and what every command shares; each command lives in the
module of its family and is imported only when it runs (or `--help` lists it), so a start-up defines one
command's options, not all of them (docs/performance.md, status).
"""

from __future__ import annotations

from noemafed.cli.app import CliContext, Environment, cli, host_error, main, run

__all__ = ["CliContext", "Environment", "cli", "host_error", "main", "run"]
