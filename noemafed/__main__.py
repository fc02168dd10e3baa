"""Entry point for `python -m noemafed`."""

from noemafed.cli import run

run()
