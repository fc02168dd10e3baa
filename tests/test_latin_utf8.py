"""Offsets and errors of a Latin-1 reading turned back into the decoded text's (text/latin_utf8.py), case by case."""

from __future__ import annotations
